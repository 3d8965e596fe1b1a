"""lora adapters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 11:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lora_adapters",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lora_adapters")),
    )


def downgrade() -> None:
    op.drop_table("lora_adapters")
