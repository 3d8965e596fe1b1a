"""rate limits: requests and tokens per minute and requests per day, set on an
organisation, a project or a key, per model or for all models together.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 23:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("max_requests_per_1_minute", sa.Integer(), nullable=True),
        sa.Column("max_tokens_per_1_minute", sa.Integer(), nullable=True),
        sa.Column("max_requests_per_1_day", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "subject_id", "model", name=op.f("pk_rate_limits")),
    )
    op.create_index(op.f("ix_rate_limits_org_id"), "rate_limits", ["org_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_limits_org_id"), table_name="rate_limits")
    op.drop_table("rate_limits")
