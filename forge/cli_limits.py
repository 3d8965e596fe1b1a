"""``forge limits``: rate limits on an organisation, a project or a key, straight in the
database (running gateways pick a change up within their key cache TTL; the HTTP routes
push it at once), with ``--json`` for scripts."""

from __future__ import annotations

from typing import Annotated

import typer

from forge.cli_audit import record_cli_action
from forge.cli_db import emit, on_database
from forge.errors import InvalidRequest, NotFound
from forge.limits.rules import ANY_MODEL, FIELDS, Kind, LimitRule, Scope
from forge.limits.store import RateLimitStore

limits_app = typer.Typer(
    help="Rate limits: requests and tokens per minute, requests per day.", no_args_is_help=True
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
OrgOpt = Annotated[str | None, typer.Option("--org", help="An organization's id.")]
ProjectOpt = Annotated[str | None, typer.Option("--project", help="A project's id.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="An API key's id.")]


def subject_of(org: str | None, project: str | None, key: str | None) -> tuple[Scope, str]:
    named: tuple[tuple[Scope, str | None], ...] = (
        ("organization", org),
        ("project", project),
        ("key", key),
    )
    given = [(scope, subject) for scope, subject in named if subject]
    if len(given) != 1:
        raise typer.BadParameter("name exactly one of --org, --project, --key")
    return given[0]


def _line(rule: LimitRule) -> str:
    values = "  ".join(
        f"{kind}={rule.value(kind) if rule.value(kind) is not None else '-'}" for kind in FIELDS
    )
    return f"{rule.scope:<12}  {rule.subject_id}  {rule.model:<20}  {values}"


@limits_app.command("set")
def limits_set(
    org: OrgOpt = None,
    project: ProjectOpt = None,
    key: KeyOpt = None,
    model: Annotated[
        str, typer.Option(help="A model's name, or * for all models together.")
    ] = ANY_MODEL,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    rpd: Annotated[int | None, typer.Option(help="Requests per day.")] = None,
    concurrent: Annotated[int | None, typer.Option(help="Requests in flight at once.")] = None,
    clear: Annotated[
        list[str], typer.Option(help="Remove a limit (rpm, tpm, rpd or concurrent); repeatable.")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    as_json: JsonFlag = False,
) -> None:
    """Set limits on one organization, project or key; those not given stay as they are."""
    scope, subject = subject_of(org, project, key)
    values: dict[str, int | None] = {}
    given: tuple[tuple[Kind, int | None], ...] = (
        ("rpm", rpm),
        ("tpm", tpm),
        ("rpd", rpd),
        ("concurrent", concurrent),
    )
    for kind, value in given:
        if value is not None:
            values[FIELDS[kind][0]] = value
    for cleared in clear:
        field = next((f for k, (f, _) in FIELDS.items() if k == cleared), None)
        if field is None:
            raise typer.BadParameter(f"unknown limit {cleared!r}", param_hint="--clear")
        values[field] = None
    if not values:
        raise typer.BadParameter("give at least one of --rpm, --tpm, --rpd, --concurrent, --clear")

    async def action(store: RateLimitStore) -> tuple[str, LimitRule]:
        owner = await store.subject_org(scope, subject)
        if owner is None:
            raise NotFound(f"No {scope} with id {subject!r}.")
        try:
            return owner, await store.set_rule(owner, scope, subject, model, values)
        except InvalidRequest as exc:  # name the option, not the API's field
            kind = next((k for k, (f, _) in FIELDS.items() if f == exc.param), exc.param)
            raise InvalidRequest(f"--{kind}: {exc.message}") from None

    owner, rule = on_database(RateLimitStore, action)
    changes = {k: v for k, v in values.items() if v is not None}
    record_cli_action("rate_limit.updated", owner, f"{scope}:{subject}:{model}", changes)
    emit(rule, as_json, _line)


@limits_app.command("list")
def limits_list(
    org: OrgOpt = None, project: ProjectOpt = None, key: KeyOpt = None, as_json: JsonFlag = False
) -> None:
    """The limits set on one organization, project or key (an organization's plan sets
    the rest: ``forge orgs list``)."""
    scope, subject = subject_of(org, project, key)

    async def action(store: RateLimitStore) -> list[LimitRule]:
        owner = await store.subject_org(scope, subject)
        if owner is None:
            raise NotFound(f"No {scope} with id {subject!r}.")
        return await store.rules(owner, scope, subject)

    emit(on_database(RateLimitStore, action), as_json, _line)
