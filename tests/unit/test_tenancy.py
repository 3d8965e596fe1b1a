"""Organisations, projects, service accounts and keys through the gateway's Admin API
(in-process, SQLite), and the isolation between organisations on every route."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from forge.db.schema import ApiKey
from forge.tenancy.plans import plan_has
from tests.conftest import UPSTREAM_KEY
from tests.specs.validate import violations
from tests.unit.harness import in_process_gateway, platform_config, usage_rows


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


def auth(key: str, org: str | None = None) -> dict[str, str]:
    headers = {"authorization": f"Bearer {key}"}
    if org:
        headers["openai-organization"] = org
    return headers


async def call(gw, method: str, path: str, key: str, **kw: Any):
    org = kw.pop("org", None)
    return await gw.http.request(method, path, headers=auth(key, org), **kw)


def conforms(schema: str, resp) -> dict[str, Any]:
    """The body, after checking it against OpenAI's spec schema of that name."""
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert not violations(schema, body), violations(schema, body)
    return body


async def test_every_admin_answer_matches_openais_schemas(gw):
    org = await populated(gw, "spec-check")
    base = "/v1/organization/projects"
    account = f"{base}/{org.project}/service_accounts/{org.account}"
    checks = [
        ("GET", base, "ProjectListResponse", None),
        ("GET", f"{base}/{org.project}", "Project", None),
        ("POST", f"{base}/{org.project}", "Project", {"name": "renamed"}),
        (
            "GET",
            f"{base}/{org.project}/service_accounts",
            "ProjectServiceAccountListResponse",
            None,
        ),
        ("GET", account, "ProjectServiceAccount", None),
        ("POST", f"{account}/api_keys", "ServiceAccountApiKeyBody", {"name": "second"}),
        ("GET", f"{base}/{org.project}/api_keys", "ProjectApiKeyListResponse", None),
        ("GET", f"{base}/{org.project}/api_keys/{org.user_id}", "ProjectApiKey", None),
        ("GET", "/v1/organization/admin_api_keys", "ApiKeyList", None),
        ("GET", f"/v1/organization/admin_api_keys/{org.admin_key_id}", "AdminApiKey", None),
        ("POST", "/v1/organization/admin_api_keys", "AdminApiKeyCreateResponse", {"name": "x"}),
        ("POST", f"{base}", "Project", {"name": "another"}),
        (
            "POST",
            f"{base}/{org.project}/service_accounts",
            "ProjectServiceAccountCreateResponse",
            {"name": "svc"},
        ),
        (
            "DELETE",
            f"{base}/{org.project}/api_keys/{org.user_id}",
            "ProjectApiKeyDeleteResponse",
            None,
        ),
        ("DELETE", account, "ProjectServiceAccountDeleteResponse", None),
        ("POST", f"{base}/{org.project}/archive", "Project", None),
    ]
    for method, path, schema, body in checks:
        kw = {"json": body} if body is not None else {}
        conforms(schema, await call(gw, method, path, org.admin, **kw))


@dataclass
class Org:
    id: str
    admin: str  # its first admin key
    project: str = ""
    account: str = ""
    user: str = ""  # the service account's key
    user_id: str = ""
    admin_key_id: str = ""
    response: str = ""
    person: str = ""  # a user who accepted an invitation
    invite: str = ""  # a pending invitation
    role: str = ""  # a custom role
    group: str = ""  # a group with the person in it and the role given to it
    credential: str = ""  # the project's own key for the fake provider (the same key)


