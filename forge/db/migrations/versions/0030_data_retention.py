"""Data retention: organisations' and projects' retention types (OpenAI's), and how long
an organisation keeps request and response bodies and usage records.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-05 05:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as table:
        table.add_column(
            sa.Column(
                "retention_type",
                sa.String(40),
                nullable=False,
                server_default="modified_abuse_monitoring",
            )
        )
        table.add_column(sa.Column("body_retention_days", sa.Integer(), nullable=True))
        table.add_column(sa.Column("usage_retention_days", sa.Integer(), nullable=True))
    with op.batch_alter_table("projects") as table:
        table.add_column(
            sa.Column(
                "retention_type",
                sa.String(40),
                nullable=False,
                server_default="organization_default",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("projects") as table:
        table.drop_column("retention_type")
    with op.batch_alter_table("organizations") as table:
        for column in ("usage_retention_days", "body_retention_days", "retention_type"):
            table.drop_column(column)
