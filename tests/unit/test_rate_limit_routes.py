"""Rate limits on the gateway (in-process, SQLite, the real limiter and leases): set
through OpenAI's project rate-limit routes and ``/admin/rate_limits``, enforced on the
inference routes with OpenAI's headers, and refused when malformed."""

from __future__ import annotations

import openai
import pytest

from forge.limits.admission import duration, estimated_tokens
from tests.unit.harness import in_process_gateway, platform_config, usage_rows
from tests.unit.test_tenancy import call, conforms, populated

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
BASE = "/v1/organization/projects"


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


def test_reset_durations_read_like_openais():
    assert [duration(s) for s in (0.0191, 1.0, 6.5, 360.0, 3723.5)] == [
        "20ms",
        "1s",
        "6.5s",
        "6m0s",
        "1h2m3.5s",
    ]
    assert estimated_tokens({"max_tokens": 50}, 400) == 150
    assert estimated_tokens({"max_completion_tokens": 7, "max_tokens": 50}, 4) == 8


async def test_project_limits_list_update_and_match_openais_schemas(gw):
    org = await populated(gw, "limits-spec")
    listed = conforms(
        "ProjectRateLimitListResponse",
        await call(gw, "GET", f"{BASE}/{org.project}/rate_limits", org.admin),
    )
    by_model = {r["model"]: r for r in listed["data"]}
    assert by_model["gpt-test"]["id"] == "rl-gpt-test"
    # a professional organisation's plan: 5,000 requests and 2M tokens a minute per model
    assert by_model["gpt-test"]["max_requests_per_1_minute"] == 5_000
    assert by_model["gpt-test"]["max_tokens_per_1_minute"] == 2_000_000
    updated = conforms(
        "ProjectRateLimit",
        await call(
            gw,
            "POST",
            f"{BASE}/{org.project}/rate_limits/rl-gpt-test",
            org.admin,
            json={"max_requests_per_1_minute": 120, "max_requests_per_1_day": 1000},
        ),
    )
    assert updated["max_requests_per_1_minute"] == 120
    assert updated["max_tokens_per_1_minute"] == 2_000_000  # left as it was
    assert updated["max_requests_per_1_day"] == 1000
    page = await call(
        gw, "GET", f"{BASE}/{org.project}/rate_limits?limit=2&after=rl-gpt-test", org.admin
    )
    assert page.json()["data"][0]["id"] == "rl-embed-test" and page.json()["has_more"]
    cleared = await call(
        gw,
        "POST",
        f"{BASE}/{org.project}/rate_limits/rl-gpt-test",
        org.admin,
        json={"max_requests_per_1_minute": None},
    )
    assert cleared.json()["max_requests_per_1_minute"] == 5_000  # the organisation's again


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_requests_per_1_minute": -1}, "max_requests_per_1_minute"),
        ({"max_tokens_per_1_minute": "lots"}, "max_tokens_per_1_minute"),
        ({"max_requests_per_1_minute": 1.5}, "max_requests_per_1_minute"),
        ({"max_requests_per_1_minute": True}, "max_requests_per_1_minute"),
        ({"max_requests_per_1_minute": 2**40}, "max_requests_per_1_minute"),
        ({"max_images_per_1_minute": 5}, "max_images_per_1_minute"),
        ({"max_requests_per_1_minute": 5_001}, "max_requests_per_1_minute"),  # above the org's
    ],
)
async def test_a_bad_limit_is_a_400_naming_its_field(gw, body, param):
    org = await populated(gw, f"bad-limit-{param}-{len(str(body))}")
    resp = await call(
        gw, "POST", f"{BASE}/{org.project}/rate_limits/rl-gpt-test", org.admin, json=body
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


async def test_unknown_ids_and_cursors_and_another_organisations_project(gw):
    a, b = await populated(gw, "limits-a"), await populated(gw, "limits-b")
    path = f"{BASE}/{a.project}/rate_limits"
    assert (await call(gw, "POST", f"{path}/rl-nope", a.admin, json={})).status_code == 404
    assert (await call(gw, "POST", f"{path}/gpt-test", a.admin, json={})).status_code == 404
    assert (await call(gw, "GET", f"{path}?after=rl-nope", a.admin)).status_code == 400
    assert (await call(gw, "GET", f"{path}?limit=0", a.admin)).status_code == 400
    theirs = await call(gw, "GET", path, b.admin)
    assert theirs.status_code == 404
    changed = await call(
        gw, "POST", f"{path}/rl-gpt-test", b.admin, json={"max_requests_per_1_minute": 1}
    )
    assert changed.status_code == 404
    # and through /admin/rate_limits: B's admin can neither read nor set A's project's
    for method, kw in (
        ("GET", {"params": {"scope": "project", "subject_id": a.project}}),
        (
            "PUT",
            {"json": {"scope": "project", "subject_id": a.project, "max_requests_per_1_day": 1}},
        ),
        ("PUT", {"json": {"scope": "key", "subject_id": a.user_id, "max_requests_per_1_day": 1}}),
    ):
        resp = await call(gw, method, "/admin/rate_limits", b.admin, **kw)
        assert resp.status_code == 404, resp.text


async def test_an_admin_cannot_raise_its_own_organisations_limits_but_the_operator_can(gw):
    org = await populated(gw, "limits-raise")
    body = {
        "scope": "organization",
        "subject_id": org.id,
        "model": "gpt-test",
        "max_requests_per_1_minute": 1_000_000,
    }
    refused = await call(gw, "PUT", "/admin/rate_limits", org.admin, json=body)
    assert refused.status_code == 403
    done = await call(gw, "PUT", "/admin/rate_limits", gw.operator_key, json=body)
    assert done.status_code == 200, done.text
    listed = await call(gw, "GET", f"{BASE}/{org.project}/rate_limits", org.admin)
    by_model = {r["model"]: r for r in listed.json()["data"]}
    assert by_model["gpt-test"]["max_requests_per_1_minute"] == 1_000_000
    assert by_model["embed-test"]["max_requests_per_1_minute"] == 5_000  # the plan's
    bad_model = {**body, "model": "no-such-model"}
    assert (
        await call(gw, "PUT", "/admin/rate_limits", gw.operator_key, json=bad_model)
    ).status_code == 404
    bad_scope = {**body, "scope": "planet"}
    resp = await call(gw, "PUT", "/admin/rate_limits", gw.operator_key, json=bad_scope)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "scope"


async def test_a_limited_key_is_refused_with_openais_headers_and_no_fallback(gw):
    """A key limited to 120 requests a minute on all models (a burst of 2): answers carry
    the headers,
    the third request is a 429 that names the limit, says when to retry (Retry-After,
    retry-after-ms, the reset), never reaches a fallback model, and leaves no usage
    record; other keys of the project are not limited by it."""
    org = await populated(gw, "limits-live")
    limited = await call(
        gw,
        "PUT",
        "/admin/rate_limits",
        org.admin,
        json={"scope": "key", "subject_id": org.user_id, "max_requests_per_1_minute": 120},
    )
    assert limited.status_code == 200, limited.text
    client = gw.sdk(org.user)
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(**CHAT)
        assert raw.headers["x-ratelimit-limit-requests"] == "120"
        assert int(raw.headers["x-ratelimit-remaining-requests"]) <= 1
        assert raw.headers["x-ratelimit-limit-tokens"] == "2000000"  # the plan's, per model
    before = len(await usage_rows(gw))
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(**{**CHAT, "model": "flaky-429"})
    resp = err.value.response
    body = resp.json()["error"]
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "rate_limit_error"
    assert (
        f"in API key {org.user_id}" in body["message"]
        and "requests per min (RPM)" in body["message"]
    )
    assert int(resp.headers["retry-after"]) >= 1 and int(resp.headers["retry-after-ms"]) > 0
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(await usage_rows(gw)) == before  # refused before any upstream call
    # the organisation's admin key (same project) is not under the service account's limit
    other = await gw.sdk(org.admin).chat.completions.create(**CHAT)
    assert other.choices[0].message.content


async def test_tokens_per_minute_count_the_estimate_then_the_real_usage(gw):
    org = await populated(gw, "limits-tokens")
    resp = await call(
        gw,
        "POST",
        f"{BASE}/{org.project}/rate_limits/rl-gpt-test",
        org.admin,
        json={"max_tokens_per_1_minute": 600},  # 10 a second, a burst of 10
    )
    assert resp.status_code == 200, resp.text
    client = gw.sdk(org.user)
    big = {**CHAT, "max_tokens": 2_000}  # above the whole burst: admitted from a full bucket
    raw = await client.chat.completions.with_raw_response.create(**big)
    assert raw.headers["x-ratelimit-limit-tokens"] == "600"
    # its real usage was small: the rest of its estimate came back, yet not enough for
    # another as big, which waits for a full bucket
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(**big)
    message = err.value.response.json()["error"]["message"]
    assert message.startswith(f"Rate limit reached for gpt-test in project {org.project}")
    assert "tokens per min (TPM)" in message and "Requested 20" in message
    # the bucket holds its burst (10) minus the real usage of the first: ~2 s to refill
    assert 0 < int(err.value.response.headers["retry-after-ms"]) <= 3_000
