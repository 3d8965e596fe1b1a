"""Budgets on the gateway (in-process, SQLite, the real ledger and gate): set through
/admin/budgets, enforced before any upstream call with OpenAI's insufficient_quota, the
plan's monthly quota included, and refused when malformed."""

from __future__ import annotations

import openai
import pytest

from tests.unit.harness import in_process_gateway, platform_config, usage_rows
from tests.unit.test_tenancy import call, new_org, populated

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def budget(gw, key: str, **body):
    return await call(gw, "POST", "/admin/budgets", key, json=body)


async def test_a_request_budget_stops_a_key_with_insufficient_quota(gw):
    org = await populated(gw, "budget-requests")  # its key has made one request today
    made = await budget(
        gw, org.admin, scope="key", subject_id=org.user_id, period="day", unit="requests", limit=4
    )
    assert made.status_code == 201, made.text
    client = gw.sdk(org.user)
    for _ in range(3):
        await client.chat.completions.create(**CHAT)
    before = len(await usage_rows(gw))
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(**CHAT)
    resp = err.value.response
    assert resp.status_code == 429 and resp.headers["x-should-retry"] == "false"
    assert "retry-after" not in resp.headers
    body = resp.json()["error"]
    assert body["code"] == "insufficient_quota" and body["type"] == "insufficient_quota"
    assert f"the daily budget of 4 requests for key {org.user_id}" in body["message"]
    assert len(await usage_rows(gw)) == before  # refused before any upstream call
    listed = await call(
        gw, "GET", "/admin/budgets", org.admin, params={"scope": "key", "subject_id": org.user_id}
    )
    [state] = listed.json()
    assert state["spent"] == 4 and state["limit"] == 4
    # deleted: the key works again at once (the change is pushed to the replica)
    gone = await call(gw, "DELETE", f"/admin/budgets/{state['id']}", org.admin)
    assert gone.status_code == 200
    assert (await client.chat.completions.create(**CHAT)).choices


async def test_a_dollar_budget_refuses_what_it_could_not_cover(gw):
    org = await populated(gw, "budget-usd")
    made = await budget(gw, org.admin, scope="project", subject_id=org.project, limit=0.01)
    assert made.status_code == 201, made.text
    client = gw.sdk(org.user)
    for _ in range(3):
        await client.chat.completions.create(**CHAT)  # worst case ~$0.0001 each
    assert await gw.runtime.shipper.flush()
    [state] = (
        await call(
            gw,
            "GET",
            "/admin/budgets",
            org.admin,
            params={"scope": "project", "subject_id": org.project},
        )
    ).json()
    assert 0 < state["spent"] < 0.001 and state["unit"] == "usd"
    # a request whose worst case is above what is left is refused, not run (8,000
    # tokens at $2/M: $0.016, within gpt-test's context window of 8,192)
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(**{**CHAT, "max_tokens": 8_000})
    assert "monthly budget of $0.01 for project" in err.value.response.json()["error"]["message"]
    rows = await usage_rows(gw)
    spent = sum(r["cost_usd"] for r in rows if r["project_id"] == org.project)
    assert spent == pytest.approx(state["spent"])


