"""The gateway's HTTP behaviour, in-process: OpenAI SDK round trips and every bad input."""

from __future__ import annotations

import json

import openai
import pytest

from tests.unit.harness import in_process_gateway, platform_config, usage_rows

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    config = platform_config(fake_openai.base_url, max_body_bytes=4096)
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


async def test_chat_completion_round_trip(gw):
    client = gw.sdk()
    resp = await client.chat.completions.with_raw_response.create(model="gpt-test", messages=MSG)
    completion = resp.parse()
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.content.startswith("alpha bravo")
    assert completion.usage.completion_tokens == 8
    assert resp.headers["x-request-id"].startswith("req_")
    rows = await usage_rows(gw)
    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"] == resp.headers["x-request-id"]
    assert (row["model"], row["provider"], row["provider_model"]) == (
        "gpt-test",
        "fake",
        "gpt-fake",
    )
    assert row["completion_tokens"] == 8 and row["status"] == "ok" and not row["usage_estimated"]
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 1 + 8 * 2) / 1e6)


async def test_chat_stream_with_usage(gw):
    client = gw.sdk()
    stream = await client.chat.completions.create(
        model="gpt-test", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha bravo charlie delta echo foxtrot golf hotel"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    rows = await usage_rows(gw)
    assert rows[0]["stream"] and rows[0]["completion_tokens"] == 8 and rows[0]["ttft_ms"] > 0


async def test_stream_without_usage_hides_the_usage_chunk_yet_records_it(gw):
    stream = await gw.sdk().chat.completions.create(model="gpt-test", messages=MSG, stream=True)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    rows = await usage_rows(gw)
    assert rows[0]["completion_tokens"] == 8 and not rows[0]["usage_estimated"]


async def test_parameters_and_unknown_fields_pass_through(gw, fake_openai):
    tools = [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ]
    completion = await gw.sdk().chat.completions.create(
        model="gpt-test",
        messages=MSG,
        n=2,
        stop=["golf"],
        temperature=0.3,
        top_p=0.9,
        max_completion_tokens=5,
        seed=7,
        user="u1",
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        extra_body={"vendor_knob": {"x": 1}},
    )
    sent = fake_openai.requests[-1]["body"]
    assert sent["model"] == "gpt-fake"
    assert sent["vendor_knob"] == {"x": 1}
    for field in (
        "n",
        "stop",
        "temperature",
        "top_p",
        "max_completion_tokens",
        "seed",
        "user",
        "tools",
        "tool_choice",
        "response_format",
    ):
        assert field in sent, field
    assert len(completion.choices) == 2
    assert completion.choices[0].message.tool_calls[0].function.name == "weather"
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_completions_and_embeddings(gw):
    client = gw.sdk()
    c = await client.completions.create(model="gpt-test", prompt="Say", max_tokens=3)
    assert c.choices[0].text == "alpha bravo charlie" and c.choices[0].finish_reason == "length"
    e = await client.embeddings.create(model="embed-test", input=["a", "b"], dimensions=4)
    assert [len(d.embedding) for d in e.data] == [4, 4]
    b64 = await client.embeddings.create(model="embed-test", input="a", encoding_format="base64")
    assert isinstance(b64.data[0].embedding, str)
    rows = await usage_rows(gw)
    assert sorted(r["endpoint"] for r in rows) == ["completions", "embeddings", "embeddings"]


async def test_models_list_and_get(gw):
    client = gw.sdk()
    ids = [m.id async for m in client.models.list()]
    assert "gpt-test" in ids and "embed-test" in ids
    assert (await client.models.retrieve("gpt-test")).owned_by == "fake"
    with pytest.raises(openai.NotFoundError) as err:
        await client.models.retrieve("nope")
    assert err.value.body["code"] == "model_not_found"


async def test_fallback_answers_when_the_first_target_fails(gw):
    completion = await gw.sdk().chat.completions.create(model="flaky", messages=MSG)
    assert completion.model == "gpt-test"
    rows = await usage_rows(gw)
    assert len(rows) == 1 and rows[0]["model"] == "gpt-test"


@pytest.mark.parametrize("status", ["429", "503"])
@pytest.mark.parametrize("stream", [False, True])
async def test_fallback_on_rate_limits_and_unavailability_also_for_streams(gw, status, stream):
    """Disabling fallback on 429, on 503, or on streams before their first token left
    every test green; only a non-streamed 500 was covered."""
    client = gw.sdk()
    if stream:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model=f"flaky-{status}", messages=MSG, stream=True
            )
        ]
        assert chunks[0].model == "gpt-test"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("alpha bravo")
    else:
        completion = await client.chat.completions.create(model=f"flaky-{status}", messages=MSG)
        assert completion.model == "gpt-test"
    [row] = await usage_rows(gw)
    assert (row["model"], row["status"], row["stream"]) == ("gpt-test", "ok", stream)


