"""A self-hosted model as a provider: OpenAI chat/completions over an engine.

The same ``Provider`` interface as the remote providers, so the router, relay, usage
records and both placements work unchanged; the engine does the generating. LoRA
adapters are held in an ``AdapterCache`` and named per request (``with_adapter``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from forge.adapters import AdapterLookup, AdapterSpec, parse_adapter_ref
from forge.config import ProviderConfig
from forge.errors import ForgeError, InvalidRequest, UpstreamError
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem, Usage
from forge.settings import Settings
from forge.translate.common import unsupported
from serve.models.adapters import AdapterCache, check_adapter, fetch_adapter
from serve.models.engine import (
    Engine,
    EngineOutput,
    EngineStats,
    SamplingParams,
    StartOnce,
    check_fits,
)
from serve.models.tiny import build_tiny_model, is_built, refresh_chat_template
from serve.providers.sdk_base import ms_since, openai_stream
from serve.structured.spec import Constraint, parse_response_format
from serve.structured.tool_parsers import (
    FAMILIES,
    CallDelta,
    Piece,
    ToolParserName,
    ToolStream,
    detect_family,
    tool_stream,
)
from serve.structured.tools import ToolPlan, parse_tools, template_messages

DEFAULT_MAX_TOKENS = 256  # when a request sets none (capped by the room left in the window)
UNSUPPORTED = ("functions", "logprobs", "audio")


def resolve_model_path(model_path: str) -> str:
    """``tiny`` → the tiny local model under the data dir, built on first use."""
    if model_path != "tiny":
        return model_path
    target = Path(Settings().data_dir).resolve() / "models" / "tiny-llama"
    if not is_built(target):
        build_tiny_model(target)
    refresh_chat_template(target)
    return str(target)


def make_engine(cfg: ProviderConfig) -> Engine:
    """The engine a self-hosted provider's config asks for (vLLM imported only here)."""
    path = resolve_model_path(cfg.model_path or "")
    if cfg.type == "vllm":
        from serve.models.vllm_engine import VllmEngine

        return VllmEngine(
            path,
            tensor_parallel_size=cfg.tensor_parallel_size,
            max_loras=cfg.max_adapters,
            max_lora_rank=cfg.max_lora_rank,
            engine_args=cfg.engine_args,
        )
    from serve.models.transformers_engine import TransformersEngine

    return TransformersEngine(path, **cfg.engine_args)


async def _no_adapters(name: str) -> AdapterSpec | None:
    return None


