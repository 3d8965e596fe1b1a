"""Users, invitations, project members and roles through the gateway's Admin API
(in-process, SQLite): the invitation's life, permissions by role, and no one granting
more than they hold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import update

from forge.db.engine import make_sessionmaker
from forge.db.schema import Invite, utcnow
from forge.people.permissions import PERMISSIONS
from gateway.permissions import resource_of
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import call, conforms, new_org

ORG = "/v1/organization"


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


@dataclass
class Person:
    id: str
    key: str  # their first admin key, from accepting the invitation


async def invite(gw, admin: str, email: str, role: str = "reader", **extra) -> dict:
    made = await call(
        gw, "POST", f"{ORG}/invites", admin, json={"email": email, "role": role, **extra}
    )
    assert made.status_code == 200, made.text
    return made.json()


async def join(gw, admin: str, email: str, role: str = "reader", **extra) -> Person:
    token = (await invite(gw, admin, email, role, **extra))["token"]
    accepted = await gw.http.post(f"{ORG}/invites/accept", json={"token": token, "name": email})
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    return Person(body["user"]["id"], body["api_key"])


def refused(resp, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text


async def test_an_invitation_is_accepted_once_and_makes_a_member_with_a_working_key(gw):
    org = await new_org(gw, "people", "enterprise")
    sent = await invite(gw, org.admin, "Ada@Example.com", "owner")
    assert sent["status"] == "pending" and sent["email"] == "ada@example.com"
    listed = await call(gw, "GET", f"{ORG}/invites", org.admin)
    assert [i["id"] for i in listed.json()["data"]] == [sent["id"]]
    assert "token" not in listed.json()["data"][0]  # the secret is shown once

    accepted = await gw.http.post(
        f"{ORG}/invites/accept", json={"token": sent["token"], "name": "Ada"}
    )
    assert accepted.status_code == 200, accepted.text
    user, key = accepted.json()["user"], accepted.json()["api_key"]
    assert (user["email"], user["role"], user["name"]) == ("ada@example.com", "owner", "Ada")

    again = await gw.http.post(f"{ORG}/invites/accept", json={"token": sent["token"]})
    refused(again, 400, "invite_already_accepted")
    unknown = await gw.http.post(f"{ORG}/invites/accept", json={"token": "inv-nothing"})
    refused(unknown, 400, "invalid_invite")
    status = await call(gw, "GET", f"{ORG}/invites/{sent['id']}", org.admin)
    assert status.json()["status"] == "accepted" and status.json()["accepted_at"]
    refused(
        await call(gw, "DELETE", f"{ORG}/invites/{sent['id']}", org.admin),
        400,
        "invite_already_accepted",
    )

    # the new member's key works for the Admin API and for inference
    me = await call(gw, "GET", f"{ORG}/users/{user['id']}", key)
    assert me.status_code == 200 and me.json()["email"] == "ada@example.com"
    reply = await gw.sdk(key).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    # the invitation and the acceptance are in the audit log
    log = await call(gw, "GET", f"{ORG}/audit_logs", org.admin)
    types = {e["type"] for e in log.json()["data"]}
    assert {"invite.sent", "invite.accepted"} <= types


async def test_an_expired_invitation_is_400_and_a_second_pending_one_409(gw):
    org = await new_org(gw, "expiring", "enterprise")
    sent = await invite(gw, org.admin, "late@example.com")
    dup = await call(
        gw,
        "POST",
        f"{ORG}/invites",
        org.admin,
        json={"email": "LATE@example.com", "role": "reader"},
    )
    assert dup.status_code == 409, dup.text
    async with make_sessionmaker(gw.engine)() as s, s.begin():
        await s.execute(
            update(Invite)
            .where(Invite.id == sent["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    late = await gw.http.post(f"{ORG}/invites/accept", json={"token": sent["token"]})
    refused(late, 400, "invite_expired")
    assert "expired" in late.json()["error"]["message"]
    shown = await call(gw, "GET", f"{ORG}/invites/{sent['id']}", org.admin)
    assert shown.json()["status"] == "expired"
    # an expired invitation no longer blocks a new one
    assert (await invite(gw, org.admin, "late@example.com"))["status"] == "pending"
    bad = await call(
        gw, "POST", f"{ORG}/invites", org.admin, json={"email": "nope", "role": "reader"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "email"
    bad_role = await call(
        gw, "POST", f"{ORG}/invites", org.admin, json={"email": "a@b.co", "role": "god"}
    )
    assert bad_role.status_code == 400, bad_role.text


async def test_a_reader_reads_and_changes_nothing(gw):
    org = await new_org(gw, "readers", "enterprise")
    reader = await join(gw, org.admin, "reader@example.com")
    assert (await call(gw, "GET", f"{ORG}/users", reader.key)).status_code == 200
    assert (await call(gw, "GET", f"{ORG}/projects", reader.key)).status_code == 200
    for method, path, body in (
        ("POST", f"{ORG}/projects", {"name": "mine"}),
        ("POST", f"{ORG}/invites", {"email": "x@example.com", "role": "reader"}),
        ("POST", f"{ORG}/admin_api_keys", {"name": "more"}),
        ("POST", "/admin/keys", {"name": "more", "role": "admin"}),
        ("POST", f"{ORG}/users/{reader.id}", {"role": "owner"}),
        ("POST", f"{ORG}/roles", {"role_name": "x", "permissions": []}),
    ):
        refused(await call(gw, method, path, reader.key, json=body), 403, "missing_permission")
    # refusals of admin actions are in the audit log
    log = await call(gw, "GET", f"{ORG}/audit_logs", org.admin)
    assert any(e["type"] == "user.updated" for e in log.json()["data"])


async def test_no_one_raises_themselves_or_another_above_their_own_role(gw):
    org = await new_org(gw, "ranks", "enterprise")
    boss = await join(gw, org.admin, "boss@example.com", "owner")
    manager = await join(gw, org.admin, "manager@example.com")
    made = await call(
        gw,
        "POST",
        f"{ORG}/roles",
        org.admin,
        json={
            "role_name": "People Manager",
            "permissions": [
                "api.organization.users.read",
                "api.organization.users.write",
                "api.organization.invites.read",
                "api.organization.invites.write",
                "api.organization.admin_api_keys.write",
            ],
        },
    )
    role = conforms("Role", made)
    assigned = await call(
        gw, "POST", f"{ORG}/users/{manager.id}/roles", org.admin, json={"role_id": role["id"]}
    )
    conforms("UserRoleAssignment", assigned)

    # the manager may invite readers, not owners, and not make themselves an owner
    assert (await invite(gw, manager.key, "new@example.com"))["role"] == "reader"
    over = await call(
        gw, "POST", f"{ORG}/invites", manager.key, json={"email": "o@example.com", "role": "owner"}
    )
    refused(over, 403, "role_above_caller")
    refused(
        await call(gw, "POST", f"{ORG}/users/{manager.id}", manager.key, json={"role": "owner"}),
        403,
        "role_above_caller",
    )
    refused(
        await call(
            gw,
            "POST",
            f"{ORG}/users/{manager.id}/roles",
            manager.key,
            json={"role_id": "role_org_owner"},
        ),
        403,
        "role_above_caller",
    )
    # nor lower someone above them
    refused(
        await call(gw, "POST", f"{ORG}/users/{boss.id}", manager.key, json={"role": "reader"}),
        403,
        "role_above_caller",
    )
    refused(
        await call(gw, "DELETE", f"{ORG}/users/{boss.id}", manager.key), 403, "role_above_caller"
    )
    # an admin key the manager makes is theirs, and no stronger than they are
    key = await call(gw, "POST", f"{ORG}/admin_api_keys", manager.key, json={"name": "mine"})
    assert key.json()["owner"] == {"type": "user", "object": "organization.user", "id": manager.id}
    refused(
        await call(gw, "POST", f"{ORG}/projects", key.json()["value"], json={"name": "p"}),
        403,
        "missing_permission",
    )
    # the owner can: make the manager an owner through the predefined role's id
    promoted = await call(
        gw, "POST", f"{ORG}/users/{manager.id}", boss.key, json={"role_id": "role_org_owner"}
    )
    assert promoted.json()["role"] == "owner"
    # a role taken away is gone from the user's permissions at once
    gone = await call(gw, "DELETE", f"{ORG}/users/{manager.id}/roles/{role['id']}", boss.key)
    conforms("DeletedRoleAssignmentResource", gone)


async def test_the_last_owner_stays_and_a_removed_users_keys_stop_working(gw):
    org = await new_org(gw, "owners", "enterprise")
    only = await join(gw, org.admin, "only@example.com", "owner")
    refused(
        await call(gw, "POST", f"{ORG}/users/{only.id}", org.admin, json={"role": "reader"}),
        409,
        "last_owner",
    )
    refused(await call(gw, "DELETE", f"{ORG}/users/{only.id}", org.admin), 409, "last_owner")
    leaver = await join(gw, org.admin, "leaver@example.com")
    assert (await call(gw, "GET", f"{ORG}/users", leaver.key)).status_code == 200
    deleted = await call(gw, "DELETE", f"{ORG}/users/{leaver.id}", org.admin)
    conforms("UserDeleteResponse", deleted)
    after = await call(gw, "GET", f"{ORG}/users", leaver.key)
    refused(after, 401, "revoked_api_key")
    missing = await call(gw, "GET", f"{ORG}/users/{leaver.id}", org.admin)
    assert missing.status_code == 404


async def test_roles_and_project_members_with_their_refusals(gw):
    org = await new_org(gw, "roles", "enterprise")
    listed = conforms("PublicRoleListResource", await call(gw, "GET", f"{ORG}/roles", org.admin))
    assert {"owner", "reader"} <= {r["name"] for r in listed["data"]}
    unknown = await call(
        gw,
        "POST",
        f"{ORG}/roles",
        org.admin,
        json={"role_name": "x", "permissions": ["api.everything"]},
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "permissions"
    body = {"role_name": "Auditor", "permissions": ["api.organization.audit_logs.read"]}
    auditor = conforms("Role", await call(gw, "POST", f"{ORG}/roles", org.admin, json=body))
    assert (await call(gw, "POST", f"{ORG}/roles", org.admin, json=body)).status_code == 409
    clash = await call(
        gw, "POST", f"{ORG}/roles", org.admin, json={"role_name": "owner", "permissions": []}
    )
    assert clash.status_code == 409
    fixed = await call(
        gw, "POST", f"{ORG}/roles/role_org_owner", org.admin, json={"permissions": []}
    )
    refused(fixed, 400, "predefined_role")
    renamed = await call(
        gw, "POST", f"{ORG}/roles/{auditor['id']}", org.admin, json={"role_name": "Auditors"}
    )
    assert conforms("Role", renamed)["name"] == "Auditors"

    member = await join(gw, org.admin, "member@example.com", projects=[])
    await call(
        gw, "POST", f"{ORG}/users/{member.id}/roles", org.admin, json={"role_id": auditor["id"]}
    )
    roles = conforms(
        "RoleListResource", await call(gw, "GET", f"{ORG}/users/{member.id}/roles", org.admin)
    )
    assert [r["name"] for r in roles["data"]] == ["reader", "Auditors"]
    one = await call(gw, "GET", f"{ORG}/users/{member.id}/roles/{auditor['id']}", org.admin)
    conforms("AssignedRoleDetails", one)
    conforms(
        "RoleDeletedResource", await call(gw, "DELETE", f"{ORG}/roles/{auditor['id']}", org.admin)
    )
    roles = await call(gw, "GET", f"{ORG}/users/{member.id}/roles", org.admin)
    assert [r["name"] for r in roles.json()["data"]] == ["reader"]

    project = (await call(gw, "POST", f"{ORG}/projects", org.admin, json={"name": "app"})).json()[
        "id"
    ]
    members = f"{ORG}/projects/{project}/users"
    added = await call(
        gw, "POST", members, org.admin, json={"email": "MEMBER@example.com", "role": "member"}
    )
    assert conforms("ProjectUser", added)["id"] == member.id
    again = await call(gw, "POST", members, org.admin, json={"user_id": member.id, "role": "owner"})
    assert again.status_code == 409
    nobody = await call(
        gw, "POST", members, org.admin, json={"user_id": "user-nobody", "role": "member"}
    )
    assert nobody.status_code == 404
    conforms("ProjectUserListResponse", await call(gw, "GET", members, org.admin))
    changed = await call(gw, "POST", f"{members}/{member.id}", org.admin, json={"role": "owner"})
    assert conforms("ProjectUser", changed)["role"] == "owner"
    conforms(
        "ProjectUserDeleteResponse", await call(gw, "DELETE", f"{members}/{member.id}", org.admin)
    )
    assert (await call(gw, "GET", f"{members}/{member.id}", org.admin)).status_code == 404


async def test_every_people_answer_matches_openais_schemas(gw):
    org = await new_org(gw, "people-spec", "enterprise")
    person = await join(gw, org.admin, "spec@example.com")
    sent = await invite(gw, org.admin, "pending@example.com")
    checks = [
        ("GET", f"{ORG}/users", "UserListResponse", None),
        ("GET", f"{ORG}/users/{person.id}", "User", None),
        ("POST", f"{ORG}/users/{person.id}", "User", {"role": "reader"}),
        ("GET", f"{ORG}/invites", "InviteListResponse", None),
        ("GET", f"{ORG}/invites/{sent['id']}", "Invite", None),
        ("DELETE", f"{ORG}/invites/{sent['id']}", "InviteDeleteResponse", None),
    ]
    for method, path, schema, body in checks:
        conforms(
            schema, await call(gw, method, path, org.admin, **({"json": body} if body else {}))
        )
    conforms(
        "Invite",
        await call(
            gw,
            "POST",
            f"{ORG}/invites",
            org.admin,
            json={"email": "z@example.com", "role": "reader"},
        ),
    )


def test_every_admin_route_is_governed_by_a_permission(gw):
    """Every route behind an admin key maps to a resource (gateway.permissions), so a new
    one cannot slip through ungoverned; the operator's and the invitation's acceptance are
    the routes that take no organisation key."""
    free = {"/v1/organization/invites/accept"}
    paths = {
        path
        for path in gw.app.openapi()["paths"]
        if (path.startswith("/v1/organization") or path.startswith("/admin"))
        and not path.startswith("/admin/organizations")
        and path not in free
    }
    assert len(paths) > 20
    ungoverned = sorted(p for p in paths if resource_of(p) is None)
    assert not ungoverned
    resources = {resource_of(p) for p in paths}
    assert all(f"{r}.read" in PERMISSIONS for r in resources)


async def test_a_groups_roles_reach_its_members_and_joining_one_is_a_grant(gw):
    org = await new_org(gw, "groups", "enterprise")
    owner = await join(gw, org.admin, "owner@example.com", "owner")
    alice = await join(gw, org.admin, "alice@example.com")
    bob = await join(gw, org.admin, "bob@example.com")
    group = await call(gw, "POST", f"{ORG}/groups", owner.key, json={"name": "Projects team"})
    group_id = conforms("GroupResponse", group)["id"]
    assert (
        await call(gw, "POST", f"{ORG}/groups", owner.key, json={"name": "Projects team"})
    ).status_code == 409
    writer = await call(
        gw,
        "POST",
        f"{ORG}/roles",
        owner.key,
        json={
            "role_name": "Project writer",
            "permissions": ["api.organization.projects.write", "api.groups.write"],
        },
    )
    role_id = writer.json()["id"]
    base = f"{ORG}/groups/{group_id}"
    conforms(
        "GroupRoleAssignment",
        await call(gw, "POST", f"{base}/roles", owner.key, json={"role_id": role_id}),
    )
    predefined = await call(
        gw, "POST", f"{base}/roles", owner.key, json={"role_id": "role_org_owner"}
    )
    refused(predefined, 400, "predefined_role")

    # alice is a reader: no project writes until she is in the group
    denied = await call(gw, "POST", f"{ORG}/projects", alice.key, json={"name": "a"})
    refused(denied, 403, "missing_permission")
    added = await call(gw, "POST", f"{base}/users", owner.key, json={"user_id": alice.id})
    conforms("GroupUserAssignment", added)
    made = await call(gw, "POST", f"{ORG}/projects", alice.key, json={"name": "a"})
    assert made.status_code == 200, made.text
    # alice holds the group's permissions, so she may add bob; bob (a reader) may not add
    # anyone, and a reader-only caller could not grant the group's roles anyway
    refused(
        await call(gw, "POST", f"{base}/users", bob.key, json={"user_id": bob.id}),
        403,
        "missing_permission",
    )
    assert (
        await call(gw, "POST", f"{base}/users", alice.key, json={"user_id": bob.id})
    ).status_code == 200
    conforms("UserListResource", await call(gw, "GET", f"{base}/users", owner.key))
    conforms("GroupMemberUser", await call(gw, "GET", f"{base}/users/{bob.id}", owner.key))
    conforms("RoleListResource", await call(gw, "GET", f"{base}/roles", owner.key))
    conforms("AssignedRoleDetails", await call(gw, "GET", f"{base}/roles/{role_id}", owner.key))
    conforms("GroupListResource", await call(gw, "GET", f"{ORG}/groups", owner.key))
    renamed = await call(gw, "POST", base, owner.key, json={"name": "Builders"})
    assert conforms("GroupResourceWithSuccess", renamed)["name"] == "Builders"

    removed = await call(gw, "DELETE", f"{base}/users/{alice.id}", owner.key)
    conforms("GroupUserDeletedResource", removed)
    again = await call(gw, "POST", f"{ORG}/projects", alice.key, json={"name": "b"})
    refused(again, 403, "missing_permission")
    conforms(
        "DeletedRoleAssignmentResource",
        await call(gw, "DELETE", f"{base}/roles/{role_id}", owner.key),
    )
    conforms("GroupDeletedResource", await call(gw, "DELETE", base, owner.key))
    assert (await call(gw, "GET", base, owner.key)).status_code == 404


async def test_a_plan_without_teams_cannot_invite_or_make_roles_and_groups(gw):
    org = await new_org(gw, "solo", "professional")
    for path, body in (
        (f"{ORG}/invites", {"email": "a@example.com", "role": "reader"}),
        (f"{ORG}/roles", {"role_name": "r", "permissions": []}),
        (f"{ORG}/groups", {"name": "g"}),
    ):
        resp = await call(gw, "POST", path, org.admin, json=body)
        refused(resp, 403, "plan_feature_unavailable")
        assert "Enterprise" in resp.json()["error"]["message"]
    assert (await call(gw, "GET", f"{ORG}/users", org.admin)).status_code == 200
