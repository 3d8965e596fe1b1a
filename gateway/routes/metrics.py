"""`GET /metrics` for Prometheus, with the platform operator's key (its labels name every
organisation and project): `authorization: {credentials: <key>}` in the scrape config."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from forge.errors import NotFound
from forge.keys import KeyInfo
from gateway.deps import operator, runtime
from gateway.metrics import scrape
from gateway.runtime import GatewayRuntime

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(
    _: KeyInfo = Depends(operator), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    if rt.metrics is None:
        raise NotFound("This gateway exports no metrics.", code="not_found")
    targets = [m.name for m in rt.router.models]
    body = await scrape(rt.metrics, rt.readiness, targets, time.time())
    return Response(body, media_type=CONTENT_TYPE_LATEST)
