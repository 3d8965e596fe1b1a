"""Audit retention per organisation: its period, purged entries kept as stubs, and the
checkpoint the chain starts from once leading stubs are compacted.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-05 07:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("audit_retention_days", sa.Integer(), nullable=True))
    with op.batch_alter_table("audit_logs") as batch:
        batch.add_column(sa.Column("purged_at", sa.Integer(), nullable=True))
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("compacted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoint")),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoint")
    with op.batch_alter_table("audit_logs") as batch:
        batch.drop_column("purged_at")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("audit_retention_days")
