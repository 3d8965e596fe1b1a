"""``/admin/budgets``: dollars (or requests, or tokens) per UTC day or month for a key,
a project or an organisation. An organisation's admin sets its projects' and keys'; only
the platform operator sets an organisation's own (as with rate limits). Listing shows
each budget's spend so far in its current period (from the spend counters). A change
reaches every gateway replica through the key changes feed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from forge.budgets.alerts import SpendAlertFired, SpendAlertStore
from forge.budgets.model import BUDGET_AUDIT_EVENT, Budget, Unit
from forge.budgets.store import BudgetStore
from forge.errors import ServiceUnavailable
from forge.keys import KeyInfo
from forge.spend import Period, SpendScope, current_spend, period_start
from gateway.audit import AuditedRoute, audited
from gateway.deps import admin, runtime
from gateway.routes.limits import subject_org
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/admin/budgets", tags=["admin"], route_class=AuditedRoute)


class BudgetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: SpendScope
    subject_id: str = Field(min_length=1, max_length=40)
    period: Period = "month"
    unit: Unit = "usd"
    limit: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class BudgetState(Budget):
    period_start: str
    spent: float


def _store(rt: GatewayRuntime) -> BudgetStore:
    if rt.tenancy is None:
        raise ServiceUnavailable("The organization store is not configured.", retry_after=5)
    return rt.tenancy.budgets


@router.post("", response_model=Budget, status_code=201, openapi_extra=audited("project.updated"))
async def create_budget(
    body: BudgetCreate,
    request: Request,
    caller: KeyInfo = Depends(admin),
    rt: GatewayRuntime = Depends(runtime),
) -> Budget:
    request.state.audit_event = BUDGET_AUDIT_EVENT[body.scope]
    org_id = await subject_org(rt, caller, body.scope, body.subject_id)
    budget = await _store(rt).create(
        org_id, body.scope, body.subject_id, body.period, body.unit, body.limit
    )
    await rt.keys_changed(None)  # verified keys carry their budgets
    return budget


@router.get("", response_model=list[BudgetState])
async def list_budgets(
    scope: SpendScope = Query(),
    subject_id: str = Query(max_length=40),
    caller: KeyInfo = Depends(admin),
    rt: GatewayRuntime = Depends(runtime),
) -> list[BudgetState]:
    org_id = await subject_org(rt, caller, scope, subject_id, reading=True)
    store = _store(rt)
    budgets = await store.list(org_id, scope, subject_id)
    now = datetime.now(UTC)
    spent = await current_spend(store.sessions, budgets, now)
    return [
        BudgetState(**b.model_dump(), period_start=period_start(now, b.period), spent=spent[b.id])
        for b in budgets
    ]


@router.get("/alert_events", response_model=list[SpendAlertFired])
async def list_spend_alert_events(
    limit: int = Query(100, ge=1, le=1000),
    caller: KeyInfo = Depends(admin),
    rt: GatewayRuntime = Depends(runtime),
) -> list[SpendAlertFired]:
    """Spend alerts that fired, newest first: the caller's organisation's (the
    operator's: every organisation's). An outbox a webhook system will deliver."""
    org_id = None if caller.role == "platform" else caller.org_id
    return await SpendAlertStore(_store(rt).sessions).events(org_id, limit)


@router.delete("/{budget_id}", response_model=Budget, openapi_extra=audited("project.updated"))
async def delete_budget(
    budget_id: str,
    request: Request,
    caller: KeyInfo = Depends(admin),
    rt: GatewayRuntime = Depends(runtime),
) -> Budget:
    store = _store(rt)
    budget = await store.get(None if caller.role == "platform" else caller.org_id, budget_id)
    request.state.audit_event = BUDGET_AUDIT_EVENT[budget.scope]
    await subject_org(rt, caller, budget.scope, budget.subject_id)
    deleted = await store.delete(budget.org_id, budget_id)
    await rt.keys_changed(None)
    return deleted
