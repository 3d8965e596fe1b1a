"""The real Serve application on a real local Ray, driven with the official openai SDK."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx2
import openai
import pytest
import ray

from actors.facets import running_facet
from forge.db.schema import DEFAULT_PROJECT_ID
from tests.conftest import UPSTREAM_KEY
from tests.contract.cases import CASES

MSG = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize("model", ["gpt-test", "gpt-inproc"])  # proxy deployment / in gateway
def test_chat_completion_and_headers(platform, model):
    resp = platform.sdk().chat.completions.with_raw_response.create(model=model, messages=MSG)
    completion = resp.parse()
    assert completion.choices[0].message.content.startswith("alpha")
    request_id = resp.headers["x-request-id"]
    assert "," not in request_id  # exactly one id: the platform's, shared with Serve's logs
    assert float(resp.headers["x-forge-overhead-ms"]) >= 0
    [row] = platform.usage_rows({request_id})
    assert row["status"] == "ok" and row["completion_tokens"] == 8 and row["key_id"]


def test_a_client_cannot_choose_the_request_id_behind_serve(platform):
    """Serve's own middleware takes a client's x-request-id as its id; the platform's
    middleware outside it (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH) moves it aside."""
    client = platform.sdk()
    ids = set()
    for _ in range(3):
        resp = client.chat.completions.with_raw_response.create(
            model="gpt-inproc", messages=MSG, extra_headers={"x-request-id": "mine"}
        )
        assert resp.headers.get_list("x-request-id") != ["mine"]
        [request_id] = resp.headers.get_list("x-request-id")
        assert request_id.startswith("req_") and resp.headers["x-client-request-id"] == "mine"
        ids.add(request_id)
    rows = platform.usage_rows(ids)
    assert len(rows) == 3 and {r["client_request_id"] for r in rows} == {"mine"}
    too_long = httpx2.post(
        f"{platform.url}/v1/chat/completions",
        json={"model": "gpt-inproc", "messages": MSG},
        headers={"authorization": f"Bearer {platform.user_key}", "x-request-id": "x" * 600},
        timeout=30,
    )
    assert too_long.status_code == 400, too_long.text
    assert too_long.json()["error"]["code"] == "invalid_client_request_id"


@pytest.mark.parametrize("model", ["gpt-test", "gpt-inproc"])
def test_streaming_through_serve(platform, model):
    with platform.sdk().chat.completions.with_streaming_response.create(
        model=model, messages=MSG, stream=True, stream_options={"include_usage": True}
    ) as resp:
        request_id = resp.headers["x-request-id"]
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha bravo charlie delta echo foxtrot golf hotel"
    assert chunks[-1].usage.completion_tokens == 8
    [row] = platform.usage_rows({request_id})
    assert row["stream"] and row["ttft_ms"] is not None


def test_other_endpoints(platform):
    client = platform.sdk()
    assert client.completions.create(model="gpt-test", prompt="x", max_tokens=2).choices[0].text
    assert len(client.embeddings.create(model="embed-test", input="a").data[0].embedding) == 8
    # ~12 MB of JSON across the proxy deployment's gRPC hop (Serve's default cap: 4 MiB)
    big = client.embeddings.create(model="embed-test", input=["x"] * 64, dimensions=8192)
    assert len(big.data) == 64 and len(big.data[63].embedding) == 8192
    assert "gpt-test" in {m.id for m in client.models.list()}
    assert client.models.retrieve("embed-test").id == "embed-test"


def test_errors_cross_the_ray_hop_intact(platform):
    client = platform.sdk()
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="error-429", messages=MSG)
    assert err.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="error-500", messages=MSG)
    assert err.value.status_code == 502
    with pytest.raises(openai.AuthenticationError):
        platform.sdk(key="sk-forge-nope").models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=MSG)


def test_health(platform):
    assert httpx2.get(platform.url + "/health/live").json() == {"status": "ok"}
    ready = httpx2.get(platform.url + "/health/ready")
    assert ready.status_code == 200
    components = ready.json()["components"]
    expected = {
        "provider:fake",
        "provider:fake-inproc",
        "provider:local",
        "provider:local-embed",
        "actor:directory",
        "actor:usage-recorder",
        "usage:shipping",
        "accepting",
    }
    assert expected | {f"provider:{c.name}" for c in CASES} == set(components)
    assert all(components.values())


@pytest.mark.parametrize("model", ["slow-stream", "slow-stream-inproc"])
def test_client_disconnect_cancels_upstream_and_records_partial_usage(platform, fake_openai, model):
    cancelled_before = fake_openai.cancelled_streams
    completed_before = fake_openai.completed_streams
    headers = {"authorization": f"Bearer {platform.user_key}"}
    body = {"model": model, "messages": MSG, "stream": True}
    with httpx2.stream(
        "POST", platform.url + "/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        seen = 0
        for line in resp.iter_lines():
            seen += line.startswith("data: {")
            if seen == 4:
                break
    deadline = time.monotonic() + 10
    while fake_openai.cancelled_streams == cancelled_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_openai.cancelled_streams == cancelled_before + 1
    assert fake_openai.completed_streams == completed_before
    [row] = platform.usage_rows({request_id})
    assert row["status"] == "client_disconnected"
    assert 3 <= row["completion_tokens"] < 200 and row["usage_estimated"]


def test_killing_the_usage_recorder_loses_no_acknowledged_record(platform):
    """Requests keep flowing while the recorder is killed twice (ray.kill, then SIGKILL of
    its worker process); every request the gateway answered must end up in the database."""
    recorder = running_facet("usage").handle  # the control plane that hosts it

    async def burst(n: int, kill) -> list[str]:
        client = platform.async_sdk()

        async def one() -> str:
            resp = await client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=MSG
            )
            return resp.headers["x-request-id"]

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0.15)
        kill()
        ids = await asyncio.gather(*tasks)
        await client.close()
        return ids

    def sigkill() -> None:
        deadline = time.monotonic() + 30
        while True:  # the recorder may still be restarting from the first kill
            try:
                pid = ray.get(recorder.__ray_call__.remote(lambda self: os.getpid()), timeout=10)
                break
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

    ids: list[str] = []
    ids += asyncio.run(burst(60, lambda: ray.kill(recorder, no_restart=False)))
    ids += asyncio.run(burst(60, sigkill))
    assert len(set(ids)) == 120
    rows = platform.usage_rows(set(ids), timeout_s=60)
    assert len(rows) == 120
    assert {r["status"] for r in rows} == {"ok"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_provider_type_through_its_proxy_deployment(platform, case):
    client = platform.sdk()
    text = client.chat.completions.create(model=f"{case.name}-ok", messages=MSG, max_tokens=50)
    assert text.choices[0].message.content and text.model == f"{case.name}-ok"
    stream = client.chat.completions.create(
        model=f"{case.name}-ok",
        messages=MSG,
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == (
        text.choices[0].message.content.split()
    )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=f"{case.name}-error-429", messages=MSG)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=f"{case.name}-midstream-error", messages=MSG, stream=True
        ):
            pass


def test_anthropic_sdk_through_serve(platform):
    import anthropic

    client = anthropic.Anthropic(api_key=platform.user_key, base_url=platform.url, max_retries=0)
    for model in ("gpt-test", "anthropic-ok"):  # an OpenAI-family model and an Anthropic one
        msg = client.messages.create(
            model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].text and msg.model == model and msg.stop_reason == "end_turn"
    with client.messages.stream(
        model="gpt-inproc", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "alpha bravo charlie delta echo foxtrot golf hotel"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_self_hosted_tiny_model_through_its_deployment(platform):
    client = platform.sdk()
    reply = client.chat.completions.create(
        model="tiny-llama",
        max_tokens=6,
        temperature=0,
        messages=[{"role": "user", "content": "def f():"}],
    )
    assert reply.usage.completion_tokens <= 6 and reply.choices[0].finish_reason
    chunks = list(
        client.chat.completions.create(
            model="tiny-llama",
            temperature=0,
            max_tokens=6,
            stream=True,
            messages=[{"role": "user", "content": "def f():"}],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content


def test_local_embeddings_through_their_deployment(platform):
    out = platform.sdk().embeddings.create(model="all-minilm-l6-v2", input=["a", "b"])
    assert [len(d.embedding) for d in out.data] == [384, 384] and out.usage.prompt_tokens > 0


def test_a_gateway_replica_sets_up_its_paths_to_providers_as_it_starts(platform):
    """The first request through a replica used to pay ~86 ms setting up the handle's
    channel to a provider deployment, the first key lookup and the rate limiter's first
    grant (gateway/warm.py). Only
    the start-up warm-up fills `warm`; the readiness checks call through other methods."""
    expected = {
        f"provider:{p.name}"
        for p in platform.config.providers
        if p.placement == "deployment" and not p.scales_to_zero
    } | {"actor:directory", "actor:rate-limiter", "actor:budget-ledger", "actor:fine-tuning"}
    deadline = time.monotonic() + 60
    while True:
        warm = httpx2.get(platform.url + "/health/ready", timeout=10).json()["warm"]
        if set(warm) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(warm) == expected and all(warm.values()), warm


def test_a_stored_response_is_retrievable_through_serve(platform):
    """Each gateway replica opens its own pool on the platform's database (docs: "Stored
    responses"): a create, a continuation, a retrieve and a delete through the real app."""
    client = platform.sdk()
    first = client.responses.create(model="gpt-test", input="remember this")
    assert first.store and client.responses.retrieve(first.id).id == first.id
    second = client.responses.create(
        model="gpt-test", input="and this", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert [i.id for i in client.responses.input_items.list(second.id).data]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_key_limit_is_enforced_by_the_rate_limiter_actor_behind_serve(platform):
    """Through Serve and the real RateLimiter actor: a key limited to 120 requests a
    minute (a burst of 2) is answered with OpenAI's headers, then refused with a 429."""
    admin = {"authorization": f"Bearer {platform.admin_key}"}
    made = httpx2.post(
        platform.url + "/admin/keys", headers=admin, json={"name": "limited"}, timeout=30
    )
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["info"]["id"]
    limit = {"scope": "key", "subject_id": key_id, "max_requests_per_1_minute": 120}
    set_ = httpx2.put(platform.url + "/admin/rate_limits", headers=admin, json=limit, timeout=30)
    assert set_.status_code == 200, set_.text
    client = platform.sdk(key)
    seen = []
    with pytest.raises(openai.RateLimitError) as err:
        for _ in range(10):
            raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=MSG)
            seen.append(raw.headers["x-ratelimit-limit-requests"])
    assert seen and set(seen) == {"120"} and len(seen) <= 3
    refused = err.value.response
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1


