"""``forge audit verify|export``, and the audit entries the CLI's own admin verbs leave
(an operator at the console is as accountable as one calling the HTTP API)."""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import orjson
import typer

from forge.audit.chain import Verdict
from forge.audit.store import AuditEvent, AuditStore, audit_details
from forge.cli_db import on_database

audit_app = typer.Typer(help="The audit log: verify its chain, export it.", no_args_is_help=True)


def record_cli_action(
    event: str, org_id: str | None, target: str | None, fields: dict[str, Any] | None = None
) -> None:
    """An admin verb done from the CLI: who ran it (the OS user), what, on what."""
    entry = AuditEvent(
        type=event,
        org_id=org_id,
        actor=None,
        actor_id=f"cli:{getpass.getuser()}",
        details=audit_details(event, target, fields),
        source_ip="cli",
        result={"status": 200, "via": "forge cli", "os_user": getpass.getuser()},
    )
    on_database(AuditStore, lambda store: store.append(entry))


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[
        str | None,
        typer.Option(help="The head hash recorded earlier: also catches deleted newest entries."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Walk the whole chain; exit 1 at the first entry changed or link broken."""
    verdict: Verdict = on_database(AuditStore, lambda store: store.verify())
    if as_json:
        typer.echo(json.dumps(verdict.model_dump(), indent=2))
    elif verdict.ok:
        typer.echo(f"ok: {verdict.entries} entries, head {verdict.head_hash}")
    else:
        typer.echo(
            f"BROKEN at {verdict.first_bad_id}: {verdict.problem} "
            f"({verdict.entries} entries verified before it)"
        )
    if not verdict.ok:
        raise typer.Exit(1)
    if expect_head is not None and expect_head != verdict.head_hash:
        typer.echo(
            f"the head is {verdict.head_hash}, not the {expect_head} expected: entries "
            "were appended since, or the newest were deleted"
        )
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    org: Annotated[str | None, typer.Option("--org", help="One organization's entries.")] = None,
) -> None:
    """Every entry as JSON Lines (with its hashes), oldest first, to stdout."""

    async def dump(store: AuditStore) -> None:
        async for entry in store.entries(org):
            typer.echo(orjson.dumps(entry.model_dump()).decode())

    on_database(AuditStore, dump)
