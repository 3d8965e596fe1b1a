"""``/admin/audit``: the platform operator's checks on the whole audit log (its chain
spans organisations): ``verify`` walks it and names the first entry changed or the
first link broken by a deletion; ``export`` streams it (or one organisation's part) as
JSON Lines, each line an entry with its hashes, for keeping elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Query
from starlette.responses import StreamingResponse

from forge.audit.chain import Verdict
from forge.audit.store import AuditStore
from forge.errors import ServiceUnavailable
from forge.keys import KeyInfo
from gateway.deps import operator, runtime
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/admin/audit", tags=["operator"])


def _store(rt: GatewayRuntime) -> AuditStore:
    if rt.audit is None:
        raise ServiceUnavailable("The audit log is not configured.", retry_after=5)
    return rt.audit


@router.get("/verify", response_model=Verdict)
async def verify_audit_log(
    _: KeyInfo = Depends(operator), rt: GatewayRuntime = Depends(runtime)
) -> Verdict:
    return await _store(rt).verify()


@router.get("/export")
async def export_audit_log(
    org_id: str | None = Query(None, max_length=40),
    _: KeyInfo = Depends(operator),
    rt: GatewayRuntime = Depends(runtime),
) -> StreamingResponse:
    store = _store(rt)

    async def lines() -> AsyncIterator[bytes]:
        async for entry in store.entries(org_id):
            yield orjson.dumps(entry.model_dump()) + b"\n"

    return StreamingResponse(lines(), media_type="application/jsonl")
