"""``/v1/organization/usage/export``: every usage record of the organisation in a time
range, streamed as JSON Lines or CSV (the Platform plan's usage export; not an OpenAI
path). Its sub-organisations' records come with it when asked for."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from forge.errors import InvalidRequest
from forge.usage_export import MEDIA_TYPES, ExportFormat, encoded, usage_rows
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(tags=["organization"])


def _moment(seconds: int, param: str) -> datetime:
    if not 0 <= seconds <= 2**37:
        raise InvalidRequest(f"Invalid {param!r}: {seconds}.", param=param, code="invalid_value")
    return datetime.fromtimestamp(seconds, UTC)


@router.get(
    "/usage/export",
    response_class=StreamingResponse,
    openapi_extra=in_plan("usage_export"),
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
)
async def export_usage(
    start_time: int = Query(description="Unix seconds, inclusive."),
    end_time: int | None = Query(None, description="Unix seconds, exclusive; default: now."),
    format: ExportFormat = Query("jsonl"),
    project_ids: list[str] | None = Query(None),
    include_sub_organizations: bool = Query(False),
    call: OrgCall = Depends(org_call),
) -> StreamingResponse:
    start = _moment(start_time, "start_time")
    end = _moment(end_time if end_time is not None else int(time.time()) + 1, "end_time")
    if end <= start:
        raise InvalidRequest(
            "'end_time' must be after 'start_time'.", param="end_time", code="invalid_value"
        )
    org_ids = [call.org_id]
    if include_sub_organizations:
        org_ids += [o.id for o in await call.store.sub_organizations(call.org_id)]
    rows = usage_rows(call.store.sessions, org_ids, start, end, project_ids or ())
    name = f"usage-{call.org_id}-{start_time}-{end_time or 'now'}.{format}"
    return StreamingResponse(
        encoded(rows, format),
        media_type=MEDIA_TYPES[format],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
