"""A minimal OpenAI upstream with known timing, for benchmarks (aiohttp: cheap per request,
since it sits on the direct baseline path too).

    python -m bench.mock_upstream --port 8001 --latency-ms 50 --tokens 20 --inter-token-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web


def make_app(latency_ms: float, tokens: int, inter_token_ms: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        n = min(tokens, int(body.get("max_tokens") or body.get("max_completion_tokens") or tokens))
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        base = {"id": "chatcmpl-bench", "created": int(time.time()), "model": body["model"]}
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if not body.get("stream"):
            return web.Response(
                body=orjson.dumps(
                    {
                        **base,
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "tok " * n},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": usage,
                    }
                ),
                content_type="application/json",
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {**base, "object": "chat.completion.chunk"}
        for i in range(n):
            if i and inter_token_ms:
                await asyncio.sleep(inter_token_ms / 1000)
            delta = {"role": "assistant", "content": "tok "} if i == 0 else {"content": "tok "}
            await resp.write(
                b"data: "
                + orjson.dumps(
                    {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                )
                + b"\n\n"
            )
        await resp.write(
            b"data: "
            + orjson.dumps(
                {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            )
            + b"\n\n"
        )
        if include_usage:
            await resp.write(
                b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}) + b"\n\n"
            )
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "gpt-mock", "object": "model", "created": 0, "owned_by": "bench"}],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--inter-token-ms", type=float, default=0)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        make_app(a.latency_ms, a.tokens, a.inter_token_ms),
        host="127.0.0.1",
        port=a.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
