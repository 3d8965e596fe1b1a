"""SCIM 2.0 provisioning as Okta and Microsoft Entra send it, in-process over the real
stores: users created, found by filter, paged, replaced and PATCHed (with and without a
path, Entra's capitalised ops and string booleans), deactivated (their sessions end and
their keys stop working at once) and deleted; groups with members added and removed the
ways both send; roles given to a group reach its members; SCIM's error shape for bad
filters, tokens and bodies; every change in the audit log."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from forge.db.schema import AuditLogEntry
from tests.unit.test_identity import PASSWORD, identity_gateway, login, mails

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


async def scim_token(gw) -> dict[str, str]:
    made = await gw.http.post(
        "/v1/organization/scim_tokens", headers={"authorization": f"Bearer {gw.admin_key}"}
    )
    assert made.status_code == 200, made.text
    assert made.json()["base_url"].endswith("/scim/v2")
    return {
        "authorization": f"Bearer {made.json()['token']}",
        "content-type": "application/scim+json",
    }


@pytest.fixture
async def gw(fake_openai, sqlite_engine, tmp_path):
    async with identity_gateway(fake_openai, sqlite_engine, tmp_path) as h:
        yield h


def okta_user(email: str, **extra) -> dict:
    return {
        "schemas": [USER],
        "userName": email,
        "name": {"givenName": "Ann", "familyName": "Lee"},
        "emails": [{"primary": True, "value": email, "type": "work"}],
        "displayName": "Ann Lee",
        "locale": "en-US",  # not kept: ignored, as RFC 7644 allows
        "externalId": f"okta-{email}",
        "active": True,
        **extra,
    }


def patch(*ops: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(ops)}


async def test_users_are_provisioned_filtered_paged_and_changed(gw):
    scim = await scim_token(gw)
    missing = await gw.http.get("/scim/v2/Users")
    assert missing.status_code == 401 and missing.json()["schemas"] == [ERROR]
    forged = await gw.http.get("/scim/v2/Users", headers={"authorization": "Bearer scim_nope"})
    assert forged.status_code == 401 and forged.headers["content-type"].startswith(
        "application/scim+json"
    )

    made = await gw.http.post("/scim/v2/Users", headers=scim, json=okta_user("ann@acme.test"))
    assert made.status_code == 201, made.text
    ann = made.json()
    assert (
        ann["userName"] == "ann@acme.test"
        and ann["active"]
        and ann["externalId"] == "okta-ann@acme.test"
    )
    assert ann["name"]["formatted"] == "Ann Lee" and ann["meta"]["resourceType"] == "User"
    again = await gw.http.post("/scim/v2/Users", headers=scim, json=okta_user("ANN@acme.test"))
    assert again.status_code == 409 and again.json()["scimType"] == "uniqueness"
    bad = await gw.http.post("/scim/v2/Users", headers=scim, json={"userName": "not an email"})
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidValue"
    for email in ("bo@acme.test", "cy@acme.test"):
        assert (
            await gw.http.post("/scim/v2/Users", headers=scim, json=okta_user(email))
        ).status_code == 201

    found = (
        await gw.http.get(
            "/scim/v2/Users", headers=scim, params={"filter": 'userName eq "Bo@acme.test"'}
        )
    ).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["userName"] == "bo@acme.test"
    by_external = {"filter": 'externalId eq "okta-cy@acme.test"'}
    assert (await gw.http.get("/scim/v2/Users", headers=scim, params=by_external)).json()[
        "totalResults"
    ] == 1
    for wrong, why in (
        ('userName sw "a"', "not supported"),
        ("userName eq", "Malformed"),
        ('title eq "x"', "Cannot filter"),
        ('userName zz "a"', "Unknown"),
    ):
        refused = await gw.http.get("/scim/v2/Users", headers=scim, params={"filter": wrong})
        assert refused.status_code == 400 and refused.json()["scimType"] == "invalidFilter"
        assert why in refused.json()["detail"]
    everyone = (await gw.http.get("/scim/v2/Users", headers=scim)).json()["totalResults"]
    page = (
        await gw.http.get("/scim/v2/Users", headers=scim, params={"startIndex": 2, "count": 2})
    ).json()
    assert (page["startIndex"], page["itemsPerPage"], page["totalResults"]) == (2, 2, everyone)
    last = (
        await gw.http.get("/scim/v2/Users", headers=scim, params={"startIndex": everyone})
    ).json()
    assert last["itemsPerPage"] == 1

    # Entra's PATCH: a path, a capitalised op, a string boolean; Okta's: a value object
    path = f"/scim/v2/Users/{ann['id']}"
    renamed = await gw.http.patch(
        path,
        headers=scim,
        json=patch(
            {"op": "Replace", "path": "name.givenName", "value": "Anna"},
            {"op": "Add", "path": "displayName", "value": "Anna Lee"},
        ),
    )
    assert (
        renamed.json()["name"]["givenName"] == "Anna"
        and renamed.json()["displayName"] == "Anna Lee"
    )
    off = await gw.http.patch(
        path, headers=scim, json=patch({"op": "Replace", "path": "active", "value": "False"})
    )
    assert off.json()["active"] is False
    on = await gw.http.patch(
        path, headers=scim, json=patch({"op": "replace", "value": {"active": True}})
    )
    assert on.json()["active"] is True
    nonsense = await gw.http.patch(
        path, headers=scim, json=patch({"op": "replace", "path": "active", "value": "maybe"})
    )
    assert nonsense.status_code == 400
    unknown_op = await gw.http.patch(
        path, headers=scim, json=patch({"op": "move", "path": "active"})
    )
    assert unknown_op.status_code == 400 and unknown_op.json()["scimType"] == "invalidSyntax"
    replaced = await gw.http.put(
        path, headers=scim, json=okta_user("ann@acme.test", externalId="x-1")
    )
    assert replaced.json()["externalId"] == "x-1"
    assert (await gw.http.delete(path, headers=scim)).status_code == 204
    gone = await gw.http.get(path, headers=scim)
    assert gone.status_code == 404 and gone.json()["status"] == "404"
    async with gw.engine.connect() as conn:
        types = [t for (t,) in (await conn.execute(select(AuditLogEntry.type))).all()]
    assert {"user.added", "user.updated", "user.deleted"} <= set(types)


async def test_deactivation_ends_sessions_and_keys_at_once(gw):
    scim = await scim_token(gw)
    email = "dee@acme.test"
    user = (await gw.http.post("/scim/v2/Users", headers=scim, json=okta_user(email))).json()
    key = await gw.keys.create_key("dee's", owner_type="user", owner_id=user["id"])
    models = {"authorization": f"Bearer {key.key}"}
    assert (await gw.http.get("/v1/models", headers=models)).status_code == 200
    await gw.http.post("/auth/register", json={"email": email, "password": PASSWORD})
    await gw.runtime.identity.flush()
    text = mails(gw.mail)[-1].get_content()
    token = text.split("token=")[1].split()[0]
    await gw.http.post("/auth/verify", json={"token": token})
    assert (await login(gw, email)).status_code == 200
    assert (await gw.http.get("/auth/me")).status_code == 200

    off = await gw.http.patch(
        f"/scim/v2/Users/{user['id']}",
        headers=scim,
        json=patch({"op": "replace", "value": {"active": False}}),
    )
    assert off.json()["active"] is False
    assert (await gw.http.get("/auth/me")).status_code == 401  # the session ended
    assert (await gw.http.get("/v1/models", headers=models)).status_code == 401  # the key too
    refused = await login(gw, email)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "no_membership"


async def test_groups_members_and_the_roles_they_carry(gw):
    scim = await scim_token(gw)
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    ids = []
    for email in ("e1@acme.test", "e2@acme.test", "e3@acme.test"):
        ids.append(
            (await gw.http.post("/scim/v2/Users", headers=scim, json=okta_user(email))).json()["id"]
        )
    made = await gw.http.post(
        "/scim/v2/Groups",
        headers=scim,
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Engineering",
            "externalId": "grp-1",
            "members": [{"value": ids[0]}],
        },
    )
    assert made.status_code == 201, made.text
    group = made.json()
    path = f"/scim/v2/Groups/{group['id']}"
    assert [m["value"] for m in group["members"]] == [ids[0]]

    # Okta adds with a path and removes with a filter path; Entra removes with a value
    await gw.http.patch(
        path,
        headers=scim,
        json=patch(
            {"op": "add", "path": "members", "value": [{"value": ids[1]}, {"value": ids[2]}]}
        ),
    )
    await gw.http.patch(
        path, headers=scim, json=patch({"op": "remove", "path": f'members[value eq "{ids[0]}"]'})
    )
    entra = await gw.http.patch(
        path,
        headers=scim,
        json=patch(
            {"op": "Remove", "path": "members", "value": [{"value": ids[2]}]},
            {"op": "Replace", "path": "displayName", "value": "Platform"},
        ),
    )
    assert entra.json()["displayName"] == "Platform"
    assert [m["value"] for m in entra.json()["members"]] == [ids[1]]
    user = (await gw.http.get(f"/scim/v2/Users/{ids[1]}", headers=scim)).json()
    assert user["groups"] == [{"value": group["id"], "display": "Platform"}]
    stranger = await gw.http.patch(
        path,
        headers=scim,
        json=patch({"op": "add", "path": "members", "value": [{"value": "user-nobody"}]}),
    )
    assert stranger.status_code == 400
    found = (
        await gw.http.get(
            "/scim/v2/Groups", headers=scim, params={"filter": 'displayName eq "Platform"'}
        )
    ).json()
    assert found["totalResults"] == 1

    # a custom role given to the group reaches its members (the Admin API's groups)
    role = await gw.http.post(
        "/v1/organization/roles",
        headers=admin,
        json={"role_name": "project-writers", "permissions": ["api.organization.projects.write"]},
    )
    assert role.status_code == 200, role.text
    given = await gw.http.post(
        f"/v1/organization/groups/{group['id']}/roles",
        headers=admin,
        json={"role_id": role.json()["id"]},
    )
    assert given.status_code == 200, given.text
    held = await gw.runtime.people.permissions_of("org-default", ids[1])
    assert "api.organization.projects.write" in held
    assert "api.organization.projects.write" not in await gw.runtime.people.permissions_of(
        "org-default", ids[0]
    )

    assert (await gw.http.delete(path, headers=scim)).status_code == 204
    assert (await gw.http.get(path, headers=scim)).status_code == 404
    async with gw.engine.connect() as conn:
        rows = (await conn.execute(select(AuditLogEntry.type, AuditLogEntry.content))).all()
    scim_events = [t for t, c in rows if json.loads(c).get("actor", {}).get("type") == "scim"]
    assert {"group.created", "group.updated", "group.deleted"} <= set(scim_events)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]"])
async def test_a_body_that_is_not_a_json_object_is_a_scim_400(gw, body):
    scim = await scim_token(gw)
    answer = await gw.http.post("/scim/v2/Users", headers=scim, content=body)
    assert answer.status_code == 400 and answer.json()["scimType"] == "invalidSyntax"
