"""``forge users``: an organisation's people from the operator's shell, straight in the
database (the store the Admin API uses), each with ``--json``. The operator acts with
every permission; the Admin API's rule against granting more than one holds is for
people's keys."""

from __future__ import annotations

from typing import Annotated

import typer

from forge.cli_audit import record_cli_action
from forge.cli_db import emit, on_database
from forge.people.objects import InviteObject, InviteProject, UserObject
from forge.people.permissions import PERMISSIONS, OrgRoleName
from forge.people.store import PeopleStore

users_app = typer.Typer(
    help="Users of an organization and their invitations.", no_args_is_help=True
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
OrgOption = Annotated[str, typer.Option("--org", help="The organization's id.")]
ROLES = ("owner", "reader")


def _user(u: UserObject) -> str:
    return f"{u.id}  {u.role:<6}  {u.email}  {u.name or ''}".rstrip()


def _invite(i: InviteObject) -> str:
    return f"{i.id}  {i.status:<8}  {i.role:<6}  {i.email}"


def _role(value: str) -> OrgRoleName:
    if value not in ROLES:
        raise typer.BadParameter(f"expected owner or reader, not {value!r}", param_hint="--role")
    return value  # type: ignore[return-value]


def _projects(values: list[str] | None) -> list[InviteProject] | None:
    """``--project ID[:owner|member]`` options (none: the default project)."""
    if not values:
        return None
    projects = []
    for value in values:
        project_id, _, role = value.partition(":")
        if role not in ("", "owner", "member"):
            raise typer.BadParameter(f"unknown project role {role!r}", param_hint="--project")
        projects.append(InviteProject(id=project_id, role=role or "member"))
    return projects


@users_app.command("list")
def users_list(org: OrgOption, as_json: JsonFlag = False) -> None:
    """The organization's users (the first 100)."""
    page = on_database(PeopleStore, lambda s: s.list_users(org, limit=100))
    emit(page.data, as_json, _user)


@users_app.command("invite")
def users_invite(
    org: OrgOption,
    email: Annotated[str, typer.Option(help="Who is invited.")],
    role: Annotated[str, typer.Option(help="owner or reader.")] = "reader",
    project: Annotated[
        list[str] | None,
        typer.Option(help="ID[:owner|member], repeatable; default: the default project."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Invite someone; prints the invitation's token once (they accept it with
    ``POST /v1/organization/invites/accept``)."""
    made = on_database(
        PeopleStore,
        lambda s: s.create_invite(org, email, _role(role), _projects(project), PERMISSIONS),
    )
    record_cli_action("invite.sent", org, made.id, {"email": made.email, "role": made.role})
    if as_json:
        typer.echo(made.model_dump_json(indent=2))
    else:
        typer.echo(_invite(made))
        typer.echo(f"invitation token (shown once): {made.token}")


@users_app.command("invites")
def users_invites(org: OrgOption, as_json: JsonFlag = False) -> None:
    """The organization's invitations (the first 100)."""
    page = on_database(PeopleStore, lambda s: s.list_invites(org, limit=100))
    emit(page.data, as_json, _invite)


@users_app.command("role")
def users_role(org: OrgOption, user_id: str, role: str, as_json: JsonFlag = False) -> None:
    """Make a user an owner or a reader (an organization keeps one owner)."""
    user = on_database(
        PeopleStore, lambda s: s.set_user_role(org, user_id, _role(role), PERMISSIONS)
    )
    record_cli_action("user.updated", org, user_id, {"role": role})
    emit(user, as_json, _user)


@users_app.command("remove")
def users_remove(org: OrgOption, user_id: str) -> None:
    """Remove a user: memberships and roles go, their keys are revoked."""
    revoked = on_database(PeopleStore, lambda s: s.delete_user(org, user_id, PERMISSIONS))
    record_cli_action("user.deleted", org, user_id)
    typer.echo(f"removed {user_id}; {len(revoked)} key(s) revoked")
