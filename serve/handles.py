"""The gateway's view of a provider deployment: a `ProviderClient` over a Serve handle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray.serve.handle import DeploymentHandle

from forge.adapters import AdapterSpec
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem


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
        if api_key is None:
            return await self._complete.remote(endpoint, body, public_model)
        return await self._complete.remote(endpoint, body, public_model, api_key=api_key)

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        *,
        api_key: str | None = None,
    ) -> AsyncIterator[StreamItem]:
        if api_key is None:
            responses = self._stream.remote(endpoint, body, public_model, include_usage)
        else:
            responses = self._stream.remote(
                endpoint, body, public_model, include_usage, api_key=api_key
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
