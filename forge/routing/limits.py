"""The limits a request may put on its own routing, from ``x-forge-*`` headers.

- ``x-forge-max-cost``: most USD the answer may cost (estimated from the prompt's size
  and the output it allows), so the cheap targets only;
- ``x-forge-max-latency-ms``: skip targets whose moving latency for this answer is over;
- ``x-forge-prefer-providers`` / ``x-forge-exclude-providers``: comma-separated provider
  names to try first / never to send to (e.g. to keep data with one vendor).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from forge.errors import InvalidRequest

MAX_COST = "x-forge-max-cost"
MAX_LATENCY = "x-forge-max-latency-ms"
PREFER = "x-forge-prefer-providers"
EXCLUDE = "x-forge-exclude-providers"


@dataclass(frozen=True, slots=True)
class RouteLimits:
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    prefer: tuple[str, ...] = ()
    exclude: frozenset[str] = frozenset()

    @property
    def none(self) -> bool:
        return self == NO_LIMITS


NO_LIMITS = RouteLimits()


def _positive(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest(
            f"Header {name!r} must be a positive number, not {raw!r}.",
            param=name,
            code="invalid_header",
        )
    return value


def _providers(headers: Mapping[str, str], name: str, known: Collection[str]) -> tuple[str, ...]:
    raw = headers.get(name)
    if raw is None:
        return ()
    names = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    unknown = [p for p in names if p not in known]
    if unknown or not names:
        raise InvalidRequest(
            f"Header {name!r} names no provider of this platform: {', '.join(unknown) or raw!r}"
            f" (known: {', '.join(sorted(known))}).",
            param=name,
            code="invalid_header",
        )
    return names


def route_limits(headers: Mapping[str, str], providers: Collection[str]) -> RouteLimits:
    """The request's limits (most requests set none: one lookup each); a 400 naming the
    header for a value that is not a positive number or a provider that does not exist."""
    if not any(name in headers for name in (MAX_COST, MAX_LATENCY, PREFER, EXCLUDE)):
        return NO_LIMITS
    prefer = _providers(headers, PREFER, providers)
    exclude = frozenset(_providers(headers, EXCLUDE, providers))
    if set(prefer) & exclude:
        raise InvalidRequest(
            f"Providers {', '.join(sorted(set(prefer) & exclude))} are both preferred and "
            "excluded.",
            param=EXCLUDE,
            code="invalid_header",
        )
    return RouteLimits(
        _positive(headers, MAX_COST), _positive(headers, MAX_LATENCY), prefer, exclude
    )