async def new_org(gw, name: str, plan: str = "professional") -> Org:
    made = await call(
        gw, "POST", "/admin/organizations", gw.operator_key, json={"name": name, "plan": plan}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    return Org(body["organization"]["id"], body["admin_key"])


async def populated(gw, name: str, plan: str = "professional") -> Org:
    """An organisation with a project, a service account and its key, an admin key, and
    a stored response made with the project's key; with a plan that has teams, people
    too: a member, a pending invitation, a custom role and a group."""
    org = await new_org(gw, name, plan)
    project = await call(gw, "POST", "/v1/organization/projects", org.admin, json={"name": "app"})
    org.project = project.json()["id"]
    account = await call(
        gw,
        "POST",
        f"/v1/organization/projects/{org.project}/service_accounts",
        org.admin,
        json={"name": "ci"},
    )
    assert account.status_code == 200, account.text
    org.account = account.json()["id"]
    org.user, org.user_id = account.json()["api_key"]["value"], account.json()["api_key"]["id"]
    admin_key = await call(
        gw, "POST", "/v1/organization/admin_api_keys", org.admin, json={"name": "ops"}
    )
    org.admin_key_id = admin_key.json()["id"]
    own_key = await call(
        gw,
        "POST",
        f"/v1/organization/projects/{org.project}/provider_credentials",
        org.admin,
        json={"provider": "fake", "api_key": UPSTREAM_KEY},  # its requests go out with it
    )
    assert own_key.status_code == 200, own_key.text
    org.credential = own_key.json()["id"]
    response = await call(
        gw, "POST", "/v1/responses", org.user, json={"model": "gpt-test", "input": "x"}
    )
    assert response.status_code == 200, response.text
    org.response = response.json()["id"]
    if plan_has(plan, "teams"):
        await _people(gw, org, name)
    return org


async def _people(gw, org: Org, name: str) -> None:
    org.person = await _person(gw, org, f"person@{name}.example")
    pending = await call(
        gw,
        "POST",
        "/v1/organization/invites",
        org.admin,
        json={"email": f"p@{name}.example", "role": "reader"},
    )
    org.invite = pending.json()["id"]
    role = await call(
        gw, "POST", "/v1/organization/roles", org.admin, json={"role_name": "r", "permissions": []}
    )
    org.role = role.json()["id"]
    group = await call(gw, "POST", "/v1/organization/groups", org.admin, json={"name": "g"})
    org.group = group.json()["id"]
    members = f"/v1/organization/groups/{org.group}"
    await call(gw, "POST", f"{members}/users", org.admin, json={"user_id": org.person})
    await call(gw, "POST", f"{members}/roles", org.admin, json={"role_id": org.role})


async def _person(gw, org: Org, email: str) -> str:
    """A member of ``org`` (accepted invitation) in its project."""
    sent = await call(
        gw,
        "POST",
        "/v1/organization/invites",
        org.admin,
        json={
            "email": email,
            "role": "reader",
            "projects": [{"id": org.project, "role": "member"}],
        },
    )
    accepted = await gw.http.post(
        "/v1/organization/invites/accept", json={"token": sent.json()["token"]}
    )
    assert accepted.status_code == 200, accepted.text
    return str(accepted.json()["user"]["id"])


async def test_an_organisation_from_creation_to_a_working_project_key(gw):
    org = await populated(gw, "acme")
    reply = await gw.sdk(org.user).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    rows = [r for r in await usage_rows(gw) if r["key_id"] == org.user_id]
    assert rows and all((r["org_id"], r["project_id"]) == (org.id, org.project) for r in rows)
    keys = await call(gw, "GET", f"/v1/organization/projects/{org.project}/api_keys", org.admin)
    [listed] = keys.json()["data"]
    assert listed["id"] == org.user_id and org.user not in keys.text
    assert listed["redacted_value"].startswith(org.user[:13]) and "****" in listed["redacted_value"]
    assert listed["owner"]["service_account"]["id"] == org.account
    gone = await call(
        gw, "DELETE", f"/v1/organization/projects/{org.project}/api_keys/{org.user_id}", org.admin
    )
    assert gone.json() == {
        "object": "organization.project.api_key.deleted",
        "id": org.user_id,
        "deleted": True,
    }
    refused = await call(gw, "GET", "/v1/models", org.user)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked_api_key"


async def test_project_lifecycle_and_its_refusals(gw):
    org = await new_org(gw, "initech")
    made = await call(gw, "POST", "/v1/organization/projects", org.admin, json={"name": "web"})
    project = made.json()
    assert made.status_code == 200 and project["object"] == "organization.project"
    again = await call(gw, "POST", "/v1/organization/projects", org.admin, json={"name": "web"})
    assert again.status_code == 409 and again.json()["error"]["param"] == "name"
    renamed = await call(
        gw, "POST", f"/v1/organization/projects/{project['id']}", org.admin, json={"name": "site"}
    )
    assert renamed.json()["name"] == "site"
    account = await call(
        gw,
        "POST",
        f"/v1/organization/projects/{project['id']}/service_accounts",
        org.admin,
        json={"name": "bot"},
    )
    key = account.json()["api_key"]["value"]
    assert (await call(gw, "GET", "/v1/models", key)).status_code == 200
    archived = await call(
        gw, "POST", f"/v1/organization/projects/{project['id']}/archive", org.admin
    )
    assert archived.json()["status"] == "archived" and archived.json()["archived_at"]
    refused = await call(gw, "GET", "/v1/models", key)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "project_archived"
    listed = await call(gw, "GET", "/v1/organization/projects", org.admin)
    assert [p["name"] for p in listed.json()["data"]] == ["Default project"]
    everything = await call(gw, "GET", "/v1/organization/projects?include_archived=true", org.admin)
    assert len(everything.json()["data"]) == 2
    default = listed.json()["data"][0]["id"]
    kept = await call(gw, "POST", f"/v1/organization/projects/{default}/archive", org.admin)
    assert kept.status_code == 400 and kept.json()["error"]["param"] == "project_id"


async def test_pages_follow_the_after_cursor_and_bad_paging_is_400(gw):
    org = await new_org(gw, "paging")
    for i in range(5):
        await call(gw, "POST", "/v1/organization/projects", org.admin, json={"name": f"p{i}"})
    seen, after = [], None
    while True:
        query = "?limit=2" + (f"&after={after}" if after else "")
        page = (await call(gw, "GET", "/v1/organization/projects" + query, org.admin)).json()
        seen += [p["name"] for p in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ["Default project", "p0", "p1", "p2", "p3", "p4"]
    for query, param in (
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?after=proj_x", "after"),
    ):
        bad = await call(gw, "GET", "/v1/organization/projects" + query, org.admin)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text


async def test_admin_keys_expire_and_suspension_and_deletion_stop_an_organisation(gw):
    org = await new_org(gw, "umbrella")
    made = await call(
        gw,
        "POST",
        "/v1/organization/admin_api_keys",
        org.admin,
        json={"name": "short", "expires_in_seconds": 60},
    )
    created = made.json()
    assert created["object"] == "organization.admin_api_key" and created["value"].startswith(
        "sk-forge-"
    )
    assert created["expires_at"] - created["created_at"] in (59, 60, 61)
    async with gw.engine.begin() as conn:  # an hour later
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(update(ApiKey).where(ApiKey.id == created["id"]).values(expires_at=past))
    gw.runtime.verifier.forget()
    expired = await call(gw, "GET", "/v1/organization/projects", created["value"])
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    suspend = await call(
        gw, "POST", f"/admin/organizations/{org.id}", gw.operator_key, json={"status": "suspended"}
    )
    assert suspend.json()["status"] == "suspended"
    refused = await call(gw, "GET", "/v1/organization/projects", org.admin)
    assert refused.status_code == 403 and "suspended" in refused.json()["error"]["message"]
    await call(
        gw, "POST", f"/admin/organizations/{org.id}", gw.operator_key, json={"status": "active"}
    )
    assert (await call(gw, "GET", "/v1/organization/projects", org.admin)).status_code == 200
    await call(gw, "DELETE", f"/admin/organizations/{org.id}", gw.operator_key)
    assert (await call(gw, "GET", "/v1/organization/projects", org.admin)).status_code == 401
    own = await call(
        gw,
        "POST",
        "/admin/organizations/org-default",
        gw.operator_key,
        json={"status": "suspended"},
    )
    assert own.status_code == 409


async def test_the_operator_acts_for_a_named_organisation_and_an_admin_cannot(gw):
    a, b = await new_org(gw, "a-corp"), await new_org(gw, "b-corp")
    listed = await call(gw, "GET", "/v1/organization/projects", gw.operator_key, org=a.id)
    assert listed.status_code == 200 and len(listed.json()["data"]) == 1
    for named in (b.id, "org-" + "0" * 24):  # the same answer, existing or not
        refused = await call(gw, "GET", "/v1/organization/projects", a.admin, org=named)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "organization_mismatch"
    assert (await call(gw, "GET", "/admin/organizations", a.admin)).status_code == 403
    missing = await call(gw, "GET", "/v1/organization/projects", gw.operator_key, org="org-nope")
    assert missing.status_code == 404


def _routes(app) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, from its OpenAPI document (FastAPI
    0.165 keeps included routers lazily; every route of ours is in the schema)."""
    return sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    )


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


async def test_no_route_lets_one_organisation_read_list_or_change_anothers(gw):
    """Walks every route of the app (a new route is covered without editing this test):
    organisation B's admin and project keys, given A's ids, get exactly what they get for
    ids that exist nowhere (404, or a refusal that does not depend on the id), and never
    a body that contains anything of A's. A's things are intact afterwards."""
    a, b = await populated(gw, "alpha", "enterprise"), await populated(gw, "beta", "enterprise")
    theirs = {
        "project_id": a.project,
        "service_account_id": a.account,
        "key_id": a.user_id,
        "response_id": a.response,
        "org_id": a.id,
        "api_key_id": a.user_id,
        "name": "adapter-of-a",
        "user_id": a.person,
        "invite_id": a.invite,
        "role_id": a.role,
        "group_id": a.group,
        "credential_id": a.credential,
    }
    nowhere = {name: value[:4] + uuid.uuid4().hex for name, value in theirs.items()}
    secrets = [
        a.id,
        a.project,
        a.account,
        a.user_id,
        a.admin_key_id,
        a.response,
        a.user,
        a.person,
        a.invite,
        a.role,
        a.credential,
    ]
    routes = _routes(gw.app)
    assert ("GET", "/v1/organization/projects/{project_id}") in routes
    walked = 0
    for method, template in routes:
        for key in (b.admin, b.user):
            answers = []
            for ids in (theirs, nowhere):
                kw: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
                path = _fill(template, ids)
                resp = await call(gw, method, path, key, **kw)
                answers.append(resp)
                assert resp.status_code != 500, (method, template, resp.text)
                leaked = [s for s in secrets if s in resp.text and s not in path]  # not echoed
                assert not leaked, (method, template, leaked)
            mine, none = answers
            assert mine.status_code == none.status_code, (method, template, mine.text)
            if mine.status_code >= 400:
                assert _error_code(mine) == _error_code(none), (method, template, mine.text)
            walked += 1
    assert walked > 40
    # A is untouched: its key works, its project is active, its response still there
    assert (await call(gw, "GET", "/v1/models", a.user)).status_code == 200
    project = await call(gw, "GET", f"/v1/organization/projects/{a.project}", a.admin)
    assert project.json()["status"] == "active"
    kept = await call(gw, "GET", f"/v1/responses/{a.response}", a.user)
    assert kept.status_code == 200


def _error_code(response: Any) -> Any:
    """OpenAI's error code; under /scim/v2, SCIM's status and type."""
    body = response.json()
    return body.get("error", {}).get("code") or (body.get("status"), body.get("scimType"))
