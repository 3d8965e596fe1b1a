"""A self-hosted embedding model as a provider: `/v1/embeddings` over the local engine."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from forge.config import ProviderConfig
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem, Usage
from forge.translate.common import unsupported
from serve.models.embedding_engine import EmbeddingEngine, resolve_embedding_path
from serve.models.engine import EngineStats, StartOnce
from serve.providers.sdk_base import ms_since


class EmbeddingServerProvider:
    def __init__(self, cfg: ProviderConfig, engine: EmbeddingEngine | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.engine = engine or EmbeddingEngine(resolve_embedding_path(cfg.model_path or ""))
        self._ready = StartOnce(self.engine)
        self._in_flight = 0  # the engine embeds one batch at a time: the rest wait

    def stats(self) -> EngineStats:
        """For `forge status`, as the generative model servers report."""
        return EngineStats(
            engine="transformers_embedding",
            running=min(self._in_flight, 1),
            waiting=max(self._in_flight - 1, 0),
        )

    def healthy(self) -> bool:
        return True

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str
    ) -> ProviderReply:
        if endpoint != "embeddings":
            raise unsupported("transformers_embedding", "model", "it is an embedding model")
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise unsupported("transformers_embedding", "input", "text inputs only, not tokens")
        engine = await self._ready()
        t0 = time.perf_counter()
        self._in_flight += 1
        try:
            vectors, tokens = await engine.embed(texts, body.get("dimensions"))
        finally:
            self._in_flight -= 1
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
                if as_base64
                else v,
            }
            for i, v in enumerate(vectors)
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": public_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return ProviderReply(orjson.dumps(payload), Usage(prompt_tokens=tokens), ms_since(t0))

    async def stream(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str, include_usage: bool
    ) -> AsyncIterator[StreamItem]:
        raise unsupported("transformers_embedding", "stream", "embeddings do not stream")
        yield  # pragma: no cover  (makes this an async generator)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
