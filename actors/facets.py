"""The control plane's facets, addressed like actors of their own.

The directory, the usage recorder, the budget ledger and the rate limiter (with the
breaker board) share one actor process (``actors.control_plane``): a Ray actor is a
worker process of ~65 MiB before any import, and four of them were a quarter of a
one-machine install's memory (docs/architecture.md, "One control-plane process").

A ``FacetHandle`` keeps the calling convention of a handle of its own:
``directory.verify.remote(digest)`` is the control plane's
``call.remote("directory", "verify", digest)``, so ``actors.remote.remote(facet,
Interface)`` and every ``.remote`` call site work on a facet as on an actor. This module
imports nothing but Ray, so that the driver and the CLI can address the control plane
without importing what it runs.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import ray

Facet = Literal["directory", "usage", "budgets", "limits"]
FACETS: tuple[Facet, ...] = get_args(Facet)
ACTOR_NAMESPACE = "promptforge"
CONTROL_PLANE_ACTOR = "forge-control-plane"


class _FacetMethod:
    __slots__ = ("_call", "_facet", "_method")

    def __init__(self, call: Any, facet: str, method: str) -> None:
        self._call, self._facet, self._method = call, facet, method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._call.remote(self._facet, self._method, *args, **kwargs)


class FacetHandle:
    """One facet of the control-plane actor ``handle``: ``facet.method.remote(...)``
    returns the ObjectRef of that method's answer."""

    def __init__(self, handle: Any, facet: Facet) -> None:
        self.handle = handle
        self.facet = facet

    def __getattr__(self, method: str) -> _FacetMethod:
        if method.startswith("_"):  # pickling and copying probe for dunders
            raise AttributeError(method)
        return _FacetMethod(self.handle.call, self.facet, method)

    def __reduce__(self) -> tuple[type[FacetHandle], tuple[Any, Facet]]:
        return FacetHandle, (self.handle, self.facet)


def running_facet(facet: Facet) -> FacetHandle:
    """``facet`` of the running platform's control plane (raises ValueError when there is
    none): for the CLI, `forge up`'s drain and the tests."""
    return FacetHandle(ray.get_actor(CONTROL_PLANE_ACTOR, namespace=ACTOR_NAMESPACE), facet)
