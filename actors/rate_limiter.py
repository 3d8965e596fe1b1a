"""The RateLimiter actor: a Ray shell over ``forge.limits.limiter.RateLimiter`` (its
interface, declared once; clients are ``actors.remote.remote(handle, RateLimiter)``).

Its buckets are in memory: a restart starts them full, which admits at most one burst
(a second's worth of each limit) more; see the limiter's docstring for why that is the
right trade against persisting every grant.
"""

from __future__ import annotations

import ray

from forge.limits.limiter import RateLimiter


# enable_task_events is missing from Ray's typing overloads, not from Ray.
@ray.remote(  # type: ignore[call-overload]
    max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False
)
class RateLimiterActor(RateLimiter):
    async def ping(self) -> bool:
        return True
