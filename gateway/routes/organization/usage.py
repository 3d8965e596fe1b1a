"""``/v1/organization/usage/completions``, ``/usage/embeddings`` and ``/costs``: an
organisation's usage and costs in time buckets, as OpenAI's Admin API reports them
(forge.reports); ``/usage/analytics`` (our path): requests, errors, tokens, cost and
latency percentiles per provider, model, project and day, as JSON or CSV
(forge.analytics)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from forge.analytics import AnalyticsList, group_by_names, to_csv, usage_analytics
from forge.reports import Report, ReportQuery, UsageReports
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(tags=["organization"])
Ids = list[str] | None


def _query(
    start_time: int = Query(),
    end_time: int | None = Query(None),
    bucket_width: str = Query("1d", max_length=4),
    project_ids: Ids = Query(None),
    api_key_ids: Ids = Query(None),
    models: Ids = Query(None),
    group_by: Ids = Query(None),
    limit: int | None = Query(None),
    page: str | None = Query(None, max_length=20),
) -> ReportQuery:
    return ReportQuery(
        start_time=start_time,
        end_time=end_time,
        bucket_width=bucket_width,
        project_ids=project_ids or [],
        api_key_ids=api_key_ids or [],
        models=models or [],
        group_by=group_by or [],
        limit=limit,
        page=page,
    )


async def _report(report: Report, call: OrgCall, q: ReportQuery) -> dict[str, Any]:
    return await UsageReports(call.store.sessions).report(report, call.org_id, q)


@router.get("/usage/completions")
async def usage_completions(
    q: ReportQuery = Depends(_query), call: OrgCall = Depends(org_call)
) -> dict[str, Any]:
    return await _report("completions", call, q)


@router.get("/usage/embeddings")
async def usage_embeddings(
    q: ReportQuery = Depends(_query), call: OrgCall = Depends(org_call)
) -> dict[str, Any]:
    return await _report("embeddings", call, q)


@router.get("/costs")
async def costs(
    q: ReportQuery = Depends(_query), call: OrgCall = Depends(org_call)
) -> dict[str, Any]:
    return await _report("costs", call, q)


@router.get(
    "/usage/analytics",
    response_model=AnalyticsList,
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def usage_analytics_report(
    start_time: int = Query(description="Unix seconds, inclusive."),
    end_time: int | None = Query(None, description="Unix seconds, exclusive; default: now."),
    group_by: Ids = Query(None, description="provider, model, project, day (or a comma list)"),
    project_ids: Ids = Query(None),
    format: Literal["json", "csv"] = Query("json"),
    call: OrgCall = Depends(org_call),
) -> AnalyticsList | Response:
    names = group_by_names(group_by or [])
    projects = [p for value in project_ids or [] for p in value.split(",") if p]
    rows = await usage_analytics(
        call.store.sessions,
        call.org_id,
        start_time=start_time,
        end_time=end_time,
        group_by=names,
        project_ids=projects,
    )
    if format == "csv":
        name = f"usage-analytics-{call.org_id}-{start_time}-{end_time or 'now'}.csv"
        return Response(
            to_csv(rows, names),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )
    return AnalyticsList(data=rows)
