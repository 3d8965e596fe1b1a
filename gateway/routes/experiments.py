"""``/admin/experiments``: the configured A/B experiments and each one's report (arms'
means with 95% confidence intervals, and whether each differs from the control). The
platform operator's: an experiment's traffic spans organisations."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query

from forge.config import Experiment
from forge.errors import NotFound, ServiceUnavailable
from forge.keys import KeyInfo
from forge.routing.experiments import ExperimentReport, report
from gateway.deps import operator, runtime
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/admin/experiments", tags=["operator"])


@router.get("", response_model=list[Experiment])
async def list_experiments(
    _: KeyInfo = Depends(operator), rt: GatewayRuntime = Depends(runtime)
) -> list[Experiment]:
    return rt.router.experiments


@router.get("/{name}/report", response_model=ExperimentReport)
async def experiment_report(
    name: str,
    since: int | None = Query(
        None, ge=0, le=253402300799, description="Unix time: only requests since."
    ),
    _: KeyInfo = Depends(operator),
    rt: GatewayRuntime = Depends(runtime),
) -> ExperimentReport:
    experiment = rt.router.experiment(name)
    if experiment is None:
        raise NotFound(f"No experiment {name!r}.", param="name")
    if rt.tenancy is None:
        raise ServiceUnavailable("Reports need the platform's database.", retry_after=5)
    await rt.shipper.flush()
    start = None if since is None else datetime.fromtimestamp(since, UTC)
    return await report(rt.tenancy.sessions, experiment, start)
