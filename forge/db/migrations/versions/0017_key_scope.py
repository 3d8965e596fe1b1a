"""API keys may be restricted to some models and endpoints.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 13:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("allowed_models", sa.Text(), nullable=True))
        batch.add_column(sa.Column("allowed_endpoints", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("allowed_endpoints")
        batch.drop_column("allowed_models")