async def test_the_community_plan_allows_100_requests_a_month(gw):
    org = await new_org(gw, "budget-community", plan="community")
    fast = {
        "scope": "organization",
        "subject_id": org.id,
        "model": "gpt-test",
        "max_requests_per_1_minute": 100_000,
    }  # the plan's 60 a minute would pace this test
    assert (
        await call(gw, "PUT", "/admin/rate_limits", gw.operator_key, json=fast)
    ).status_code == 200
    client = gw.sdk(org.admin)
    for _ in range(100):
        await client.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(**CHAT)
    assert "100 requests for plan" in err.value.response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"limit": -1}, 400, "limit"),
        ({"limit": "lots"}, 400, "limit"),
        ({"limit": 5, "period": "week"}, 400, "period"),
        ({"limit": 5, "unit": "euro"}, 400, "unit"),
        ({"limit": float("inf")}, 400, None),
    ],
)
async def test_bad_budgets_are_refused_naming_the_field(gw, body, status, param):
    org = await populated(gw, f"budget-bad-{len(str(body))}-{param}")
    json_body = {"scope": "project", "subject_id": org.project, **body}
    if body.get("limit") == float("inf"):
        resp = await gw.http.post(
            "/admin/budgets",
            headers={"authorization": f"Bearer {org.admin}", "content-type": "application/json"},
            content=b'{"scope": "project", "subject_id": "%s", "limit": 1e999}'
            % org.project.encode(),
        )
    else:
        resp = await budget(gw, org.admin, **json_body)
    assert resp.status_code == status, resp.text
    if param:
        assert resp.json()["error"]["param"] == param


async def test_who_may_set_which_budget(gw):
    a, b = await populated(gw, "budget-a"), await populated(gw, "budget-b")
    own = await budget(gw, a.admin, scope="organization", subject_id=a.id, limit=5)
    assert own.status_code == 403  # an admin does not set its own organisation's
    assert (
        await budget(gw, gw.operator_key, scope="organization", subject_id=a.id, limit=5)
    ).status_code == 201
    theirs = await budget(gw, b.admin, scope="project", subject_id=a.project, limit=5)
    assert theirs.status_code == 404
    first = await budget(gw, a.admin, scope="project", subject_id=a.project, limit=5)
    again = await budget(gw, a.admin, scope="project", subject_id=a.project, limit=6)
    assert first.status_code == 201 and again.status_code == 409
    stolen = await call(gw, "DELETE", f"/admin/budgets/{first.json()['id']}", b.admin)
    assert stolen.status_code == 404
    log = await call(
        gw,
        "GET",
        "/v1/organization/audit_logs",
        a.admin,
        params={"event_types[]": "project.updated"},
    )
    assert any(
        e["project.updated"].get("changes_requested", {}).get("limit") == 5
        for e in log.json()["data"]
    )


async def test_the_community_plan_has_the_shared_models_only(gw):
    """A model on a paid provider is a 403 naming the plan that has every provider, and a
    shared model's fallbacks never leave the shared models."""
    org = await new_org(gw, "community-models", plan="community")
    client = gw.sdk(org.admin)
    with pytest.raises(openai.PermissionDeniedError) as err:
        await client.chat.completions.create(**{**CHAT, "model": "text-only"})
    error = err.value.response.json()["error"]
    assert error["code"] == "plan_feature_unavailable", error
    assert "Community" in error["message"] and "Professional" in error["message"]
    assert (await client.chat.completions.create(**CHAT)).choices  # gpt-test is shared
    professional = await new_org(gw, "professional-models", plan="professional")
    assert (
        await gw.sdk(professional.admin).chat.completions.create(**{**CHAT, "model": "text-only"})
    ).choices


def test_a_plan_without_every_provider_never_falls_back_to_a_paid_one():
    from forge.config import ModelConfig
    from forge.errors import PermissionDenied
    from forge.routing.router import Route, Target
    from gateway.relay import shared_only

    def target(name: str, shared: bool) -> Target:
        return Target(ModelConfig(name=name, provider="p", shared=shared), client=None)  # type: ignore[arg-type]

    chain = (target("local", True), target("paid", False), target("other-local", True))
    kept = shared_only(Route("local", chain), "community").targets
    assert [t.model.name for t in kept] == ["local", "other-local"]
    with pytest.raises(PermissionDenied):
        shared_only(Route("paid", chain[1:]), "community")
    # a group needs one shared target, and keeps only those
    group = shared_only(Route("g", chain[1:], "weighted", group=True), "community")
    assert [t.model.name for t in group.targets] == ["other-local"]
    with pytest.raises(PermissionDenied):
        shared_only(Route("g", chain[1:2], "weighted", group=True), "community")
