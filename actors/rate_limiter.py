"""The control plane's limits facet: ``forge.limits.limiter.RateLimiter`` and
``forge.routing.breakers.BreakerBoard`` together (clients are ``remote(facet,
RateLimiter)`` and ``remote(facet, BreakerBoard)``).

Its buckets are in memory: a restart starts them full, which admits at most one burst
(a second's worth of each limit) more; see the limiter's docstring for why that is the
right trade against persisting every grant.
"""

from __future__ import annotations

from forge.limits.limiter import RateLimiter
from forge.routing.breakers import BreakerBoard


class Limits(RateLimiter, BreakerBoard):
    def __init__(self) -> None:
        RateLimiter.__init__(self)
        BreakerBoard.__init__(self)
