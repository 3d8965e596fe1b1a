"""``forge experiments``: the A/B experiments of the platform's config, and each one's
report from the usage records in the database (as ``/admin/experiments/{name}/report``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.cli_db import on_database
from forge.config import Experiment, load_config
from forge.routing.experiments import ArmReport, Estimate, ExperimentReport, report
from forge.settings import Settings

experiments_app = typer.Typer(help="A/B experiments and their reports.", no_args_is_help=True)
ConfigOpt = Annotated[Path | None, typer.Option(help="Platform YAML config.")]


def _experiments(config: Path | None) -> dict[str, Experiment]:
    cfg = load_config(config or Settings().config)
    return {e.name: e for e in cfg.routing.experiments}


@experiments_app.command("list")
def experiments_list(config: ConfigOpt = None) -> None:
    """The experiments and their arms."""
    for e in _experiments(config).values():
        arms = ", ".join(f"{a.name}={a.model} {a.percent:g}%" for a in e.arms)
        typer.echo(f"{e.name}  sticky by {e.sticky}  {arms}")


def _figure(e: Estimate, scale: float = 1.0, digits: int = 2) -> str:
    if e.mean is None:
        return "-"
    low, high = (e.low or 0) * scale, (e.high or 0) * scale
    return f"{e.mean * scale:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _line(arm: ArmReport) -> str:
    marks = " ".join(
        f"{what}{'*' if c.significant else ''}(p={c.p_value:.3g})"
        for what, c in arm.versus_control.items()
        if c.p_value is not None
    )
    return (
        f"{arm.arm:<10} {arm.model:<20} {arm.requests:>7}  "
        f"errors {_figure(arm.error_rate, 100, 1)}%  latency {_figure(arm.latency_ms, 1, 0)} ms  "
        f"cost ${_figure(arm.cost_usd, 1, 6)}  feedback {_figure(arm.feedback)}  "
        f"quality {_figure(arm.quality)}  {marks}"
    )


@experiments_app.command("report")
def experiments_report(
    name: Annotated[str, typer.Argument(help="The experiment.")],
    since: Annotated[
        datetime | None, typer.Option(help="Only requests since (ISO 8601, UTC).")
    ] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each arm's means with 95% confidence intervals; * marks a difference from the
    control (the first arm) significant at 5%."""
    experiment = _experiments(config).get(name)
    if experiment is None:
        raise typer.BadParameter(f"no experiment {name!r} in the config", param_hint="NAME")
    start = None if since is None else since.replace(tzinfo=since.tzinfo or UTC)

    async def action(sessions: async_sessionmaker[AsyncSession]) -> ExperimentReport:
        return await report(sessions, experiment, start)

    result = on_database(lambda sessions: sessions, action)
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    typer.echo(f"{result.experiment} (control: {result.control})")
    for arm in result.arms:
        typer.echo(_line(arm))
