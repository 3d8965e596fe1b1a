"""A fake Gemini Developer API speaking the documented REST wire format.

- ``POST /{v1|v1beta}/models/{model}:generateContent`` and ``:streamGenerateContent``
  (``?alt=sse``: ``data: {json}\\r\\n\\r\\n`` events, each a whole GenerateContentResponse;
  without it, one JSON array, as the real API does), ``:embedContent`` and
  ``:batchEmbedContents``;
- the API key in ``x-goog-api-key`` (or the ``key`` query parameter): a wrong key is a 400
  ``INVALID_ARGUMENT`` with an ``API_KEY_INVALID`` ErrorInfo, a missing one a 403, as
  Google answers;
- camelCase JSON out; requests read in camelCase or snake_case, unknown fields refused the
  way Google's JSON parser refuses them (400 ``Invalid JSON payload received``);
- errors as ``{"error": {"code", "message", "status", "details"}}``, 429 with Retry-After
  and a ``RetryInfo`` detail.

Scenarios by model name: ``error-<status>``, ``quota`` (429 with only RetryInfo),
``context-length`` (400 token count exceeded), ``hang``, ``drop``, ``malformed``,
``midstream-error`` (an error object after two chunks), ``truncated`` (ends after two
chunks without a finishReason), ``slow-stream`` (200 chunks 20 ms apart), ``blocked``
(promptFeedback.blockReason SAFETY, no candidates), ``safety`` (finishReason SAFETY),
``cached`` (cachedContentTokenCount), ``thinking`` (a thought part and
thoughtsTokenCount), ``signed`` (function calls carry a thoughtSignature and history
without it is refused, as Gemini 3 does). Declared tools get a function call unless the
last turn answers one; ``candidateCount`` and ``responseMimeType`` are honoured.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeUpstream

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel".split()  # noqa: SIM905
PROMPT_TOKENS = 12
EMBED_DIMENSIONS = 8
SIGNATURE = "++//c2lnbmVkLWJ5LWdlbWluaQE="
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
}
GENERATION_FIELDS = {
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
}
PART_FIELDS = {
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "thought",
    "thoughtSignature",
    "executableCode",
    "codeExecutionResult",
}
DECLARATION_FIELDS = {"name", "description", "parameters", "parametersJsonSchema", "response"}


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


def _f(obj: dict[str, Any], name: str, default: Any = None) -> Any:
    """A request field under its camelCase or snake_case name."""
    if name in obj:
        return obj[name]
    return obj.get(_snake(name), default)


class BadRequest(Exception):
    pass


def _unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    names = allowed | {_snake(a) for a in allowed}
    for key in obj:
        if key not in names:
            raise BadRequest(
                f"Invalid JSON payload received. Unknown name {key!r} at '{where}': "
                "Cannot find field."
            )


def _error(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    retry_header: bool = True,
) -> web.Response:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS.get(status, "UNKNOWN"),
    }
    headers = None
    if status == 429:
        details = [
            *(details or []),
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "11s"},
        ]
        if retry_header:
            headers = {"Retry-After": "11"}
    if details:
        error["details"] = details
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error}),
        content_type="application/json",
        headers=headers,
    )


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


def _vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255 - 0.5, 6) for i in range(dimensions)]


class FakeGemini(FakeUpstream):
    def __init__(self, api_key: str = "gemini-test-key") -> None:
        super().__init__()
        self.api_key = api_key

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version}/models/{call}", self.dispatch)
        return app

    # ------------------------------------------------------------------ admission

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        model, _, method = request.match_info["call"].rpartition(":")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "Invalid JSON payload received.")
        self.requests.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "version": version,
                "model": model,
                "method": method,
                "body": body,
            }
        )
        if version not in ("v1", "v1beta") or not model:
            return _error(404, f"The requested URL {request.path} was not found.")
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return _error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity.",
            )
        if key != self.api_key:
            return _error(
                400,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        if model.startswith("error-"):
            status = int(model.split("-", 1)[1])
            return _error(status, "The upstream refused this request.")
        if model == "quota":
            return _error(429, "Quota exceeded for metric.", retry_header=False)
        if model == "context-length":
            return _error(
                400,
                "The input token count (2000000) exceeds the maximum number of tokens "
                "allowed (1048576).",
            )
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "drop":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        try:
            if method == "generateContent":
                return self._generate(model, body)
            if method == "streamGenerateContent":
                return await self._stream(request, model, body)
            if method == "embedContent":
                return self._embed_one(model, body)
            if method == "batchEmbedContents":
                return self._embed_batch(model, body)
        except BadRequest as exc:
            return _error(400, str(exc))
        return _error(404, f"Method {method!r} not found for model {model!r}.")

    def _check(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """The generation config, after refusing what Google's API would refuse."""
        if not isinstance(body, dict):
            raise BadRequest("Invalid JSON payload received. Expected an object.")
        _unknown(body, REQUEST_FIELDS, "request")
        contents = _f(body, "contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
        system = _f(body, "systemInstruction")
        if system is not None:
            for part in system.get("parts") or []:
                _unknown(part, PART_FIELDS, "system_instruction.parts")
        for i, content in enumerate(contents):
            if content.get("role", "user") not in ("user", "model"):
                raise BadRequest(f"Please use a valid role: user, model. (contents[{i}])")
            parts = content.get("parts")
            if not parts:
                raise BadRequest(f"* GenerateContentRequest.contents[{i}].parts: must not be empty")
            for part in parts:
                self._check_part(model, part, i, content.get("role", "user"))
        declared = self._check_tools(body)
        config = _f(body, "generationConfig") or {}
        _unknown(config, GENERATION_FIELDS, "generation_config")
        if _f(config, "responseSchema") is not None and _f(config, "responseJsonSchema"):
            raise BadRequest("responseSchema and responseJsonSchema are mutually exclusive.")
        if "additionalProperties" in orjson.dumps(_f(config, "responseSchema") or {}).decode():
            raise BadRequest(
                'Invalid JSON payload received. Unknown name "additionalProperties" at '
                "'generation_config.response_schema': Cannot find field."
            )
        count = _f(config, "candidateCount", 1)
        if not 1 <= count <= 8:
            raise BadRequest("candidateCount must be between 1 and 8.")
        choice = _f(_f(body, "toolConfig") or {}, "functionCallingConfig") or {}
        for name in _f(choice, "allowedFunctionNames") or ():
            if name not in declared:
                raise BadRequest(f"allowed_function_names {name!r} is not declared.")
        return config

    def _check_part(self, model: str, part: dict[str, Any], i: int, role: str) -> None:
        _unknown(part, PART_FIELDS, f"contents[{i}].parts")
        data = _f(part, "inlineData")
        if data is not None:
            if not _f(data, "mimeType"):
                raise BadRequest(f"contents[{i}]: inline_data.mime_type is required")
            try:
                base64.b64decode(_f(data, "data") or "", validate=True)
            except binascii.Error:
                raise BadRequest(f"contents[{i}]: inline_data.data is not base64") from None
        file = _f(part, "fileData")
        if file is not None and not _f(file, "fileUri"):
            raise BadRequest(f"contents[{i}]: file_data.file_uri is required")
        call = _f(part, "functionCall")
        if call is not None:
            if role != "model" or not call.get("name"):
                raise BadRequest(f"contents[{i}]: function_call needs a name in a model turn")
            if model == "signed" and _f(part, "thoughtSignature") != SIGNATURE:
                raise BadRequest(
                    f"Function call is missing a thought_signature in functionCall parts. "
                    f"(contents[{i}])"
                )
        answer = _f(part, "functionResponse")
        if answer is not None and (
            not answer.get("name") or not isinstance(answer.get("response"), dict)
        ):
            raise BadRequest(f"contents[{i}]: function_response needs a name and a response")

    def _check_tools(self, body: dict[str, Any]) -> list[str]:
        names: list[str] = []
        for tool in _f(body, "tools") or ():
            for declaration in _f(tool, "functionDeclarations") or ():
                _unknown(declaration, DECLARATION_FIELDS, "tools.function_declarations")
                if not declaration.get("name"):
                    raise BadRequest("function_declarations[].name is required")
                schema = declaration.get("parameters")
                if schema is not None and _f(declaration, "parametersJsonSchema") is not None:
                    raise BadRequest("parameters and parameters_json_schema are exclusive.")
                if "additionalProperties" in orjson.dumps(schema or {}).decode():
                    raise BadRequest(
                        'Invalid JSON payload received. Unknown name "additionalProperties" '
                        "at 'tools.function_declarations.parameters': Cannot find field."
                    )
                names.append(declaration["name"])
        return names

    # ------------------------------------------------------------------ generation

    def _plan(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """What to answer: per candidate, its parts; a finish reason; usage."""
        config = self._check(model, body)
        count = _f(config, "candidateCount", 1)
        limit = _f(config, "maxOutputTokens") or 1000
        stops = _f(config, "stopSequences") or []
        mode = (_f(_f(body, "toolConfig") or {}, "functionCallingConfig") or {}).get("mode")
        declared = [
            d["name"] for t in _f(body, "tools") or () for d in _f(t, "functionDeclarations") or ()
        ]
        last = _f(body, "contents")[-1]
        answered = any(_f(p, "functionResponse") for p in last.get("parts") or ())
        candidates = []
        finish = "STOP"
        if declared and mode != "NONE" and not answered:
            allowed = _f(
                _f(_f(body, "toolConfig") or {}, "functionCallingConfig") or {},
                "allowedFunctionNames",
            )
            call = {"name": (allowed or declared)[0], "args": {"location": "Paris"}}
            part: dict[str, Any] = {"functionCall": call}
            if model == "signed":
                part["thoughtSignature"] = SIGNATURE
            candidates = [[part] for _ in range(count)]
            tokens = 6 * count
        else:
            words = WORDS[: min(len(WORDS), limit)]
            if len(words) < len(WORDS):
                finish = "MAX_TOKENS"
            for i, word in enumerate(words):
                if word in stops:
                    words, finish = words[:i], "STOP"
                    break
            if _f(config, "responseMimeType") == "application/json":
                pieces = ['{"answer": ', orjson.dumps(" ".join(words)).decode(), "}"]
            elif model == "slow-stream":
                pieces = [f" w{i}" for i in range(200)]
            else:
                pieces = [(" " if i else "") + w for i, w in enumerate(words)]
            for c in range(count):
                prefix = [f"[{c}] "] if c else []
                candidates.append([{"text": p} for p in prefix + pieces])
            tokens = len(pieces) * count
        if model == "safety":
            finish = "SAFETY"
        usage: dict[str, Any] = {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": tokens,
            "totalTokenCount": PROMPT_TOKENS + tokens,
        }
        if model == "cached":
            usage["cachedContentTokenCount"] = 5
        if model == "thinking":
            usage["thoughtsTokenCount"] = 7
            usage["totalTokenCount"] += 7
            for parts in candidates:
                parts.insert(0, {"text": "Let me think.", "thought": True})
        return {"candidates": candidates, "finish": finish, "usage": usage}

    def _envelope(self, model: str, rid: str, **fields: Any) -> dict[str, Any]:
        return {**fields, "modelVersion": model, "responseId": rid}

    def _generate(self, model: str, body: dict[str, Any]) -> web.Response:
        plan = self._plan(model, body)
        rid = uuid.uuid4().hex[:20]
        if model == "malformed":
            return web.Response(status=200, text="{not json", content_type="application/json")
        if model == "blocked":
            payload = self._envelope(
                model,
                rid,
                promptFeedback={
                    "blockReason": "SAFETY",
                    "safetyRatings": [
                        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                    ],
                },
                usageMetadata={"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": 12},
            )
            return web.json_response(payload, dumps=lambda o: orjson.dumps(o).decode())
        candidates = []
        for i, parts in enumerate(plan["candidates"]):
            candidate: dict[str, Any] = {"finishReason": plan["finish"], "index": i}
            if model == "safety":
                candidate["safetyRatings"] = [
                    {
                        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                        "probability": "HIGH",
                        "blocked": True,
                    }
                ]
            else:
                candidate["content"] = {"parts": self._merge_text(parts), "role": "model"}
            candidates.append(candidate)
        payload = self._envelope(model, rid, candidates=candidates, usageMetadata=plan["usage"])
        return web.json_response(payload, dumps=lambda o: orjson.dumps(o).decode())

    @staticmethod
    def _merge_text(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A whole answer's text in one part, as generateContent returns it."""
        out: list[dict[str, Any]] = []
        for part in parts:
            if set(part) == {"text"} and out and set(out[-1]) == {"text"}:
                out[-1] = {"text": out[-1]["text"] + part["text"]}
            else:
                out.append(dict(part))
        return out

    async def _stream(
        self, request: web.Request, model: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        plan = self._plan(model, body)
        rid = uuid.uuid4().hex[:20]
        frames: list[bytes] = []
        if model == "blocked":
            payload = self._envelope(
                model,
                rid,
                promptFeedback={"blockReason": "SAFETY"},
                usageMetadata={"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": 12},
            )
            frames = [orjson.dumps(payload)]
        else:
            steps = max(len(parts) for parts in plan["candidates"])
            for k in range(steps):
                last = k == steps - 1
                candidates = []
                for i, parts in enumerate(plan["candidates"]):
                    candidate: dict[str, Any] = {"index": i}
                    if k < len(parts) and not (model == "safety" and last):
                        candidate["content"] = {"parts": [parts[k]], "role": "model"}
                    if last:
                        candidate["finishReason"] = plan["finish"]
                    candidates.append(candidate)
                usage = {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS}
                if last:
                    usage = plan["usage"]
                frames.append(
                    orjson.dumps(
                        self._envelope(model, rid, candidates=candidates, usageMetadata=usage)
                    )
                )
        if request.query.get("alt") != "sse":  # the REST default: one JSON array
            return web.Response(
                body=b"[" + b",\r\n".join(frames) + b"]", content_type="application/json"
            )
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        try:
            for k, frame in enumerate(frames):
                if k == 2 and model in ("midstream-error", "truncated"):
                    if model == "midstream-error":
                        await resp.write(
                            _sse(
                                {
                                    "error": {
                                        "code": 503,
                                        "message": "The model is overloaded.",
                                        "status": "UNAVAILABLE",
                                    }
                                }
                            )
                        )
                    return resp
                if model == "malformed":
                    await resp.write(b"data: {not json\r\n\r\n")
                    return resp
                if model == "slow-stream":
                    await asyncio.sleep(0.02)
                await resp.write(b"data: " + frame + b"\r\n\r\n")
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled_streams += 1
            raise
        return resp

    # ------------------------------------------------------------------ embeddings

    def _embedding(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
        content = _f(request, "content") or {}
        texts = [p.get("text", "") for p in content.get("parts") or ()]
        if not texts:
            raise BadRequest("content.parts must not be empty")
        dimensions = _f(request, "outputDimensionality") or EMBED_DIMENSIONS
        return {"values": _vector("".join(texts), dimensions)}

    def _embed_one(self, model: str, body: dict[str, Any]) -> web.Response:
        return web.json_response({"embedding": self._embedding(model, body)})

    def _embed_batch(self, model: str, body: dict[str, Any]) -> web.Response:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("* BatchEmbedContentsRequest.requests: must not be empty")
        if len(requests) > 100:
            raise BadRequest("at most 100 requests can be in one batch")
        for r in requests:
            if r.get("model") != f"models/{model}":
                raise BadRequest(
                    f"Model {r.get('model')!r} in the request does not match models/{model}."
                )
        embeddings = [self._embedding(model, r) for r in requests]
        return web.json_response({"embeddings": embeddings})
