"""Calling an actor through the interface of the plain class it wraps.

An actor shell subclasses its plain class (Ray serves the inherited methods), so the
class is the one declaration of the interface: ``remote(handle, Directory)`` is a client
typed as ``Directory`` whose every async method awaits the actor's. Adding an operation
to the plain class adds it to the actor and to its clients.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


def async_methods(cls: type) -> list[str]:
    """The public coroutine methods of ``cls`` and its bases: the remote interface."""
    return [
        name
        for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    ]


class _RemoteClient:
    def __init__(self, handle: Any, names: list[str]) -> None:
        self._handle = handle
        for name in names:
            setattr(self, name, self._call(getattr(handle, name)))

    @staticmethod
    def _call(method: Any) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await method.remote(*args, **kwargs)

        return call


def remote(handle: Any, interface: type[T]) -> T:
    """A client of the actor ``handle`` with ``interface``'s async methods."""
    return cast(T, _RemoteClient(handle, async_methods(interface)))
