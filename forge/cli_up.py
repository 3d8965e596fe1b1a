"""`forge up`, importable without the rest of the command line.

`forge up`'s process is the platform's Ray driver for as long as the platform runs, and
whatever it imports stays resident: the full command line (every sub-command's stores)
costs ~40 MiB it never uses. ``forge.entry`` runs this module alone for `forge up`; the
full CLI registers the same command (so `forge --help` lists it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from forge.config import load_config
from forge.settings import Settings


def up(
    config: Annotated[Path | None, typer.Option(help="Platform YAML config.")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
    replica_logs: Annotated[
        bool,
        typer.Option(
            help="Stream the replicas' and actors' logs to this console (a local Ray "
            "only; costs a log-monitor process). Otherwise they stay in Ray's log folder."
        ),
    ] = False,
) -> None:
    """Start (or join, with RAY_ADDRESS) Ray, migrate the database, deploy and serve
    in the foreground until Ctrl-C / SIGTERM."""
    from serve import launcher
    from serve.local_ray import logs_folder

    signals = launcher.StopSignals()
    settings = Settings()
    cfg = load_config(config or settings.config)
    host = host or cfg.server.host
    port = port or cfg.server.port
    settings = launcher.prepare_environment(settings, host)
    cfg = cfg.model_copy(
        update={"server": cfg.server.model_copy(update={"host": host, "port": port})}
    )
    own_ray = not os.environ.get("RAY_ADDRESS")
    typer.echo(f"Starting PromptForge ({'local Ray' if own_ray else os.environ['RAY_ADDRESS']}) …")
    try:
        new_key, context = launcher.start(settings, cfg, host, port, signals, replica_logs)
        active = cfg.active()
        typer.echo(f"PromptForge is serving at http://{host}:{port}/v1")
        typer.echo(f"Ray cluster: {context.address_info['gcs_address']} (`forge status` finds it)")
        if own_ray and not replica_logs:
            typer.echo(f"Replica logs: {logs_folder(context)} (or `forge up --replica-logs`)")
        typer.echo(f"Models: {', '.join(m.name for m in active.models) or '(none configured)'}")
        if new_key:
            typer.echo(f"Admin key (shown once, store it now): {new_key}")
        elif settings.master_key:
            typer.echo("Admin key: the value of FORGE_MASTER_KEY")
        else:
            typer.echo("Admin key: shown at first start; `forge keys create --admin` makes another")
        signals.wait()
    except launcher.StopRequested:
        typer.echo("Stop requested while starting.")
    finally:
        signals.ignore()
        typer.echo("Stopping PromptForge (draining requests in flight) …")
        launcher.stop(own_ray, cfg.gateway.drain_timeout_s)
        typer.echo("PromptForge stopped.")
