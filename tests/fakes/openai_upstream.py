"""A fake OpenAI API that speaks the real wire format (paths, headers, JSON, SSE, errors).

What it does is chosen by the model name the request carries, so one server serves every
scenario at once:

- any name: a normal answer of ``reply_tokens`` words (fewer with max_tokens/stop); with
  ``tools`` (and ``tool_choice`` not "none") a call of the first tool instead, except when
  the last message is a tool result and no call is forced: then the words, as a model
  answers once it has what it asked for (so an agent's tool loop ends);
- ``error-<status>``: that HTTP status with OpenAI's error body (429 carries Retry-After);
- ``hang``: never answers; ``drop``: closes the connection without an answer;
- ``malformed``: 200 with a body that is not JSON;
- ``midstream-drop`` / ``midstream-error`` / ``truncated``: streams that break after two
  chunks (connection cut / error event / end without finish or [DONE]);
- ``slow-stream``: 200 chunks 20 ms apart; counts streams whose client went away;
- ``flaky-<pct>``: fails ``pct`` percent of its requests, spread evenly, in turn with a
  500, a 429 (Retry-After 7), no answer (a hang: the caller's timeout) and a reset
  connection; answers normally otherwise;
- any name in ``down``: 503, until the test takes it out again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.rate_limits import RateLimitHeaders
from tests.fakes.server import FakeUpstream

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()  # noqa: SIM905


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _tool_name(tools: list[Any]) -> str:
    first = tools[0] if tools and isinstance(tools[0], dict) else {}
    function = first.get("function") if isinstance(first.get("function"), dict) else {}
    return str(function.get("name") or first.get("name") or "tool")


def _calls_a_tool(body: dict[str, Any]) -> bool:
    """Whether the answer is a tool call: tools were sent and not turned off, and either a
    call is forced (``required`` or a named function) or the model has not yet got a tool
    result back (the last message is not a ``tool`` message)."""
    choice = body.get("tool_choice")
    if not body.get("tools") or choice == "none":
        return False
    if choice == "required" or isinstance(choice, dict):
        return True
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    return last.get("role") != "tool"


def _content(body: dict[str, Any], words: list[str]) -> str:
    """The answer's text: JSON when the request's ``response_format`` asks for it, as
    OpenAI answers: with ``json_schema``, an instance of the schema (Structured
    Outputs); with ``json_object``, an object. Model ``sloppy-json`` stands for a server
    that ignores schemas: always ``{"answer": ...}``, and with words before the JSON
    until the conversation holds an earlier answer of its own (a corrected request)."""
    text = " ".join(words)
    fmt = body.get("response_format") or {}
    if fmt.get("type") not in ("json_object", "json_schema"):
        return text
    if body.get("model") == "sloppy-json":
        answer = orjson.dumps({"answer": text}).decode()
        corrected = any(m.get("role") == "assistant" for m in body.get("messages", []))
        return answer if corrected else f"Sure! {answer}"
    schema = (fmt.get("json_schema") or {}).get("schema")
    value = _instance(schema, text) if isinstance(schema, dict) else {"answer": text}
    return orjson.dumps(value).decode()


def _stream_pieces(body: dict[str, Any], count: int) -> list[str]:
    """A streamed answer's text in ``count`` pieces: words, or in JSON mode the JSON
    ``_content`` gives, cut in even pieces (as OpenAI streams it)."""
    words = [WORDS[k % len(WORDS)] for k in range(count)]
    fmt = body.get("response_format") or {}
    if fmt.get("type") not in ("json_object", "json_schema") or not count:
        return [(" " if k else "") + word for k, word in enumerate(words)]
    text = _content(body, words)
    size = -(-len(text) // count)
    return [text[k * size : (k + 1) * size] for k in range(count)]


class InvalidSchema(ValueError):
    """A JSON schema OpenAI refuses (a 400 naming response_format, as OpenAI answers)."""


def _instance(schema: dict[str, Any], text: str) -> Any:
    """A value the (simple) schema accepts, from the reply's words."""
    if not isinstance(schema, dict):
        raise InvalidSchema(f"schema must be an object, got {type(schema).__name__}")
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: _instance(sub, text) for name, sub in props.items()}
    if kind == "array":
        return [_instance(schema["items"], text)] if isinstance(schema.get("items"), dict) else []
    if kind in ("number", "integer"):
        low = schema.get("minimum", 0)
        high = schema.get("maximum", 10 if kind == "integer" else 1)
        middle = (low + high) / 2
        return int(middle) if kind == "integer" else middle
    if kind == "boolean":
        return True
    if "enum" in schema:
        return schema["enum"][0]
    return text


