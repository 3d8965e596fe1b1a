"""rate limits: a limit on the requests in flight at once.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.add_column(sa.Column("max_concurrent_requests", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.drop_column("max_concurrent_requests")
