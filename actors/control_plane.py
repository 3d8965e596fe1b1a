"""The control-plane actor: the platform's shared state, one process per cluster.

It hosts four facets, each a plain class that unit tests use without Ray: the directory
(keys, adapters, replica stats, drain), the usage recorder, the budget ledger and the
limits (rate limits and circuit breakers). Callers address a facet through
``actors.facets.FacetHandle``; the actor's one entry point, ``call``, runs the facet's
method on the actor's event loop.

Why one process (docs/architecture.md, "One control-plane process"): each Ray actor is a
worker process of its own, ~65 MiB before any import of ours; four made ~0.47 GiB of
a one-machine install. The price: the four share a failure domain (a crash restarts all
four: the limits' buckets start full again, as they did on their own restart; the other
three keep their state in the database) and one event loop. Their work is short and
async (a database round trip or a dictionary update per call; the gateway leases permits
and holds in bulk), so one loop keeps up with many gateway replicas; and a facet's
method that blocked the loop would have blocked its own actor before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import ray

from actors.directory import PlatformDirectory
from actors.facets import FACETS, Facet
from actors.rate_limiter import Limits
from actors.usage_recorder import UsageRecorder
from forge.budgets.ledger import BudgetLedger
from forge.db.engine import make_engine, make_sessionmaker
from forge.settings import Settings


def _budget_ledger() -> BudgetLedger:
    return BudgetLedger(make_sessionmaker(make_engine(Settings().resolved_database_url())))


# Each facet has its own engine (and pool) on the database, as it had as an actor of its
# own: a burst of usage writes does not queue the directory's key lookups.
MAKERS: dict[Facet, Callable[[], object]] = {
    "directory": PlatformDirectory,
    "usage": UsageRecorder,
    "budgets": _budget_ledger,
    "limits": Limits,
}


def public_methods(obj: object) -> dict[str, Callable[..., Any]]:
    """The methods a facet serves: its public ones (its class is its interface)."""
    return {
        name: getattr(obj, name)
        for name, _ in inspect.getmembers(type(obj), inspect.isfunction)
        if not name.startswith("_")
    }


class ControlPlane:
    """The facets and their dispatch, without Ray (``facets``: those to host; all of
    them in the platform, one in a test of a facet)."""

    def __init__(self, facets: Iterable[Facet] = FACETS) -> None:
        self._methods = {facet: public_methods(MAKERS[facet]()) for facet in facets}

    async def call(self, facet: Facet, method: str, *args: Any, **kwargs: Any) -> Any:
        """``facet.method(*args, **kwargs)``, awaited when it is a coroutine. An unknown
        facet or method raises AttributeError, with the name."""
        methods = self._methods.get(facet)
        if methods is None:
            raise AttributeError(f"the control plane hosts no facet {facet!r}")
        if method == "ping":
            return True
        target = methods.get(method)
        if target is None:
            raise AttributeError(f"the {facet} facet has no method {method!r}")
        answer = target(*args, **kwargs)
        return await answer if inspect.isawaitable(answer) else answer


# enable_task_events is missing from Ray's typing overloads, not from Ray. Task events
# are off: Ray's GCS keeps one per call (key lookups, usage shipments: ~280 MiB an hour
# under steady load).
@ray.remote(  # type: ignore[call-overload]
    max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False
)
class ControlPlaneActor(ControlPlane):
    async def ping(self) -> bool:
        return True
