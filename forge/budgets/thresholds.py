"""Budget thresholds: when a budget's period reaches 80% and then 100% of its limit,
an event, once per budget, period and threshold (webhook ``budget.threshold_reached``).

Fired like spend alerts (forge/budgets/alerts.py): one INSERT ... SELECT in the usage
recorder's transaction, over the budgets of the subjects and periods the batch touched,
keyed so that a crossing is recorded once however the records arrive. The budget gate
stops requests at 100% on its own (forge/budgets/gate.py); these events tell people.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import DateTime, and_, bindparam, case, literal, select, tuple_, union_all

from forge.db.schema import BudgetRow, BudgetThresholdEvent, Spend, utcnow
from forge.spend import SpendDelta

PERCENTS = (80, 100)
COLUMNS = [
    "budget_id",
    "period_start",
    "percent",
    "org_id",
    "scope",
    "subject_id",
    "period",
    "unit",
    "limit",
    "used",
    "created_at",
]


def threshold_statement(insert: Callable[[Any], Any]) -> Any:
    """The statement that records the thresholds a batch made budgets cross, built once
    per store and run with ``threshold_params`` after the counters are updated, in
    their transaction."""
    used = case(
        (BudgetRow.unit == "usd", Spend.cost_usd),
        (BudgetRow.unit == "requests", Spend.requests),
        else_=Spend.tokens,
    )
    touched: Any = bindparam("touched", expanding=True)
    now = bindparam("now", type_=DateTime(timezone=True))

    def crossed(percent: int) -> Any:
        return (
            select(
                BudgetRow.id,
                Spend.period_start,
                literal(percent),
                BudgetRow.org_id,
                BudgetRow.scope,
                BudgetRow.subject_id,
                BudgetRow.period,
                BudgetRow.unit,
                BudgetRow.limit,
                used,
                now,
            )
            .join(
                Spend,
                and_(
                    Spend.scope == BudgetRow.scope,
                    Spend.subject_id == BudgetRow.subject_id,
                    Spend.period == BudgetRow.period,
                ),
            )
            .where(
                tuple_(Spend.scope, Spend.subject_id, Spend.period, Spend.period_start).in_(
                    touched
                ),
                used * 100 >= BudgetRow.limit * percent,
            )
        )

    stmt = insert(BudgetThresholdEvent).from_select(
        COLUMNS, union_all(*(crossed(p) for p in PERCENTS))
    )
    return stmt.on_conflict_do_nothing(
        index_elements=[
            BudgetThresholdEvent.budget_id,
            BudgetThresholdEvent.period_start,
            BudgetThresholdEvent.percent,
        ]
    )


def threshold_params(deltas: Sequence[SpendDelta]) -> dict[str, Any] | None:
    """``threshold_statement``'s parameters for a batch (None when it touched nothing)."""
    touched = sorted({(d.scope, d.subject_id, d.period, d.period_start) for d in deltas})
    return {"touched": touched, "now": utcnow()} if touched else None
