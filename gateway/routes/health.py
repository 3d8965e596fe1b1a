"""Liveness (the process answers) and readiness (every deployment and actor answers)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse

from gateway.deps import runtime
from gateway.runtime import GatewayRuntime

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(rt: GatewayRuntime = Depends(runtime)) -> JSONResponse:
    components = await rt.readiness()
    usage = rt.shipper.state()
    components["usage:shipping"] = usage["healthy"]
    components["accepting"] = not rt.drain.draining
    ok = all(components.values())
    # What the start-up warm-up has set up (gateway/warm.py); not part of readiness.
    warm = dict(rt.warm_up.results) if rt.warm_up is not None else {}
    return JSONResponse(
        {
            "status": "ready" if ok else "not_ready",
            "components": components,
            "usage": usage,
            "warm": warm,
        },
        status_code=200 if ok else 503,
    )
