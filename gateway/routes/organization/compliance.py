"""``GET /v1/organization/compliance/{report}`` (our path): an organisation's compliance
reports (forge.identity.compliance): ``roles``, ``keys``, ``admin_actions`` and
``failed_logins`` (the last two over ``start_time``/``end_time``, Unix seconds), as JSON
or, with ``format=csv``, as a CSV file."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from forge.identity.compliance import ComplianceReports, as_csv
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(prefix="/compliance", tags=["organization"])


@router.get("/{report}", response_model=None)
async def compliance_report(
    report: str,
    start_time: int | None = Query(None, ge=0),
    end_time: int | None = Query(None, ge=0),
    format: Literal["json", "csv"] = Query("json"),
    call: OrgCall = Depends(org_call),
) -> dict[str, Any] | Response:
    rows = await ComplianceReports(call.store.sessions).report(
        report, call.org_id, start_time, end_time
    )
    if format == "csv":
        return Response(
            as_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{report}.csv"'},
        )
    return {"object": "list", "report": report, "data": rows, "has_more": False}