def test_a_budget_is_enforced_by_the_budget_ledger_actor_behind_serve(platform):
    """Through Serve and the real BudgetLedger actor: a key with a budget of 2 requests
    a day makes 2, then gets insufficient_quota (not retried by the SDK)."""
    admin = {"authorization": f"Bearer {platform.admin_key}"}
    made = httpx2.post(
        platform.url + "/admin/keys", headers=admin, json={"name": "budgeted"}, timeout=30
    )
    key, key_id = made.json()["key"], made.json()["info"]["id"]
    rule = {"scope": "key", "subject_id": key_id, "period": "day", "unit": "requests", "limit": 2}
    set_ = httpx2.post(platform.url + "/admin/budgets", headers=admin, json=rule, timeout=30)
    assert set_.status_code == 201, set_.text
    client = platform.sdk(key)
    for _ in range(2):
        client.chat.completions.create(model="gpt-test", messages=MSG)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-test", messages=MSG)
    assert err.value.response.json()["error"]["code"] == "insufficient_quota"
    assert err.value.response.headers["x-should-retry"] == "false"


def test_a_projects_own_provider_key_crosses_the_ray_hop_to_its_provider(platform, fake_openai):
    """Bring your own key behind Serve: the default project's own key for the `fake`
    provider (a ProviderProxy deployment) goes out instead of the platform's; a wrong
    one is the project's 401 to fix; removed, the platform's key is back."""
    admin = {"authorization": f"Bearer {platform.admin_key}"}
    path = f"{platform.url}/v1/organization/projects/{DEFAULT_PROJECT_ID}/provider_credentials"
    client = platform.sdk(platform.user_key)
    made = httpx2.post(
        path, headers=admin, json={"provider": "fake", "api_key": "sk-wrong-own-key"}, timeout=30
    )
    assert made.status_code == 200, made.text
    try:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="gpt-test", messages=MSG)
        assert refused.value.code == "provider_credential_rejected"
        assert fake_openai.requests[-1]["headers"]["Authorization"] == "Bearer sk-wrong-own-key"
        right = {"provider": "fake", "api_key": UPSTREAM_KEY}
        assert httpx2.post(path, headers=admin, json=right, timeout=30).status_code == 200
        stream = client.chat.completions.create(model="gpt-test", messages=MSG, stream=True)
        assert [c for c in stream]
    finally:
        gone = httpx2.delete(f"{path}/{made.json()['id']}", headers=admin, timeout=30)
        assert gone.status_code == 200, gone.text
    assert client.chat.completions.create(model="gpt-test", messages=MSG).choices


