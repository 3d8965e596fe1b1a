"""sub-organisations: an organisation a Platform-plan organisation resells to.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 13:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(length=40), nullable=True))
        batch.create_index(op.f("ix_organizations_parent_id"), ["parent_id"])


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_index(op.f("ix_organizations_parent_id"))
        batch.drop_column("parent_id")
