"""budgets (dollars, requests or tokens per UTC day or month, per key, project or
organisation) and the holds the ledger has granted against them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 23:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("unit", sa.String(length=12), nullable=False),
        sa.Column("limit", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint(
            "scope", "subject_id", "period", "unit", name="uq_budgets_scope_subject_period_unit"
        ),
    )
    op.create_index(op.f("ix_budgets_org_id"), "budgets", ["org_id"])
    op.create_table(
        "budget_holds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("budget_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.String(length=10), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_holds")),
    )
    op.create_index(op.f("ix_budget_holds_budget_id"), "budget_holds", ["budget_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_budget_holds_budget_id"), table_name="budget_holds")
    op.drop_table("budget_holds")
    op.drop_index(op.f("ix_budgets_org_id"), table_name="budgets")
    op.drop_table("budgets")
