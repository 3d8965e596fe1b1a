"""The BudgetLedger actor: a Ray shell over ``forge.budgets.ledger.BudgetLedger`` (its
interface, declared once: clients are ``actors.remote.remote(handle, BudgetLedger)``).

Its state is in the database (the spend counters and the holds out), so a restart loses
nothing: the restarted ledger reads its holds back on its first call. While it is
restarting, replicas refuse what their holds cannot cover (budgets fail closed).
"""

from __future__ import annotations

import ray

from forge.budgets.ledger import BudgetLedger
from forge.db.engine import make_engine, make_sessionmaker
from forge.settings import Settings


# enable_task_events is missing from Ray's typing overloads, not from Ray.
@ray.remote(  # type: ignore[call-overload]
    max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False
)
class BudgetLedgerActor(BudgetLedger):
    def __init__(self) -> None:
        self._engine = make_engine(Settings().resolved_database_url())
        super().__init__(make_sessionmaker(self._engine))

    async def ping(self) -> bool:
        return True
