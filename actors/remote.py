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


class _LazyClient:
    def __init__(self, make_handle: Callable[[], Any], interface: type) -> None:
        self._make_handle = make_handle
        self._interface = interface
        self._client: Any = None
        for name in async_methods(interface):
            setattr(self, name, self._call(name))

    def _call(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self._client is None:
                self._client = remote(self._make_handle(), self._interface)
            return await getattr(self._client, name)(*args, **kwargs)

        return call


def lazy_remote(make_handle: Callable[[], Any], interface: type[T]) -> T:
    """``remote``, with the actor made (or found) on the first call: for an actor that
    most installs never need, and so should not cost a process until one does."""
    return cast(T, _LazyClient(make_handle, interface))
