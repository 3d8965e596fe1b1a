"""The RateLimiter actor: a Ray shell over ``forge.limits.limiter.RateLimiter`` and
``forge.routing.breakers.BreakerBoard`` (their interfaces, declared once; clients are
``actors.remote.remote(handle, RateLimiter)`` and ``remote(handle, BreakerBoard)``).

Its buckets are in memory: a restart starts them full, which admits at most one burst
(a second's worth of each limit) more; see the limiter's docstring for why that is the
right trade against persisting every grant.
"""

from __future__ import annotations

import ray

from forge.limits.limiter import RateLimiter
from forge.routing.breakers import BreakerBoard


# enable_task_events is missing from Ray's typing overloads, not from Ray.
@ray.remote(  # type: ignore[call-overload]
    max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False
)
class RateLimiterActor(RateLimiter, BreakerBoard):
    def __init__(self) -> None:
        RateLimiter.__init__(self)
        BreakerBoard.__init__(self)

    async def ping(self) -> bool:
        return True
