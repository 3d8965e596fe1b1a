"""``forge orgs`` and ``forge projects``: the operator's verbs, straight in the database
(the same store the Admin API uses), each with ``--json`` for scripts."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from forge.cli_audit import record_cli_action
from forge.cli_db import emit, on_database
from forge.tenancy.objects import OrganizationObject, ProjectObject
from forge.tenancy.plans import PlanName
from forge.tenancy.store import TenancyStore

orgs_app = typer.Typer(help="Organizations (the platform operator's).", no_args_is_help=True)
projects_app = typer.Typer(help="Projects of an organization.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _org(o: OrganizationObject) -> str:
    return f"{o.id}  {o.status:<9}  {o.plan:<12}  {o.name}"


def _project(p: ProjectObject) -> str:
    return f"{p.id}  {p.status:<8}  {p.name}"


@orgs_app.command("create")
def orgs_create(
    name: Annotated[str, typer.Option(help="A unique name.")],
    plan: Annotated[
        str, typer.Option(help="community, professional, enterprise or platform.")
    ] = "professional",
    as_json: JsonFlag = False,
) -> None:
    """Create an organization with its default project; prints its first admin key once."""
    if plan not in ("community", "professional", "enterprise", "platform"):
        raise typer.BadParameter(f"unknown plan {plan!r}", param_hint="--plan")
    org, key = on_database(TenancyStore, lambda s: s.create_org(name, plan))  # type: ignore[arg-type]
    record_cli_action("organization.created", org.id, org.id, {"name": name, "plan": plan})
    if as_json:
        import json

        typer.echo(json.dumps({"organization": org.model_dump(), "admin_key": key}, indent=2))
    else:
        typer.echo(_org(org))
        typer.echo(f"admin key (shown once): {key}")


@orgs_app.command("list")
def orgs_list(as_json: JsonFlag = False) -> None:
    """Every organization (the first 100)."""
    page = on_database(TenancyStore, lambda s: s.list_orgs(limit=100))
    emit(page.data, as_json, _org)


def _set(org_id: str, as_json: bool, **change: Any) -> None:
    org = on_database(TenancyStore, lambda s: s.set_org(org_id, **change))
    event = "organization.deleted" if change.get("status") == "deleted" else "organization.updated"
    record_cli_action(event, org_id, org_id, change)
    emit(org, as_json, _org)


@orgs_app.command("suspend")
def orgs_suspend(org_id: str, as_json: JsonFlag = False) -> None:
    """Refuse its keys (403) until reactivated; gateways follow within their key cache TTL."""
    _set(org_id, as_json, status="suspended")


@orgs_app.command("activate")
def orgs_activate(org_id: str, as_json: JsonFlag = False) -> None:
    _set(org_id, as_json, status="active")


@orgs_app.command("delete")
def orgs_delete(org_id: str, as_json: JsonFlag = False) -> None:
    """Its keys stop working; its records stay."""
    _set(org_id, as_json, status="deleted")


@orgs_app.command("plan")
def orgs_plan(org_id: str, plan: str, as_json: JsonFlag = False) -> None:
    """Move it to another plan."""
    valid: tuple[PlanName, ...] = ("community", "professional", "enterprise", "platform")
    if plan not in valid:
        raise typer.BadParameter(f"unknown plan {plan!r}", param_hint="PLAN")
    _set(org_id, as_json, plan=plan)


@projects_app.command("create")
def projects_create(
    org: Annotated[str, typer.Option(help="The organization's id.")],
    name: Annotated[str, typer.Option(help="Unique in the organization.")],
    as_json: JsonFlag = False,
) -> None:
    project = on_database(TenancyStore, lambda s: s.create_project(org, name))
    record_cli_action("project.created", org, project.id, {"name": name})
    emit(project, as_json, _project)


@projects_app.command("list")
def projects_list(
    org: Annotated[str, typer.Option(help="The organization's id.")],
    archived: Annotated[bool, typer.Option("--archived", help="Include archived.")] = False,
    as_json: JsonFlag = False,
) -> None:
    page = on_database(TenancyStore, lambda s: s.list_projects(org, 100, None, archived))
    emit(page.data, as_json, _project)


@projects_app.command("archive")
def projects_archive(
    project_id: str,
    org: Annotated[str, typer.Option(help="The organization's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Its keys stop working (403); nothing is deleted."""
    project = on_database(TenancyStore, lambda s: s.archive_project(org, project_id))
    record_cli_action("project.archived", org, project_id)
    emit(project, as_json, _project)
