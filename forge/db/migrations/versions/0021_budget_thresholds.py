"""Budget threshold events: a budget's period reaching 80% and 100% of its limit, an
outbox for webhooks.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 19:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_threshold_events",
        sa.Column("budget_id", sa.String(40), nullable=False),
        sa.Column("period_start", sa.String(10), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("unit", sa.String(12), nullable=False),
        sa.Column("limit", sa.Float(), nullable=False),
        sa.Column("used", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(
            "budget_id", "period_start", "percent", name=op.f("pk_budget_threshold_events")
        ),
    )
    op.create_index(
        op.f("ix_budget_threshold_events_org_id"), "budget_threshold_events", ["org_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_budget_threshold_events_org_id"), "budget_threshold_events")
    op.drop_table("budget_threshold_events")
