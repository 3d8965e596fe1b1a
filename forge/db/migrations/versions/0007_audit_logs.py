"""audit log: append-only, hash-chained entries in OpenAI's audit-log shape.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 23:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_logs",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=True),
        sa.Column("project_id", sa.String(length=40), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("effective_at", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_logs")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_logs_id")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_logs_prev_hash")),
    )
    op.create_index(op.f("ix_audit_logs_org_id"), "audit_logs", ["org_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_logs_org_id"), table_name="audit_logs")
    op.drop_table("audit_logs")
