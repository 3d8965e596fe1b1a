"""spend alerts (an organisation's or a project's monthly spend threshold) and the events
they fire (an outbox for webhooks).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spend_alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("threshold_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spend_alerts")),
    )
    op.create_index(op.f("ix_spend_alerts_org_id"), "spend_alerts", ["org_id"])
    op.create_index(op.f("ix_spend_alerts_subject_id"), "spend_alerts", ["subject_id"])
    op.create_table(
        "spend_alert_events",
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.String(length=10), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("threshold_cents", sa.BigInteger(), nullable=False),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", "period_start", name=op.f("pk_spend_alert_events")),
    )
    op.create_index(op.f("ix_spend_alert_events_org_id"), "spend_alert_events", ["org_id"])


def downgrade() -> None:
    op.drop_table("spend_alert_events")
    op.drop_table("spend_alerts")