class ModelServerProvider:
    """The plain class behind a self-hosted model's deployment."""

    def __init__(
        self,
        cfg: ProviderConfig,
        engine: Engine | None = None,
        *,
        adapter_lookup: AdapterLookup | None = None,
    ) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.engine = engine or make_engine(cfg)
        self._lookup = adapter_lookup or _no_adapters
        self._adapter_dir = Path(Settings().data_dir).resolve() / "adapters"
        self.adapters = AdapterCache(
            max(cfg.max_adapters, 1),
            resolve=self._lookup,
            prepare=self._prepare,
            load=self.engine.load_adapter,
            unload=self.engine.unload_adapter,
        )
        self._ready = StartOnce(self.engine)
        self._template_tools: TemplateTools | None = None

    async def _prepare(self, spec: AdapterSpec) -> Path:
        """Fetch the adapter and check it fits this model: 400 before the engine sees it."""
        await self._ready()
        path = await asyncio.to_thread(fetch_adapter, spec.source, self._adapter_dir)
        check_adapter(path, self.engine.config, self.cfg.max_lora_rank)
        return path

    async def load_adapter(self, spec: AdapterSpec) -> list[str]:
        """Load ``spec`` now (the admin route), from its files as they are now (a copy
        loaded before is replaced); returns what this replica holds."""
        await self.adapters.ensure(spec.name, spec, reload=True)
        return self.adapters.loaded()

    def with_adapter(self, adapter: str) -> AdapterView:
        """This server seen through one adapter; ``adapter`` is its reference
        (``forge.adapters.adapter_ref``: name@digest of its source)."""
        return AdapterView(self, adapter)

    def stats(self) -> EngineStats:
        if not self._ready.started:
            return EngineStats(engine=self.engine.kind, running=0, waiting=0)
        return self.engine.stats()

    def _prompt(self, endpoint: Endpoint, body: dict[str, Any]) -> Prepared:
        if endpoint == "embeddings":
            raise unsupported("transformers", "model", "it is a generative model")
        if (body.get("n") or 1) > 1:
            raise unsupported("transformers", "n")
        for field in UNSUPPORTED:
            if body.get(field):
                raise unsupported("transformers", field)
        constraint = self._constraint(endpoint, body.get("response_format"))
        plan = None
        if endpoint == "chat/completions":
            plan = self._tool_plan(body, constraint)
            messages = template_messages(body["messages"])
            if plan is not None and plan.constraint is not None:
                constraint = plan.constraint
            self._check_template(messages, plan)
            ids = self.engine.encode_chat(messages, plan.rendered if plan else None)
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise unsupported("transformers", "prompt", "a single string only")
            ids = self.engine.encode_text(prompt)
        # Unasked, max_tokens is at most what the context window has room for (as
        # OpenAI and vLLM do): a long prompt must not fail on a limit nobody sent.
        window = self.engine.context_window
        params = _sampling(
            body, default_max_tokens=max(1, min(DEFAULT_MAX_TOKENS, window - len(ids)))
        )
        update: dict[str, Any] = {}
        if constraint is not None:
            update["constraint"] = constraint
        if plan is not None and plan.mode == "auto" and self._template.keep_special:
            # a family whose markers are special tokens must see them in the text
            update["keep_special"] = self._template.keep_special
        if update:
            params = params.model_copy(update=update)
        check_fits(
            len(ids), params, window, "messages" if endpoint == "chat/completions" else "prompt"
        )
        return Prepared(list(ids), params, tool_stream(plan, self._template.family))

    def _constraint(self, endpoint: Endpoint, response_format: Any) -> Constraint | None:
        """The output constraint ``response_format`` asks for: checked here (a 400 names
        what is wrong), enforced by engines that support structured outputs, refused by
        the others. What the engine's tokenizer cannot enforce is its 400, at compile."""
        if response_format is None:
            return None
        if endpoint != "chat/completions":
            raise unsupported(self.engine.kind, "response_format", "chat/completions only")
        constraint = parse_response_format(response_format)
        if constraint is not None and not self.engine.supports_structured_outputs:
            raise unsupported(
                self.engine.kind, "response_format", "not enforced by this engine yet"
            )
        return constraint

    def _tool_plan(self, body: dict[str, Any], constraint: Constraint | None) -> ToolPlan | None:
        """The request's tools, checked against what this model can do with them."""
        plan = parse_tools(body)
        if plan is None:
            return None
        if plan.constraint is not None:
            if constraint is not None:
                raise InvalidRequest(
                    "'response_format' cannot be combined with a 'tool_choice' that forces a "
                    "call on this model: both constrain the same output.",
                    param="response_format",
                    code="unsupported_parameter",
                )
            if not self.engine.supports_structured_outputs:
                raise unsupported(self.engine.kind, "tool_choice", "'auto' or 'none' only")
        if plan.mode == "auto" and self._template.family is None:
            raise InvalidRequest(
                f"The model server {self.name!r} cannot tell how its model writes tool calls; "
                "set its provider's 'tool_parser'.",
                param="tools",
                code="unsupported_parameter",
            )
        return plan

    @property
    def _template(self) -> TemplateTools:
        """What the model's chat template does with tools: read once, after the engine
        has started (the prompt is built only then)."""
        if self._template_tools is None:
            family = self.cfg.tool_parser or detect_family(self.engine.chat_template)
            markers = FAMILIES[family].markers if family else ()
            template = self.engine.chat_template
            self._template_tools = TemplateTools(
                family=family,
                renders_tools="tools" in template and "tool_call" in template,
                keep_special=self.engine.special_ids(markers),
            )
        return self._template_tools

    def _check_template(self, messages: list[dict[str, Any]], plan: ToolPlan | None) -> None:
        """Tools, calls and their results need a chat template that renders them."""
        if self._template.renders_tools:
            return
        if plan is not None and plan.rendered:
            raise unsupported(self.engine.kind, "tools", "its chat template renders no tools")
        for i, message in enumerate(messages):
            if message["role"] == "tool" or message.get("tool_calls"):
                raise unsupported(
                    self.engine.kind, f"messages[{i}]", "its chat template renders no tool calls"
                )

    def _chunk(
        self,
        endpoint: Endpoint,
        cid: str,
        public_model: str,
        pieces: list[Piece],
        finish_reason: str | None,
        first: bool,
    ) -> dict[str, Any]:
        content, calls = _split(pieces)
        if endpoint == "completions":
            choice: dict[str, Any] = {
                "index": 0,
                "text": content,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            kind = "text_completion"
        else:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if content or not calls:
                delta["content"] = content
            if calls:
                delta["tool_calls"] = [call.openai() for call in calls]
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            kind = "chat.completion.chunk"
        return {
            "id": cid,
            "object": kind,
            "created": int(time.time()),
            "model": public_model,
            "choices": [choice],
        }

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        adapter: str | None = None,
    ) -> AsyncIterator[StreamItem]:
        engine = await self._ready()
        prepared = self._prompt(endpoint, body)
        ids, params, reader = prepared.ids, prepared.params, prepared.reader
        name, version = parse_adapter_ref(adapter) if adapter else (None, None)
        if name is not None:
            await self.adapters.ensure(name, version=version)  # a 404 before the stream
        t0 = time.perf_counter()
        cid = ("chatcmpl-" if endpoint == "chat/completions" else "cmpl-") + uuid.uuid4().hex[:24]

        async def chunks() -> AsyncGenerator[dict[str, Any], None]:
            last: EngineOutput | None = None
            first = True
            # Closed inside the lease: the engine request is cancelled before the adapter
            # may be unloaded (a client that left must not leave a row on it).
            async with self._holding(adapter), aclosing(engine.generate(ids, params, name)) as outs:
                async for out in outs:
                    last = out
                    pieces = reader.feed(out.text)
                    if out.finish_reason is not None:
                        pieces += reader.finish()
                    elif not pieces and not first:
                        continue  # held back: it may be the start of a tool call
                    reason = _finish_reason(out.finish_reason, reader)
                    yield self._chunk(endpoint, cid, public_model, pieces, reason, first)
                    first = False
            if last is not None:
                usage = {
                    "prompt_tokens": last.prompt_tokens,
                    "completion_tokens": last.completion_tokens,
                    "total_tokens": last.prompt_tokens + last.completion_tokens,
                }
                yield {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": public_model,
                    "choices": [],
                    "usage": usage,
                }

        source = chunks()
        try:
            async for item in openai_stream(
                source, body=body, include_usage=include_usage, t0=t0, map_error=self._map
            ):
                yield item
        finally:
            await source.aclose()  # cancels the engine request when the client left

    def _holding(self, adapter: str | None) -> AbstractAsyncContextManager[None]:
        """A lease on the adapter that ``adapter`` (a reference, name@digest) names."""
        if adapter is None:
            return nullcontext()
        # The gateway resolved this reference in the registry: it is registered.
        return self.adapters.lease(*parse_adapter_ref(adapter), registered=True)

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        adapter: str | None = None,
    ) -> ProviderReply:
        engine = await self._ready()
        prepared = self._prompt(endpoint, body)
        ids, params, reader = prepared.ids, prepared.params, prepared.reader
        t0 = time.perf_counter()
        pieces: list[Piece] = []
        last = None
        name = parse_adapter_ref(adapter)[0] if adapter else None
        async with self._holding(adapter), aclosing(engine.generate(ids, params, name)) as outs:
            async for out in outs:
                pieces += reader.feed(out.text)
                last = out
        assert last is not None
        pieces += reader.finish()
        usage = Usage(prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens)
        content, calls = _split(pieces)
        reason = _finish_reason(last.finish_reason, reader)
        if endpoint == "completions":
            choice: dict[str, Any] = {
                "index": 0,
                "text": content,
                "logprobs": None,
                "finish_reason": reason,
            }
            kind, prefix = "text_completion", "cmpl-"
        else:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["content"] = content or None
                message["tool_calls"] = _merge_calls(calls)
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reason,
            }
            kind, prefix = "chat.completion", "chatcmpl-"
        payload = {
            "id": prefix + uuid.uuid4().hex[:24],
            "object": kind,
            "created": int(time.time()),
            "model": public_model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            },
        }
        return ProviderReply(body=orjson.dumps(payload), usage=usage, upstream_ms=ms_since(t0))

    def _map(self, exc: BaseException) -> ForgeError:
        if isinstance(exc, ForgeError):
            return exc
        return UpstreamError(
            f"Model server {self.name!r} failed: {exc.__class__.__name__}: {exc}",
            provider=self.name,
        )

    async def ping(self) -> bool:
        return not self._ready.started or self.engine.healthy()

    def healthy(self) -> bool:
        """False once the engine's loop has died; the deployment then fails Serve's health
        check and Serve replaces the replica."""
        return not self._ready.started or self.engine.healthy()

    async def close(self) -> None:
        if self._ready.started:
            await self.engine.stop()


