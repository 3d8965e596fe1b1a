"""LoRA adapters belong to an organisation and, optionally, one project (null: the
platform's, every organisation's); clients call them by alias in their own scope.
Existing adapters stay the platform's, under their own names.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 13:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lora_adapters") as batch:
        batch.add_column(sa.Column("alias", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("org_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("project_id", sa.String(length=40), nullable=True))
    op.execute("UPDATE lora_adapters SET alias = name")
    with op.batch_alter_table("lora_adapters") as batch:
        batch.alter_column("alias", existing_type=sa.String(length=100), nullable=False)
        batch.create_index(op.f("ix_lora_adapters_alias"), ["alias"])


def downgrade() -> None:
    with op.batch_alter_table("lora_adapters") as batch:
        batch.drop_index(op.f("ix_lora_adapters_alias"))
        batch.drop_column("project_id")
        batch.drop_column("org_id")
        batch.drop_column("alias")
