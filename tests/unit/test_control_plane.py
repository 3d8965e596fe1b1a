"""The control plane's dispatch, without Ray: a facet's methods by name, sync or async,
and clear errors for what it does not host; a facet handle's calling convention."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from actors.control_plane import ControlPlane
from actors.facets import FacetHandle
from actors.remote import remote
from forge.limits.limiter import RateLimiter


def test_a_facets_methods_are_called_by_name_sync_or_async() -> None:
    plane = ControlPlane(("limits",))

    async def run() -> tuple[Any, Any, Any]:
        grant = await plane.call("limits", "grant", "key:k:rpm", 60, 5)
        in_flight = await plane.call("limits", "in_flight", "key:k:*:concurrent")
        return grant, in_flight, await plane.call("limits", "ping")

    grant, in_flight, pong = asyncio.run(run())
    assert grant.granted == 1  # 60 a minute: one a second, a burst of one
    assert in_flight == 0 and pong is True


def test_what_the_control_plane_does_not_host_is_an_attribute_error_naming_it() -> None:
    plane = ControlPlane(("limits",))
    with pytest.raises(AttributeError, match="no facet 'directory'"):
        asyncio.run(plane.call("directory", "verify", "digest"))
    with pytest.raises(AttributeError, match="no method '_buckets'"):
        asyncio.run(plane.call("limits", "_buckets"))  # private: not served
    with pytest.raises(AttributeError, match="no method 'nope'"):
        asyncio.run(plane.call("limits", "nope"))


class RecordingHandle:
    """Stands in for Ray's actor handle: records ``call.remote`` and answers through the
    real ``ControlPlane``."""

    def __init__(self, plane: ControlPlane) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.call = self
        self._plane = plane

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        return self._plane.call(*args, **kwargs)


def test_a_facet_handle_is_called_like_an_actor_of_its_own() -> None:
    handle = RecordingHandle(ControlPlane(("limits",)))
    limits = FacetHandle(handle, "limits")
    client = remote(limits, RateLimiter)  # the interface, derived as for an actor
    grant = asyncio.run(client.grant("key:k:rpm", 6_000, 10))
    assert grant.granted == 10
    assert handle.calls == [("limits", "grant", "key:k:rpm", 6_000, 10)]
    asyncio.run(limits.give_back.remote("key:k:rpm", 4, 0))
    assert handle.calls[-1] == ("limits", "give_back", "key:k:rpm", 4, 0)
    copied = pickle.loads(pickle.dumps(FacetHandle("h", "usage")))
    assert (copied.handle, copied.facet) == ("h", "usage")
