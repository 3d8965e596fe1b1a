"""``/v1/organization/spend_alerts`` and ``/v1/organization/projects/{project_id}/
spend_alerts``: a month's spend threshold of the organisation or of one project; the
usage recorder fires each once a month (forge.budgets.alerts)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import APIRouter, Depends, Query

from forge.budgets.alerts import (
    AlertScope,
    SpendAlertBody,
    SpendAlertDeleted,
    SpendAlertObject,
    SpendAlertStore,
)
from forge.tenancy.objects import Page
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(tags=["organization"], route_class=AuditedRoute)
Order = Literal["asc", "desc"]
PATHS: dict[AlertScope, str] = {
    "organization": "/spend_alerts",
    "project": "/projects/{project_id}/spend_alerts",
}


def _store(call: OrgCall) -> SpendAlertStore:
    return SpendAlertStore(call.store.sessions)


Subject = tuple[AlertScope, str]


async def _organization(call: OrgCall = Depends(org_call)) -> Subject:
    return ("organization", call.org_id)


async def _project(project_id: str) -> Subject:
    return ("project", project_id)


SUBJECTS: dict[AlertScope, Callable[..., Awaitable[Subject]]] = {
    "organization": _organization,
    "project": _project,
}


def _routes(scope: AlertScope) -> None:
    """The five routes of one scope's alerts (the two scopes differ only in path)."""
    path = PATHS[scope]
    of = SUBJECTS[scope]
    event = "project.updated" if scope == "project" else "organization.updated"

    @router.get(path, response_model=Page[SpendAlertObject], name=f"list_{scope}_spend_alerts")
    async def list_alerts(
        paging: Paging = Depends(),
        order: Order = Query("asc"),
        subject: Subject = Depends(of),
        call: OrgCall = Depends(org_call),
    ) -> Page[SpendAlertObject]:
        return await _store(call).list_alerts(
            call.org_id, subject, paging.limit, paging.after, order
        )

    @router.post(
        path,
        response_model=SpendAlertObject,
        openapi_extra=audited(event),
        name=f"create_{scope}_spend_alert",
    )
    async def create_alert(
        body: SpendAlertBody, subject: Subject = Depends(of), call: OrgCall = Depends(org_call)
    ) -> SpendAlertObject:
        return await _store(call).create(call.org_id, subject, body)

    @router.get(
        path + "/{alert_id}", response_model=SpendAlertObject, name=f"get_{scope}_spend_alert"
    )
    async def get_alert(
        alert_id: str, subject: Subject = Depends(of), call: OrgCall = Depends(org_call)
    ) -> SpendAlertObject:
        return await _store(call).get(call.org_id, subject, alert_id)

    @router.post(
        path + "/{alert_id}",
        response_model=SpendAlertObject,
        openapi_extra=audited(event),
        name=f"update_{scope}_spend_alert",
    )
    async def update_alert(
        alert_id: str,
        body: SpendAlertBody,
        subject: Subject = Depends(of),
        call: OrgCall = Depends(org_call),
    ) -> SpendAlertObject:
        return await _store(call).update(call.org_id, subject, alert_id, body)

    @router.delete(
        path + "/{alert_id}",
        response_model=SpendAlertDeleted,
        openapi_extra=audited(event),
        name=f"delete_{scope}_spend_alert",
    )
    async def delete_alert(
        alert_id: str, subject: Subject = Depends(of), call: OrgCall = Depends(org_call)
    ) -> SpendAlertDeleted:
        await _store(call).delete(call.org_id, subject, alert_id)
        return SpendAlertDeleted(id=alert_id, object=f"{scope}.spend_alert.deleted")


for _scope in PATHS:
    _routes(_scope)
