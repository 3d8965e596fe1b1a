"""spend counters: dollars, requests and tokens per key, project and organisation per
UTC day and month, kept with the usage records; filled here from the records so far.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 23:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCOPES = {"organization": "org_id", "project": "project_id", "key": "key_id"}


def _starts(dialect: str) -> dict[str, str]:
    """SQL for a record's UTC day and month, as ``YYYY-MM-DD`` (forge.spend.period_start)."""
    if dialect == "postgresql":
        utc = "(created_at AT TIME ZONE 'UTC')"
        return {
            "day": f"to_char({utc}, 'YYYY-MM-DD')",
            "month": f"to_char({utc}, 'YYYY-MM') || '-01'",
        }
    return {"day": "substr(created_at, 1, 10)", "month": "substr(created_at, 1, 7) || '-01'"}


def upgrade() -> None:
    op.create_table(
        "spend",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("period_start", sa.String(length=10), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "scope", "subject_id", "period", "period_start", name=op.f("pk_spend")
        ),
    )
    op.create_index(op.f("ix_spend_org_id"), "spend", ["org_id"])
    starts = _starts(op.get_bind().dialect.name)
    for scope, column in SCOPES.items():
        for period, start in starts.items():
            op.execute(
                f"INSERT INTO spend (scope, subject_id, period, period_start, org_id, "
                f"cost_usd, requests, tokens) "
                f"SELECT '{scope}', {column}, '{period}', {start}, MIN(org_id), "
                f"SUM(cost_usd), COUNT(*), SUM(prompt_tokens + completion_tokens) "
                f"FROM usage_records WHERE org_id IS NOT NULL AND {column} IS NOT NULL "
                f"GROUP BY {column}, {start}"
            )


def downgrade() -> None:
    op.drop_index(op.f("ix_spend_org_id"), table_name="spend")
    op.drop_table("spend")