async def test_no_fallback_on_the_clients_own_mistake(gw):
    """A 400 would be a 400 on any model: it is answered, not retried elsewhere."""
    with pytest.raises(openai.BadRequestError):
        await gw.sdk().chat.completions.create(model="flaky-400", messages=MSG)
    [row] = await usage_rows(gw)
    assert (row["model"], row["http_status"]) == ("flaky-400", 400)


# ----------------------------------------------------------------------------- bad input


def error_of(resp):
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("key", [None, "sk-forge-wrong", "Basic abc"])
async def test_missing_or_invalid_key_is_401(gw, key):
    headers = {} if key is None else {"authorization": key if " " in key else f"Bearer {key}"}
    resp = await gw.http.post(
        "/v1/chat/completions", json={"model": "gpt-test", "messages": MSG}, headers=headers
    )
    assert resp.status_code == 401
    assert error_of(resp)["type"] == "authentication_error"
    assert resp.headers["x-request-id"]


async def test_revoked_key_is_401_at_once(gw):
    created = await gw.keys.create_key("temp")
    client = gw.sdk(created.key)
    await client.models.list()
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    resp = await gw.http.delete(f"/admin/keys/{created.info.id}", headers=admin)
    assert resp.status_code == 200 and resp.json()["revoked_at"]
    with pytest.raises(openai.AuthenticationError) as err:
        await client.models.list()
    assert err.value.body["code"] == "revoked_api_key"


async def test_admin_routes_need_admin(gw):
    user = {"authorization": f"Bearer {gw.user_key}"}
    resp = await gw.http.post("/admin/keys", json={"name": "x"}, headers=user)
    assert resp.status_code == 403 and error_of(resp)["type"] == "permission_error"
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    resp = await gw.http.post("/admin/keys", json={"name": "x"}, headers=admin)
    assert resp.status_code == 201 and resp.json()["key"].startswith("sk-forge-")
    resp = await gw.http.delete("/admin/keys/does-not-exist", headers=admin)
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-test"}, "messages"),
        ({"model": "gpt-test", "messages": "hi"}, "messages"),
        (
            {"model": "gpt-test", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        ({"model": "gpt-test", "messages": MSG, "temperature": "hot"}, "temperature"),
        ({"model": "gpt-test", "messages": MSG, "temperature": 9}, "temperature"),
        ({"model": "gpt-test", "messages": MSG, "n": 0}, "n"),
        ({"model": 5, "messages": MSG}, "model"),
        ({"messages": MSG}, "model"),
    ],
)
async def test_wrong_types_are_400_naming_the_field(gw, body, param):
    resp = await gw.http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {gw.user_key}"}
    )
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["type"] == "invalid_request_error" and err["param"] == param


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"text"'])
async def test_malformed_json_is_400(gw, raw):
    resp = await gw.http.post(
        "/v1/chat/completions",
        content=raw,
        headers={"authorization": f"Bearer {gw.user_key}", "content-type": "application/json"},
    )
    assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_json"


async def test_body_over_the_limit_is_413(gw):
    big = [{"role": "user", "content": "x" * 5000}]
    resp = await gw.http.post(
        "/v1/chat/completions",
        json={"model": "gpt-test", "messages": big},
        headers={"authorization": f"Bearer {gw.user_key}"},
    )
    assert resp.status_code == 413 and error_of(resp)["code"] == "request_too_large"


async def test_unknown_model_is_404(gw):
    with pytest.raises(openai.NotFoundError) as err:
        await gw.sdk().chat.completions.create(model="no-such-model", messages=MSG)
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"


async def test_unknown_route_is_404_in_openai_shape(gw):
    resp = await gw.http.get("/v1/nothing-here", headers={"authorization": f"Bearer {gw.user_key}"})
    assert resp.status_code == 404 and error_of(resp)["code"] == "unknown_url"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("error-429", 429, "rate_limit_exceeded"),
        ("error-500", 502, "upstream_error"),
        ("error-503", 503, "upstream_unavailable"),
        ("error-400", 400, "invalid_value"),
        ("drop", 502, "upstream_unreachable"),
        ("hang", 504, "upstream_timeout"),
        ("malformed", 502, "upstream_malformed_response"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_failures_map_to_status(gw, model, status, code, stream):
    resp = await gw.http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": MSG, "stream": stream},
        headers={"authorization": f"Bearer {gw.user_key}"},
    )
    assert resp.status_code == status, resp.text
    assert error_of(resp)["code"] == code
    if status == 429:
        assert resp.headers["retry-after"] == "7"
    rows = await usage_rows(gw)
    assert [(r["status"], r["http_status"]) for r in rows] == [("error", status)]


