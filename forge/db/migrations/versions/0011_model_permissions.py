"""model permissions: a project's allow list or deny list of model names.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 02:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_permissions",
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("model_ids", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_model_permissions")),
    )
    op.create_index(op.f("ix_model_permissions_org_id"), "model_permissions", ["org_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_model_permissions_org_id"), table_name="model_permissions")
    op.drop_table("model_permissions")
