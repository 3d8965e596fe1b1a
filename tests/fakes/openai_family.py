"""OpenAI-compatible servers with their own extras, on top of the OpenAI fake:

- ``FakeLlamaCpp``: llama.cpp's server: `GET /health` (503 with its error body while
  `loading`), and its context-size error for the model ``context-overflow``.
- ``FakeTgi``: Hugging Face TGI's Messages API with TGI's error bodies
  (`{"error": "...", "error_type": ...}`) for the models ``validation`` (422),
  ``overloaded`` (429) and ``generation-error`` (424).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import FakeOpenAI


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class FakeLlamaCpp(FakeOpenAI):
    def __init__(self) -> None:
        super().__init__(api_key=None)
        self.loading = False

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_get("/health", self.health)
        return app

    async def health(self, _: web.Request) -> web.Response:
        if self.loading:
            return _json(
                503,
                {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
            )
        return _json(200, {"status": "ok"})

    async def _admit(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body, failure = await super()._admit(request)
        if failure is None and body.get("model") == "context-overflow":
            return body, _json(
                400,
                {
                    "error": {
                        "code": 400,
                        "type": "exceed_context_size_error",
                        "n_prompt_tokens": 5000,
                        "n_ctx": 4096,
                        "message": "the request exceeds the available context size, "
                        "try increasing it",
                    }
                },
            )
        return body, failure


class FakeTgi(FakeOpenAI):
    ERRORS: ClassVar[dict[str, tuple[int, str]]] = {
        "validation": (
            422,
            "Input validation error: `inputs` tokens + `max_new_tokens` must "
            "be <= 4096. Given: 5000 `inputs` tokens and 20 `max_new_tokens`",
        ),
        "overloaded": (429, "Model is overloaded"),
        "generation-error": (424, "Request failed during generation: CUDA out of memory"),
    }

    def __init__(self) -> None:
        super().__init__(api_key="hf_test_token")

    async def _admit(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body, failure = await super()._admit(request)
        scenario = self.ERRORS.get(str(body.get("model")))
        if failure is None and scenario:
            status, message = scenario
            kind = str(body["model"]).removesuffix("-error")
            return body, _json(status, {"error": message, "error_type": kind})
        return body, failure