@pytest.mark.parametrize("model", ["midstream-drop", "midstream-error", "truncated"])
async def test_provider_failing_mid_stream_sends_error_event_then_done(gw, model):
    resp = await gw.http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": MSG, "stream": True},
        headers={"authorization": f"Bearer {gw.user_key}"},
    )
    assert resp.status_code == 200
    events = [line for line in resp.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2]
    assert sum('"choices"' in e for e in events) >= 2
    if model == "midstream-drop":  # reached, then cut: not "could not be reached"
        error = json.loads(events[-2].removeprefix("data: "))["error"]
        assert error["code"] == "upstream_stream_interrupted", error
        assert "broke off after 2 content chunks" in error["message"]
    with pytest.raises(openai.APIError):
        stream = await gw.sdk().chat.completions.create(model=model, messages=MSG, stream=True)
        async for _ in stream:
            pass
    rows = await usage_rows(gw)
    assert {r["status"] for r in rows} == {"error"}
    assert all(r["completion_tokens"] >= 2 for r in rows)


async def test_failing_usage_shipments_make_the_replica_unready_until_they_recover(
    fake_openai, sqlite_engine
):
    """With the ledger's table gone, answered requests pile up unrecorded: readiness says
    so (and why) after ``unready_after_s``, and the records are shipped once it is back."""
    import asyncio

    from forge.config import UsageConfig
    from forge.db.schema import UsageRecord

    config = platform_config(fake_openai.base_url)
    config = config.model_copy(update={"usage": UsageConfig(unready_after_s=0.3)})
    async with in_process_gateway(config, sqlite_engine) as gw:
        assert (await gw.http.get("/health/live")).json() == {"status": "ok"}
        ready = await gw.http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["components"]["usage:shipping"]
        async with sqlite_engine.begin() as conn:
            await conn.run_sync(UsageRecord.__table__.drop)
        resp = await gw.sdk().chat.completions.with_raw_response.create(
            model="gpt-test", messages=MSG
        )
        for _ in range(100):
            not_ready = await gw.http.get("/health/ready")
            if not_ready.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert not_ready.status_code == 503
        body = not_ready.json()
        assert body["components"]["usage:shipping"] is False
        assert body["usage"]["pending"] == 1 and "no such table" in body["usage"]["last_error"]
        async with sqlite_engine.begin() as conn:
            await conn.run_sync(UsageRecord.__table__.create)
        rows = await usage_rows(gw)
        assert [r["request_id"] for r in rows] == [resp.headers["x-request-id"]]
        assert (await gw.http.get("/health/ready")).status_code == 200


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "see"},
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1]",
        ),
    ],
)
async def test_what_a_model_cannot_serve_is_400_before_the_upstream(gw, fake_openai, extra, param):
    before = len(fake_openai.requests)
    body = {"model": "text-only", "messages": MSG, **extra}
    resp = await gw.http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {gw.user_key}"}
    )
    assert resp.status_code == 400
    assert error_of(resp)["param"] == param and error_of(resp)["code"] == "unsupported_parameter"
    assert len(fake_openai.requests) == before


async def test_the_request_id_is_the_platforms_and_the_clients_id_is_kept_beside_it(gw):
    """Three requests sent with one x-request-id used to share one usage record (two of
    them free). Each now gets the platform's own id and record; the client's id is
    stored beside it and echoed back."""
    client = gw.sdk()
    ids = []
    for header in ("x-request-id", "x-request-id", "X-Client-Request-Id"):
        resp = await client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=MSG, extra_headers={header: "trace-7"}
        )
        ids.append(resp.headers["x-request-id"])
        assert resp.headers["x-client-request-id"] == "trace-7"
    assert len(set(ids)) == 3 and all(i.startswith("req_") and len(i) == 36 for i in ids)
    rows = await usage_rows(gw)
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert {r["client_request_id"] for r in rows} == {"trace-7"}


async def test_a_client_request_id_is_length_checked(gw):
    long_id = "c" * 513
    resp = await gw.http.post(
        "/v1/chat/completions",
        json={"model": "gpt-test", "messages": MSG},
        headers={"authorization": f"Bearer {gw.user_key}", "x-request-id": long_id},
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "invalid_client_request_id" and error["param"] == "X-Client-Request-Id"
    assert resp.headers["x-request-id"].startswith("req_")
    assert "x-client-request-id" not in resp.headers
    ok = await gw.sdk().chat.completions.with_raw_response.create(
        model="gpt-test", messages=MSG, extra_headers={"X-Client-Request-Id": "c" * 512}
    )
    assert ok.headers["x-client-request-id"] == "c" * 512
    assert [r["client_request_id"] for r in await usage_rows(gw)] == ["c" * 512]


async def test_model_names_are_bounded(gw):
    """1 MB model names from a valid key grew the gateway and the directory for good."""
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model="m" * 201, messages=MSG)
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError):
        await gw.sdk().embeddings.create(model="m" * 1_000, input="x")


