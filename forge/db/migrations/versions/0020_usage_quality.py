"""Usage records say whether the answer was what was asked for, and a judge's score.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("validation", sa.String(32), nullable=True))
        batch.add_column(sa.Column("quality_score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("quality_score")
        batch.drop_column("validation")