def _count_prompt(body: dict[str, Any]) -> int:
    text = orjson.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
    return max(1, len(text.split()))


class FakeOpenAI(FakeUpstream):
    def __init__(
        self,
        api_key: str | None = "sk-upstream-test",
        reply_tokens: int = 8,
        latency_ms: float = 0.0,
        rate_limits: tuple[int, int] | None = None,
    ) -> None:
        # (rpm, tpm): send OpenAI's x-ratelimit-* headers with every answer (none unless)
        self.rate_limits = None if rate_limits is None else RateLimitHeaders(*rate_limits, "openai")
        super().__init__()
        self.api_key = api_key
        self.reply_tokens = reply_tokens
        self.latency_ms = latency_ms
        self.down: set[str] = set()
        self._flaky_seen: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return self._server.url + "/v1"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("/v1", "/openai/deployments/{deployment}"):
            app.router.add_post(prefix + "/chat/completions", self.chat)
            app.router.add_post(prefix + "/completions", self.completions)
            app.router.add_post(prefix + "/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        if self.rate_limits is not None:
            app.on_response_prepare.append(self.rate_limits.on_prepare)
        return app

    # ------------------------------------------------------------------ helpers
    async def _admit(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}, _error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
        if "deployment" in request.match_info:
            body.setdefault("model", request.match_info["deployment"])
        self.requests.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        if self.api_key is not None:
            bearer = request.headers.get("Authorization", "")
            azure_key = request.headers.get("api-key")
            if bearer != f"Bearer {self.api_key}" and azure_key != self.api_key:
                return body, _error(
                    401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                )
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        model = str(body.get("model", ""))
        if model in self.down:
            model = "error-503"
        if model.startswith("flaky-"):
            model = self._flaky(model)
        if model.startswith("error-"):
            status = int(model.split("-", 1)[1])
            if status == 429:
                return body, _error(
                    429,
                    "Rate limit reached for requests.",
                    "requests",
                    "rate_limit_exceeded",
                    headers={"retry-after": "7"},
                )
            if status == 400:
                return body, _error(
                    400,
                    "Invalid value for 'messages'.",
                    "invalid_request_error",
                    "invalid_value",
                    "messages",
                )
            if status == 404:
                return body, _error(
                    404,
                    f"The model '{model}' does not exist.",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
            return body, _error(
                status,
                "The server had an error while processing your request.",
                "server_error",
                None,
            )
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "drop":
            request.transport.close()
            raise asyncio.CancelledError
        if model == "malformed":
            return body, web.Response(
                status=200, text="<html>oops</html>", content_type="application/json"
            )
        return body, None

    def _flaky(self, model: str) -> str:
        """The scenario this request of a ``flaky-<pct>`` model plays: failure number k
        (of every request n where the running share of failures steps up) is the k-th of
        500, 429, hang, drop."""
        pct = int(model.split("-", 1)[1])
        n = self._flaky_seen.get(model, 0)
        self._flaky_seen[model] = n + 1
        if (n + 1) * pct // 100 == n * pct // 100:
            return "gpt-fake"
        kind = (n * pct // 100) % 4
        return ("error-500", "error-429", "hang", "drop")[kind]

    def _reply_words(self, body: dict[str, Any]) -> tuple[list[str], str]:
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or self.reply_tokens
        words = [WORDS[i % len(WORDS)] for i in range(self.reply_tokens)]
        finish = "stop"
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        for i, w in enumerate(words):
            if w in stops:
                words = words[:i]
                break
        if len(words) > limit:
            words, finish = words[:limit], "length"
        return words, finish

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    # ------------------------------------------------------------------ routes
    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
            for m in ("gpt-fake", "text-embedding-fake")
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._admit(request)
        if failure is not None:
            return failure
        model = body["model"]
        words, finish = self._reply_words(body)
        tools = body.get("tools")
        use_tool = _calls_a_tool(body)
        n = int(body.get("n") or 1)
        prompt = _count_prompt(body)
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if body.get("stream"):
            return await self._chat_stream(
                request, body, cid, created, words, finish, n, prompt, tools if use_tool else None
            )
        choices = []
        for i in range(n):
            if use_tool:
                message = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": f"call_{i}",
                            "type": "function",
                            "function": {
                                "name": _tool_name(tools),
                                "arguments": '{"location": "Paris"}',
                            },
                        }
                    ],
                }
                reason = "tool_calls"
            else:
                try:
                    content = _content(body, words)
                except InvalidSchema as exc:
                    return _error(
                        400,
                        f"Invalid schema for response_format: {exc}.",
                        "invalid_request_error",
                        "invalid_json_schema",
                        "response_format",
                    )
                message = {"role": "assistant", "content": content, "refusal": None}
                reason = finish
            choices.append(
                {"index": i, "message": message, "logprobs": None, "finish_reason": reason}
            )
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "service_tier": "default",
                "choices": choices,
                "usage": self._usage(prompt, len(words) * n),
            },
            dumps=lambda o: orjson.dumps(o).decode(),
        )

    async def _chat_stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        cid: str,
        created: int,
        words: list[str],
        finish: str,
        n: int,
        prompt: int,
        tools: list[dict[str, Any]] | None,
    ) -> web.StreamResponse:
        model = body["model"]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                obj["usage"] = usage
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        def delta(i: int, d: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            return {"index": i, "delta": d, "logprobs": None, "finish_reason": reason}

        count = 200 if model == "slow-stream" else len(words)
        pieces = _stream_pieces(body, count)
        try:
            for i in range(n):
                await resp.write(
                    chunk([delta(i, {"role": "assistant", "content": "", "refusal": None})])
                )
            if tools:
                for i in range(n):
                    await resp.write(
                        chunk(
                            [
                                delta(
                                    i,
                                    {
                                        "tool_calls": [
                                            {
                                                "index": 0,
                                                "id": f"call_{i}",
                                                "type": "function",
                                                "function": {
                                                    "name": _tool_name(tools),
                                                    "arguments": "",
                                                },
                                            }
                                        ]
                                    },
                                )
                            ]
                        )
                    )
                    await resp.write(
                        chunk(
                            [
                                delta(
                                    i,
                                    {
                                        "tool_calls": [
                                            {
                                                "index": 0,
                                                "function": {"arguments": '{"location": "Paris"}'},
                                            }
                                        ]
                                    },
                                )
                            ]
                        )
                    )
                finish = "tool_calls"
                count = 0
            for k in range(count):
                if model in ("midstream-drop", "midstream-error", "truncated") and k == 2:
                    if model == "midstream-drop":
                        request.transport.close()
                        return resp
                    if model == "midstream-error":
                        await resp.write(
                            b'data: {"error": {"message": "The server had an error '
                            b'while processing your request.", "type": '
                            b'"server_error", "param": null, "code": null}}\n\n'
                        )
                    return resp
                if model == "slow-stream":
                    await asyncio.sleep(0.02)
                for i in range(n):
                    await resp.write(chunk([delta(i, {"content": pieces[k]})]))
            for i in range(n):
                await resp.write(chunk([delta(i, {}, finish)]))
            if include_usage:
                completion = (count if not tools else 1) * n
                await resp.write(chunk([], self._usage(prompt, completion)))
            await resp.write(b"data: [DONE]\n\n")
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled_streams += 1
            raise
        return resp

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._admit(request)
        if failure is not None:
            return failure
        words, finish = self._reply_words(body)
        cid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        prompt = _count_prompt(body)
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            for k, w in enumerate(words):
                obj = {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "text": (" " if k else "") + w,
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
                await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")
            obj = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": finish}],
            }
            await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")
            if include_usage:
                obj = {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [],
                    "usage": self._usage(prompt, len(words)),
                }
                await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            return resp
        return web.json_response(
            {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "text": " ".join(words), "logprobs": None, "finish_reason": finish}
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(words),
                    "total_tokens": prompt + len(words),
                },
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body, failure = await self._admit(request)
        if failure is not None:
            return failure
        inputs = body.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        dims = int(body.get("dimensions") or 8)
        data = []
        for i, item in enumerate(inputs or []):
            digest = hashlib.sha256(orjson.dumps(item)).digest()
            vector = [(digest[j % 32] - 128) / 128 for j in range(dims)]
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                emb = vector
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(orjson.dumps(x).split()) for x in inputs or [])
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