@dataclass(frozen=True, slots=True)
class TemplateTools:
    family: ToolParserName | None  # how the model writes tool calls (None: unknown)
    renders_tools: bool  # the template renders tools, calls and results
    keep_special: tuple[int, ...]  # the family's markers that are special tokens


@dataclass(slots=True)
class Prepared:
    """A request made ready for the engine, and how to read what it generates."""

    ids: list[int]
    params: SamplingParams
    reader: ToolStream


def _split(pieces: list[Piece]) -> tuple[str, list[CallDelta]]:
    text = "".join(p for p in pieces if isinstance(p, str))
    return text, [p for p in pieces if isinstance(p, CallDelta)]


def _merge_calls(calls: list[CallDelta]) -> list[dict[str, Any]]:
    """Streamed call pieces as the whole calls of a chat completion message."""
    merged: dict[int, dict[str, Any]] = {}
    for call in calls:
        if call.index not in merged:
            merged[call.index] = {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
        merged[call.index]["function"]["arguments"] += call.arguments
    return [merged[i] for i in sorted(merged)]


def _finish_reason(reason: str | None, reader: ToolStream) -> str | None:
    """``tool_calls`` when the model called tools and was not cut short."""
    return "tool_calls" if reason == "stop" and reader.calls else reason


def _sampling(body: dict[str, Any], default_max_tokens: int) -> SamplingParams:
    """The request's sampling parameters; values the engines cannot take (max_tokens 0
    among them) are a 400."""
    stop = body.get("stop") or []
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    top_p = 1.0 if body.get("top_p") is None else body["top_p"]
    temperature = 1.0 if body.get("temperature") is None else body["temperature"]
    if top_p == 0:  # OpenAI allows it: keep only the likeliest token, i.e. greedy
        top_p, temperature = 1.0, 0.0
    try:
        return SamplingParams(
            max_tokens=default_max_tokens if max_tokens is None else max_tokens,
            stop=[stop] if isinstance(stop, str) else list(stop),
            temperature=temperature,
            top_p=top_p,
            seed=body.get("seed"),
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else None
        raise InvalidRequest(f"Invalid {field}: {error['msg']}", param=field) from None


class AdapterView:
    """A model server seen through one adapter: what the router hands the relay for a
    request naming ``<base>:<adapter>`` or an adapter alias (in-process placement)."""

    def __init__(self, server: ModelServerProvider, adapter: str) -> None:
        self._server = server
        self.adapter = adapter

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str
    ) -> ProviderReply:
        return await self._server.complete(endpoint, body, public_model, self.adapter)

    def stream(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str, include_usage: bool
    ) -> AsyncIterator[StreamItem]:
        return self._server.stream(endpoint, body, public_model, include_usage, self.adapter)

    async def load_adapter(self, spec: AdapterSpec) -> list[str]:
        return await self._server.load_adapter(spec)

    async def ping(self) -> bool:
        return await self._server.ping()