def test_metrics_and_shared_breakers_through_the_actors(platform):
    """/metrics behind Serve: traffic counted by the usage recorder actor, a breaker that
    the gateway opened read back from the board in the RateLimiter actor."""
    from prometheus_client.parser import text_string_to_metric_families

    from forge.db.engine import make_engine, make_sessionmaker
    from forge.keys import KeyStore

    async def operator_key() -> str:
        engine = make_engine(platform.db_url)
        try:
            made = await KeyStore(make_sessionmaker(engine)).create_key("ops", role="platform")
            return made.key
        finally:
            await engine.dispose()

    ops = {"authorization": f"Bearer {asyncio.run(operator_key())}"}
    client = platform.sdk()
    for _ in range(4):  # 2 tries each on the failing primary: the 5th failure opens it
        raw = client.chat.completions.with_raw_response.create(model="flaky-503", messages=MSG)
        assert "target=gpt-test" in raw.headers["x-forge-route"]
    assert "skipped=flaky-503(cooling down)" in raw.headers["x-forge-route"]

    def scrape() -> dict[tuple[str, frozenset], float]:
        resp = httpx2.get(platform.url + "/metrics", headers=ops, timeout=30)
        assert resp.status_code == 200, resp.text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text)
            for s in family.samples
        }

    deadline = time.monotonic() + 20
    while True:
        m = scrape()
        served = sum(
            v
            for (n, ls), v in m.items()
            if n == "forge_requests_total" and ("model", "gpt-test") in ls
        )
        opened = m.get(("forge_breaker_open", frozenset({("target", "flaky-503")})))
        if (served >= 3 and opened == 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served >= 3 and opened == 1
    assert m[("forge_component_up", frozenset({("component", "actor:usage-recorder")}))] == 1


def test_a_person_signs_in_and_uses_the_admin_api_through_serve(platform, ray_cluster):
    """Sessions behind Serve and HAProxy: the mailed link (the mail folder under the
    data dir), the Set-Cookie headers, the cookie and CSRF token back on the Admin API."""
    from email import message_from_bytes, policy

    url, email, password = platform.url, "ivy@example.com", "ivy's long passphrase 42"
    admin = {"authorization": f"Bearer {platform.admin_key}"}
    invite = httpx2.post(
        f"{url}/v1/organization/invites", headers=admin, json={"email": email, "role": "owner"}
    )
    assert invite.status_code == 200, invite.text
    accepted = httpx2.post(
        f"{url}/v1/organization/invites/accept", json={"token": invite.json()["token"]}
    )
    assert accepted.status_code == 200, accepted.text
    assert (
        httpx2.post(f"{url}/auth/register", json={"email": email, "password": password}).status_code
        == 202
    )

    def link() -> str | None:
        for path in sorted((ray_cluster / "mail").glob("*.eml")):
            mail = message_from_bytes(path.read_bytes(), policy=policy.default)
            if mail["To"] == email and "token=" in mail.get_content():
                return mail.get_content().split("token=")[1].split()[0]
        return None

    deadline = time.monotonic() + 10
    while (token := link()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert token, "no verification mail"
    assert httpx2.post(f"{url}/auth/verify", json={"token": token}).status_code == 200
    signed = httpx2.post(f"{url}/auth/login", json={"email": email, "password": password})
    assert signed.status_code == 200, signed.text
    cookies = signed.headers.get_list("set-cookie")
    assert any(
        c.startswith("forge_session=") and "Secure" in c and "HttpOnly" in c for c in cookies
    )
    session = {"cookie": f"forge_session={signed.cookies['forge_session']}"}
    users = httpx2.get(f"{url}/v1/organization/users", headers=session)
    assert users.status_code == 200 and email in users.text
    made = httpx2.post(
        f"{url}/v1/organization/projects",
        json={"name": "ivy's"},
        headers={**session, "x-csrf-token": signed.json()["csrf_token"]},
    )
    assert made.status_code == 200, made.text
