"""OpenAI's usage and costs reports over the usage records (in-process, SQLite):
buckets, groups, pages, checked against OpenAI's schemas; bad queries are 400s naming
the parameter; an organisation sees only its own usage."""

from __future__ import annotations

import time

import pytest

from tests.unit.harness import in_process_gateway, platform_config, usage_rows
from tests.unit.test_tenancy import call, conforms, populated

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def test_usage_and_costs_in_buckets_grouped_and_paged(gw):
    org = await populated(gw, "reports")  # one responses request (chat path) already
    client = gw.sdk(org.user)
    for _ in range(2):
        await client.chat.completions.create(**CHAT)
    await client.embeddings.create(model="embed-test", input="hello")
    rows = [r for r in await usage_rows(gw) if r["org_id"] == org.id]
    since = int(time.time()) - 3_600
    usage = conforms(
        "UsageResponse",
        await call(
            gw,
            "GET",
            "/v1/organization/usage/completions",
            org.admin,
            params={"start_time": since, "group_by": ["model", "project_id"]},
        ),
    )
    results = [r for b in usage["data"] for r in b["results"]]
    [chat] = results
    assert chat["model"] == "gpt-test" and chat["project_id"] == org.project
    assert chat["num_model_requests"] == 3
    chat_rows = [r for r in rows if r["endpoint"] == "chat/completions"]
    assert chat["input_tokens"] == sum(r["prompt_tokens"] for r in chat_rows)
    assert chat["output_tokens"] == sum(r["completion_tokens"] for r in chat_rows)
    embeddings = conforms(
        "UsageResponse",
        await call(
            gw, "GET", "/v1/organization/usage/embeddings", org.admin, params={"start_time": since}
        ),
    )
    [emb] = [r for b in embeddings["data"] for r in b["results"]]
    assert emb["num_model_requests"] == 1
    costs = conforms(
        "UsageResponse",
        await call(
            gw,
            "GET",
            "/v1/organization/costs",
            org.admin,
            params={"start_time": since, "group_by": ["line_item"]},
        ),
    )
    lines = {r["line_item"]: r["amount"]["value"] for b in costs["data"] for r in b["results"]}
    assert lines["gpt-test"] == pytest.approx(sum(r["cost_usd"] for r in chat_rows))
    paged = (
        await call(
            gw,
            "GET",
            "/v1/organization/usage/completions",
            org.admin,
            params={"start_time": since - 7_200, "bucket_width": "1h", "limit": 2},
        )
    ).json()
    assert len(paged["data"]) == 2 and paged["has_more"] and paged["next_page"]
    rest = (
        await call(
            gw,
            "GET",
            "/v1/organization/usage/completions",
            org.admin,
            params={"start_time": since - 7_200, "bucket_width": "1h", "page": paged["next_page"]},
        )
    ).json()
    assert sum(r["num_model_requests"] for b in rest["data"] for r in b["results"]) == 3
    other = await populated(gw, "reports-other")
    theirs = (
        await call(
            gw,
            "GET",
            "/v1/organization/costs",
            other.admin,
            params={"start_time": since, "group_by": ["project_id"]},
        )
    ).json()
    assert org.project not in str(theirs)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "start_time"),
        ({"start_time": 1, "bucket_width": "1w"}, "bucket_width"),
        ({"start_time": 1, "group_by": ["colour"]}, "group_by"),
        ({"start_time": 1, "limit": 0}, "limit"),
        ({"start_time": 1, "bucket_width": "1h", "limit": 169}, "limit"),
        ({"start_time": 1, "page": "soon"}, "page"),
        ({"start_time": 100, "end_time": 50}, "end_time"),
        ({"start_time": "yesterday"}, "start_time"),
    ],
)
async def test_bad_report_queries_are_400s_naming_the_parameter(gw, params, param):
    org = await populated(gw, f"reports-bad-{param}-{len(params)}")
    resp = await call(gw, "GET", "/v1/organization/usage/completions", org.admin, params=params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
