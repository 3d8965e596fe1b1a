"""A fake Ollama server speaking its documented native API: `POST /api/chat`,
`POST /api/generate`, `POST /api/embed` (JSON, or NDJSON streams as
``application/x-ndjson``, streaming by default when ``stream`` is absent, as Ollama does),
`GET /api/tags`, `GET /api/version`, and errors as ``{"error": "text"}``.

Like Ollama it is strict where Go's JSON decoding is: tool call ``arguments`` must be an
object, ``images`` base64 strings, ``format`` ``"json"`` or a schema object, options of
the right type. A model must be pulled (``PULLED``, with or without ``:latest``), else
404 ``model "x" not found, try pulling it first``. Scenarios by model name, as in the
other fakes: ``error-<status>``, ``hang``, ``drop`` (connection closed, no answer),
``malformed``, ``midstream-error`` (an ``{"error": ...}`` line after two chunks),
``midstream-drop``, ``truncated`` (ends without the done line), ``slow-stream`` (200 lines
20 ms apart; counts streams whose client went away). Given tools (and no ``format``),
the model calls the first one with ``{"location": "Paris"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeUpstream

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel".split()  # noqa: SIM905
PULLED = frozenset({"llama3.2", "qwen3:8b", "llava", "nomic-embed-text"})
SCENARIOS = frozenset(
    {"hang", "drop", "malformed", "midstream-error", "midstream-drop", "truncated", "slow-stream"}
)
VERSION = "0.12.6"
EMBED_CONTEXT_WORDS = 512
INT_OPTIONS = ("seed", "num_predict", "num_ctx", "top_k")
FLOAT_OPTIONS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"error": message}), content_type="application/json"
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _json(payload: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _metrics(prompt: int, completion: int) -> dict[str, int]:
    return {
        "total_duration": 5_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": 1_000_000,
        "eval_count": completion,
        "eval_duration": 3_000_000,
    }


def _check_options(options: Any) -> str | None:
    if options is None:
        return None
    if not isinstance(options, dict):
        return "options must be an object"
    for key in INT_OPTIONS:
        if key in options and not isinstance(options[key], int | float):
            return f'option "{key}" must be of type integer'
    for key in FLOAT_OPTIONS:
        if key in options and not isinstance(options[key], int | float):
            return f'option "{key}" must be of type float32'
    stop = options.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        return 'option "stop" must be of an array of strings'
    return None


def _check_message(msg: Any) -> str | None:
    if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
        return "invalid message: a role is required"
    if not isinstance(msg.get("content", ""), str):
        return "json: cannot unmarshal array into Go struct field Message.messages.content"
    for image in msg.get("images") or ():
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, TypeError, ValueError):
            return "illegal base64 data in images"
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("arguments", {}), dict):
            return (
                "json: cannot unmarshal string into Go struct field "
                "ToolCallFunction.messages.tool_calls.function.arguments"
            )
    return None


class FakeOllama(FakeUpstream):
    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/version", self.version)
        return app

    # ------------------------------------------------------------------ helpers

    async def _admit(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        """The body, or the error Ollama would answer before doing any work."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return {}, _error(400, "invalid character '{' looking for beginning of value")
        if not isinstance(body, dict):
            return {}, _error(400, "json: cannot unmarshal array into Go value")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            {"path": request.path, "headers": dict(request.headers), "body": body, "peer": peer}
        )
        bearer = request.headers.get("Authorization")
        if self.api_key is not None and bearer != f"Bearer {self.api_key}":
            return body, web.Response(status=401, text="unauthorized")
        model = body.get("model")
        if not model or not isinstance(model, str):
            return body, _error(400, "model is required")
        if model.startswith("error-"):
            return body, _error(int(model.split("-", 1)[1]), "The upstream refused this request.")
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "drop":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if model == "malformed":
            return body, web.Response(status=200, text="{not json", content_type="application/json")
        if model not in SCENARIOS and model.removesuffix(":latest") not in PULLED:
            return body, _error(404, f'model "{model}" not found, try pulling it first')
        problem = _check_options(body.get("options"))
        if problem:
            return body, _error(400, problem)
        return body, None

    @staticmethod
    def _words(body: dict[str, Any]) -> tuple[list[str], str]:
        options = body.get("options") or {}
        limit = int(options.get("num_predict") or -1)
        words = WORDS if limit < 0 else WORDS[:limit]
        reason = "length" if len(words) < len(WORDS) else "stop"
        for i, w in enumerate(words):
            if w in (options.get("stop") or ()):
                return words[:i], "stop"
        return words, reason

    async def _ndjson(
        self, request: web.Request, model: str, lines: list[dict[str, Any]], final: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            if model == "slow-stream":
                piece = lines[0]
                for i in range(200):
                    await asyncio.sleep(0.02)
                    text = f" w{i}"
                    line = {**piece, "message": {"role": "assistant", "content": text}}
                    if "response" in piece:
                        line = {**piece, "response": text}
                    await resp.write(orjson.dumps(line) + b"\n")
            else:
                for i, line in enumerate(lines):
                    if i == 2 and model in ("midstream-error", "midstream-drop", "truncated"):
                        if model == "midstream-error":
                            await resp.write(
                                b'{"error":"an error was encountered while running the model: '
                                b'unexpected EOF"}\n'
                            )
                        if model == "midstream-drop":
                            assert request.transport is not None
                            request.transport.close()
                        return resp
                    await resp.write(orjson.dumps(line) + b"\n")
            await resp.write(orjson.dumps(final) + b"\n")
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled_streams += 1
            raise
        return resp

    # ------------------------------------------------------------------ endpoints

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._admit(request)
        if failure is not None:
            return failure
        model = body["model"]
        messages = body.get("messages")
        if not isinstance(messages, list):
            return _error(400, "messages is required")
        for msg in messages:
            problem = _check_message(msg)
            if problem:
                return _error(400, problem)
        fmt = body.get("format")
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            return _error(400, f"invalid format: {orjson.dumps(fmt).decode()}")
        tools = body.get("tools") or []
        prompt = max(1, sum(len(str(m.get("content") or "").split()) for m in messages))
        words, reason = self._words(body)
        base = {"model": model, "created_at": _now()}
        if tools and not fmt:
            name = (tools[0].get("function") or {}).get("name", "tool")
            call = {"function": {"index": 0, "name": name, "arguments": {"location": "Paris"}}}
            pieces = [{"content": "", "tool_calls": [call]}]
            reason = "stop"  # Ollama reports tool calls with done_reason "stop"
        elif fmt:
            pieces = [{"content": '{"answer": '}, {"content": f'"{words[0]}"'}, {"content": "}"}]
        else:
            pieces = [{"content": (" " if i else "") + w} for i, w in enumerate(words)]
        completion = max(1, len(pieces))
        final = {
            **base,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
            **_metrics(prompt, completion),
        }
        if body.get("stream", True) is False:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(p["content"] for p in pieces),
            }
            calls = [c for p in pieces for c in p.get("tool_calls") or ()]
            if calls:
                message["tool_calls"] = calls
            return _json({**final, "message": message})
        lines = [{**base, "message": {"role": "assistant", **p}, "done": False} for p in pieces]
        return await self._ndjson(request, model, lines, final)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._admit(request)
        if failure is not None:
            return failure
        model = body["model"]
        if not isinstance(body.get("prompt", ""), str):
            return _error(400, "json: cannot unmarshal array into Go struct field prompt")
        words, reason = self._words(body)
        prompt = max(1, len(str(body.get("prompt", "")).split()))
        base = {"model": model, "created_at": _now()}
        final = {
            **base,
            "response": "",
            "done": True,
            "done_reason": reason,
            "context": [1, 2, 3],
            **_metrics(prompt, len(words)),
        }
        if body.get("stream", True) is False:
            return _json({**final, "response": " ".join(words)})
        lines = [
            {**base, "response": (" " if i else "") + w, "done": False} for i, w in enumerate(words)
        ]
        return await self._ndjson(request, model, lines, final)

    async def embed(self, request: web.Request) -> web.Response:
        body, failure = await self._admit(request)
        if failure is not None:
            return failure
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            return _error(400, "invalid input type")
        if body.get("truncate") is False and any(
            len(x.split()) > EMBED_CONTEXT_WORDS for x in inputs
        ):
            return _error(400, "input exceeds maximum context length")
        dims = int(body.get("dimensions") or 8)
        vectors = []
        for item in inputs:
            digest = hashlib.sha256(item.encode()).digest()
            vectors.append([(digest[j % 32] - 128) / 128 for j in range(dims)])  # exact in f32
        return _json(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": 1_000_000,
                "load_duration": 100_000,
                "prompt_eval_count": sum(max(1, len(x.split())) for x in inputs),
            }
        )

    async def tags(self, request: web.Request) -> web.Response:
        return _json(
            {
                "models": [
                    {
                        "name": f"{name}:latest" if ":" not in name else name,
                        "model": f"{name}:latest" if ":" not in name else name,
                        "modified_at": "2025-01-01T00:00:00Z",
                        "size": 2_000_000_000,
                        "digest": hashlib.sha256(name.encode()).hexdigest(),
                        "details": {"format": "gguf", "family": "llama"},
                    }
                    for name in sorted(PULLED)
                ]
            }
        )

    async def version(self, request: web.Request) -> web.Response:
        return _json({"version": VERSION})
