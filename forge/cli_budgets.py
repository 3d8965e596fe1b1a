"""``forge budgets``: budgets of an organisation, a project or a key, straight in the
database (running gateways pick a change up within their key cache TTL; the HTTP routes
push it at once), with ``--json`` for scripts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from forge.budgets.model import BUDGET_AUDIT_EVENT, Budget, Unit
from forge.budgets.store import BudgetStore
from forge.cli_audit import record_cli_action
from forge.cli_db import emit, on_database
from forge.cli_limits import KeyOpt, OrgOpt, ProjectOpt, subject_of
from forge.errors import InvalidRequest, NotFound
from forge.limits.store import RateLimitStore
from forge.spend import Period, current_spend

budgets_app = typer.Typer(
    help="Budgets: dollars, requests or tokens per day or month.", no_args_is_help=True
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _line(b: Any) -> str:
    spent = f"  spent {b.spent:g}" if hasattr(b, "spent") else ""
    return f"{b.id}  {b.scope:<12}  {b.subject_id}  {b.period:<5}  {b.unit:<8}  {b.limit:g}{spent}"


class _Shown(Budget):
    spent: float


@budgets_app.command("create")
def budgets_create(
    limit: Annotated[float, typer.Option(help="The most it may spend a period.")],
    org: OrgOpt = None,
    project: ProjectOpt = None,
    key: KeyOpt = None,
    period: Annotated[str, typer.Option(help="day or month (UTC).")] = "month",
    unit: Annotated[str, typer.Option(help="usd, requests or tokens.")] = "usd",
    as_json: JsonFlag = False,
) -> None:
    """Give one organization, project or key a budget."""
    scope, subject = subject_of(org, project, key)
    if period not in ("day", "month"):
        raise typer.BadParameter(f"unknown period {period!r}", param_hint="--period")
    if unit not in ("usd", "requests", "tokens"):
        raise typer.BadParameter(f"unknown unit {unit!r}", param_hint="--unit")
    if not limit >= 0 or limit == float("inf"):
        raise typer.BadParameter("a budget is a number from 0 up", param_hint="--limit")

    async def action(store: BudgetStore) -> Budget:
        owner = await RateLimitStore(store.sessions).subject_org(scope, subject)
        if owner is None:
            raise NotFound(f"No {scope} with id {subject!r}.")
        chosen_period: Period = "day" if period == "day" else "month"
        chosen_unit: Unit = unit  # type: ignore[assignment]
        return await store.create(owner, scope, subject, chosen_period, chosen_unit, limit)

    made = on_database(BudgetStore, action)
    record_cli_action(
        BUDGET_AUDIT_EVENT[scope], made.org_id, subject, {"budget": made.model_dump()}
    )
    emit(made, as_json, _line)


@budgets_app.command("list")
def budgets_list(
    org: OrgOpt = None, project: ProjectOpt = None, key: KeyOpt = None, as_json: JsonFlag = False
) -> None:
    """The budgets of one organization, project or key, with this period's spend."""
    scope, subject = subject_of(org, project, key)

    async def action(store: BudgetStore) -> list[_Shown]:
        owner = await RateLimitStore(store.sessions).subject_org(scope, subject)
        if owner is None:
            raise NotFound(f"No {scope} with id {subject!r}.")
        budgets = await store.list(owner, scope, subject)
        spent = await current_spend(store.sessions, budgets, datetime.now(UTC))
        return [_Shown(**b.model_dump(), spent=spent[b.id]) for b in budgets]

    emit(on_database(BudgetStore, action), as_json, _line)


@budgets_app.command("delete")
def budgets_delete(budget_id: str, as_json: JsonFlag = False) -> None:
    async def action(store: BudgetStore) -> Budget:
        if not budget_id.startswith("budget_"):
            raise InvalidRequest(f"{budget_id!r} is not a budget id (budget_...).")
        return await store.delete(None, budget_id)

    gone = on_database(BudgetStore, action)
    record_cli_action(
        BUDGET_AUDIT_EVENT[gone.scope], gone.org_id, gone.subject_id, {"budget": None}
    )
    emit(gone, as_json, _line)
