"""Budgets on the real ledger and database (SQLite and PostgreSQL), with gates as
gateway replicas would hold them: concurrent requests never overrun a budget, what is
spent equals the usage records, a restarted ledger knows its holds, a dead replica's
holds are dropped in time, and a ledger away refuses (budgets fail closed)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from actors.usage_recorder import UsageStore
from forge.budgets.gate import BudgetGate
from forge.budgets.ledger import Ask, BudgetLedger
from forge.budgets.model import Budget, Costs, QuotaExceeded, plan_budget, worst_case
from forge.db.engine import make_sessionmaker
from forge.db.schema import UsageRecord
from forge.errors import ServiceUnavailable
from forge.usage import UsageEvent
from tests.unit.test_spend import event

BUDGET = Budget(
    id="budget_p", org_id="org-b", scope="project", subject_id="proj_b", period="month", limit=20.0
)


def record(i: int, replica: int, cost: float) -> UsageEvent:
    made = event(i, datetime.now(UTC), key=f"key_{replica}", cost=cost)
    return made.model_copy(update={"org_id": "org-b", "project_id": "proj_b"})


def test_worst_case_and_plan_quota():
    worst = worst_case(4_000, 100, input_price_per_mtok=2.0, output_price_per_mtok=10.0)
    assert worst.usd == pytest.approx((4_000 * 2 + 100 * 10) / 1e6) and worst.tokens == 4_100
    assert worst_case(10, None, 0, 1.0, context_window=8192).tokens == 8_202
    quota = plan_budget("org-c", "community")
    assert quota is not None and (quota.unit, quota.limit, quota.period) == (
        "requests",
        100,
        "month",
    )
    assert plan_budget("org-p", "professional") is None


async def test_concurrent_requests_on_four_replicas_never_overrun_the_budget(engine):
    """4 gates, 160 requests at once in waves, each reserving a worst case of $0.50 and
    really costing up to that: what ran costs at most the budget, every refusal is a
    429 naming it, the counters equal the records, and every hold comes back."""
    sessions = make_sessionmaker(engine)
    ledger, store = BudgetLedger(sessions), UsageStore(engine)
    rng = random.Random(7)

    async def flushed() -> bool:
        return True

    gates = [BudgetGate(ledger.reserve, ledger.release, flushed, replicas=4) for _ in range(4)]
    ran, refused = [], 0

    async def request(i: int, g: int) -> None:
        nonlocal refused
        worst = Costs(usd=0.5)
        try:
            admitted = await gates[g].admit([BUDGET], worst)
        except QuotaExceeded as exc:
            refused += 1
            assert "monthly budget of $20.00 for project proj_b" in exc.message
            assert exc.headers() == {"x-should-retry": "false"} and exc.status_code == 429
            return
        await asyncio.sleep(rng.random() / 100)
        real = round(rng.uniform(0.1, 0.5), 4)
        await store.write([record(i, g, real)])  # the record lands before the settle
        assert admitted is not None
        admitted.settle(Costs(usd=real))
        ran.append(real)

    for wave in range(4):
        await asyncio.gather(*(request(wave * 40 + i, i % 4) for i in range(40)))
        for gate in gates:
            await gate.give_back(force=True)
    assert sum(ran) <= BUDGET.limit + 1e-9 and refused > 0
    assert sum(ran) >= BUDGET.limit * 0.5  # and the budget was not starved by the holds
    async with engine.connect() as conn:
        recorded = await conn.scalar(select(func.sum(UsageRecord.cost_usd)))
    assert recorded == pytest.approx(sum(ran))
    assert await ledger.outstanding() == 0


async def test_a_restarted_ledger_knows_its_holds_and_drops_a_dead_replicas(engine):
    sessions = make_sessionmaker(engine)
    now = [1_000_000.0]
    first = BudgetLedger(sessions, clock=lambda: now[0])
    got = await first.reserve([Ask(budget=BUDGET, need=5.0, want=5.0)])
    assert [h.amount for h in got.holds] == [5.0]
    restarted = BudgetLedger(sessions, hold_max_s=900, clock=lambda: now[0])
    assert await restarted.outstanding() == 5.0
    more = await restarted.reserve([Ask(budget=BUDGET, need=15.0, want=15.0)])
    assert more.holds
    over = await restarted.reserve([Ask(budget=BUDGET, need=0.01, want=1.0)])
    assert over.refused is not None and over.spent == pytest.approx(20.0)
    now[0] += 901  # the replica holding them died: its holds are dropped
    assert await restarted.expire() == 2 and await restarted.outstanding() == 0


async def test_a_ledger_away_refuses_and_an_unlimited_key_passes(engine):
    async def away(*args):
        raise ConnectionError("restarting")

    async def flushed() -> bool:
        return True

    gate = BudgetGate(away, away, flushed)
    with pytest.raises(ServiceUnavailable) as err:
        await gate.admit([BUDGET], Costs(usd=0.1))
    assert err.value.retry_after == 1
    assert await gate.admit([], Costs(usd=0.1)) is None


async def test_holds_are_kept_until_the_records_are_delivered(engine):
    ledger = BudgetLedger(make_sessionmaker(engine))
    delivered = False

    async def flushed() -> bool:
        return delivered

    gate = BudgetGate(ledger.reserve, ledger.release, flushed)
    admitted = await gate.admit([BUDGET], Costs(usd=1.0))
    assert admitted is not None
    assert await gate.give_back(force=True) == 0  # still in flight
    admitted.settle(Costs(usd=0.4))
    assert await gate.give_back(force=True) == 0  # records not yet written
    delivered = True
    assert await gate.give_back(force=True) == 1 and await ledger.outstanding() == 0
