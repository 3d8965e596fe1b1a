"""The gateway's view of a provider deployment: a `ProviderClient` over a Serve handle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray.serve.handle import DeploymentHandle

from forge.adapters import AdapterSpec
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem
from forge.tracing_spans import trace_headers


class HandleProviderClient:
    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle
        self._complete = handle.options(method_name="complete")
        self._stream = handle.options(method_name="stream", stream=True)
        self._ping = handle.options(method_name="ping")
        self._warm = handle.options(method_name="warm")

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        *,
        api_key: str | None = None,
    ) -> ProviderReply:
        return await self._complete.remote(endpoint, body, public_model, **_extras(api_key))

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        *,
        api_key: str | None = None,
    ) -> AsyncIterator[StreamItem]:
        responses = self._stream.remote(
            endpoint, body, public_model, include_usage, **_extras(api_key)
        )
        finished = False
        try:
            async for item in responses:
                yield item
            finished = True
        finally:
            if not finished:
                responses.cancel()  # cancels the replica's generator, closing the upstream call

    async def ping(self) -> bool:
        return await self._ping.remote()

    async def warm(self) -> bool:
        """One call through the handle's whole path (its channel to a replica, the
        replica's queue length, the replica's first request), nothing upstream: done at
        the gateway replica's start (gateway/warm.py) so that no request pays for it.
        The calls above share this handle's router, so they find the path set up."""
        return await self._warm.remote()

    def with_adapter(self, adapter: str) -> HandleProviderClient:
        """Calls that Serve's model multiplexing routes to a replica holding ``adapter``."""
        return HandleProviderClient(self._handle.options(multiplexed_model_id=adapter))

    async def load_adapter(self, spec: AdapterSpec) -> list[str]:
        return await self._handle.options(method_name="load_adapter").remote(spec)


def _extras(api_key: str | None) -> dict[str, Any]:
    """What a call sends besides its request, only when there is any: the caller's own
    key (BYOK) and the current trace (``trace_headers``: the try's span, continued in
    the deployment's replica so that the upstream call carries it)."""
    extras: dict[str, Any] = {} if api_key is None else {"api_key": api_key}
    trace = trace_headers()
    if trace:
        extras["trace"] = trace
    return extras
