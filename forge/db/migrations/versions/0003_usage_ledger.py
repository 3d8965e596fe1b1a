"""usage ledger: the client's request id beside the platform's, and rejected records

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 14:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "usage_records", sa.Column("client_request_id", sa.String(length=512), nullable=True)
    )
    op.create_table(
        "usage_rejects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rejects")),
    )


def downgrade() -> None:
    op.drop_table("usage_rejects")
    op.drop_column("usage_records", "client_request_id")
