"""provider credentials: a project's own provider keys, sealed (bring your own key).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("redacted_value", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_credentials")),
        sa.UniqueConstraint(
            "project_id", "provider", name="uq_provider_credentials_project_provider"
        ),
    )
    op.create_index(op.f("ix_provider_credentials_org_id"), "provider_credentials", ["org_id"])
    op.create_index(op.f("ix_provider_credentials_key_id"), "provider_credentials", ["key_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_provider_credentials_key_id"), table_name="provider_credentials")
    op.drop_index(op.f("ix_provider_credentials_org_id"), table_name="provider_credentials")
    op.drop_table("provider_credentials")
