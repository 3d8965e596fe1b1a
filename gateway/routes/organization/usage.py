"""``/v1/organization/usage/completions``, ``/usage/embeddings`` and ``/costs``: an
organisation's usage and costs in time buckets, as OpenAI's Admin API reports them
(forge.reports)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

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