async def test_the_content_type_does_not_decide_how_a_body_is_read(gw):
    """Decided: a JSON body is JSON whatever its Content-Type (curl -d sends form
    encoding); a body that is not JSON gets a 400 naming the header it came with."""
    auth = {"authorization": f"Bearer {gw.user_key}"}
    body = json.dumps({"model": "gpt-test", "messages": MSG})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**auth, **({"content-type": content_type} if content_type else {})}
        ok = await gw.http.post("/v1/chat/completions", content=body, headers=headers)
        assert ok.status_code == 200, (content_type, ok.text)
    form = await gw.http.post("/v1/chat/completions", data={"model": "gpt-test"}, headers=auth)
    assert form.status_code == 400
    error = form.json()["error"]
    assert error["code"] == "invalid_json"
    assert "application/x-www-form-urlencoded" in error["message"]


async def test_a_drain_refuses_new_requests_and_ends_open_streams_with_an_error_event(gw):
    """SIGTERM used to cut streams ~0.2 s in; a drain lets them run to the timeout,
    then ends them with an error event and [DONE], and records why. (Over a real HTTP
    server: httpx's ASGI transport would buffer the whole stream.)"""
    import asyncio

    import httpx2
    import uvicorn

    from tests.fakes.server import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(gw.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    headers = {"authorization": f"Bearer {gw.user_key}"}
    body = {"model": "slow-stream", "messages": MSG, "stream": True}
    try:
        async with (
            httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
        ):
            lines = r.aiter_lines()
            first = [line async for line in _take(lines, 3)]
            assert all(line.startswith("data: {") for line in first)
            assert gw.runtime.drain.in_flight == 1
            gw.runtime.drain.begin(timeout_s=0.3)
            refused = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-test", "messages": MSG},
                headers=headers,
            )
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "server_shutting_down"
            ready = await http.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["components"]["accepting"] is False
            rest = [line async for line in lines if line]
    finally:
        server.should_exit = True
        await serving
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2].removeprefix("data: "))["error"]["code"] == "server_shutting_down"
    assert len(rest) < 150  # ended at the timeout, not run to its 200 chunks
    assert gw.runtime.drain.in_flight == 0
    [row] = [r for r in await usage_rows(gw) if r["model"] == "slow-stream"]
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "error",
        503,
        "server_shutting_down",
    )


async def _take(lines, n):
    async for line in lines:
        if line:
            yield line
            n -= 1
            if n == 0:
                return


@pytest.mark.parametrize("stream", [False, True])
async def test_the_overhead_header_leaves_the_providers_own_time_out(gw, fake_openai, stream):
    """A 300 ms upstream: the request takes longer than that, the platform's own share
    stays far below it (a header clamped at 0 used to be checked only for >= 0)."""
    import time

    fake_openai.latency_ms = 300
    try:
        t0 = time.perf_counter()
        async with gw.sdk().chat.completions.with_streaming_response.create(
            model="gpt-test", messages=MSG, stream=stream
        ) as resp:
            overhead = float(resp.headers["x-forge-overhead-ms"])
            await resp.read()
        elapsed_ms = (time.perf_counter() - t0) * 1000
    finally:
        fake_openai.latency_ms = 0
    assert elapsed_ms >= 300
    assert 0 < overhead < 300, overhead  # the upstream's 300 ms are not in it


async def test_keys_never_reach_the_logs(gw, caplog):
    """Platform keys (good, revoked and wrong) and the provider's key are never logged,
    whatever fails."""
    import logging

    from tests.conftest import UPSTREAM_KEY

    caplog.set_level(logging.DEBUG)
    wrong = "sk-forge-" + "w" * 43
    client = gw.sdk()
    await client.chat.completions.create(model="gpt-test", messages=MSG)
    for model in ("error-500", "error-401", "malformed", "drop"):
        with pytest.raises(openai.APIError):
            await client.chat.completions.create(model=model, messages=MSG)
    with pytest.raises(openai.AuthenticationError):
        await gw.sdk(wrong).chat.completions.create(model="gpt-test", messages=MSG)
    await usage_rows(gw)
    assert caplog.records, "nothing was logged at all: the test would prove nothing"
    for secret in (gw.user_key, gw.admin_key, wrong, UPSTREAM_KEY):
        assert secret not in caplog.text
