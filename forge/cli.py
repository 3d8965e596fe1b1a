"""The `forge` command line."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from forge.cli_audit import audit_app
from forge.cli_budgets import budgets_app
from forge.cli_credentials import credentials_app
from forge.cli_db import on_database
from forge.cli_experiments import experiments_app
from forge.cli_finetune import finetune_app
from forge.cli_limits import limits_app
from forge.cli_people import users_app
from forge.cli_tenancy import orgs_app, projects_app
from forge.cli_up import up
from forge.db.migrate import upgrade
from forge.keys import KeyStore, Role
from forge.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    help="PromptForge: one OpenAI-compatible endpoint for every model.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys (written straight to the database).", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
models_app = typer.Typer(help="Self-hosted models.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(orgs_app, name="orgs")
app.add_typer(projects_app, name="projects")
app.add_typer(users_app, name="users")
app.add_typer(limits_app, name="limits")
app.add_typer(audit_app, name="audit")
app.add_typer(budgets_app, name="budgets")
app.add_typer(experiments_app, name="experiments")
app.add_typer(finetune_app, name="finetune")
app.add_typer(credentials_app, name="credentials")


app.command()(up)


def local_ray_address() -> str:
    """RAY_ADDRESS, else the Ray cluster running on this machine. Ray's own "auto" trusts
    /tmp/ray/ray_current_cluster first, which a node stopped without `ray stop` leaves
    pointing at a dead GCS (ray.init then waits for minutes), and picks any cluster when
    several run; here a live GCS decides, and several without a live record are an error."""
    from ray._private.services import find_bootstrap_address, find_gcs_addresses

    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    live = set(find_gcs_addresses())
    recorded = find_bootstrap_address(None)
    if recorded in live:
        return str(recorded)
    if len(live) == 1:
        return live.pop()
    if not live:
        raise ConnectionError("no Ray cluster is running here")
    typer.echo(
        f"Several Ray clusters run here ({', '.join(sorted(live))}): "
        "set RAY_ADDRESS to the one PromptForge runs on.",
        err=True,
    )
    raise typer.Exit(1)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Deployments, replicas and health of the running platform."""
    import ray
    from ray import serve

    from actors.facets import running_facet
    from serve.constants import APP_NAME
    from serve.env import use_ray_token_if_present

    try:
        use_ray_token_if_present()
        context = ray.init(
            address=local_ray_address(),
            log_to_driver=False,
            logging_level="ERROR",
        )
    except ConnectionError:
        typer.echo(
            "PromptForge is not running: no Ray cluster found here (start it with "
            "`bash scripts/up.sh`, or set RAY_ADDRESS to join one).",
            err=True,
        )
        raise typer.Exit(1) from None
    address = context.address_info.get("gcs_address", "?")
    try:
        app_status = serve.status().applications.get(APP_NAME)
        if app_status is None:
            typer.echo("PromptForge is not deployed on this Ray cluster.", err=True)
            raise typer.Exit(1)
        report = {
            "ray_address": address,
            "status": str(getattr(app_status.status, "value", app_status.status)),
            "deployments": {
                name: {
                    "status": str(getattr(d.status, "value", d.status)),
                    "replicas": {
                        str(getattr(k, "value", k)): v for k, v in d.replica_states.items()
                    },
                    "message": d.message,
                }
                for name, d in app_status.deployments.items()
            },
        }
        directory = running_facet("directory")
        replicas = ray.get(directory.replica_stats.remote(), timeout=10)
        report["models"] = model_stats(replicas)
        recorder = running_facet("usage")
        report["usage"] = usage_stats(
            replicas, ray.get(recorder.rejected_count.remote(), timeout=10)
        )
    finally:
        ray.shutdown()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"Ray cluster {address}, application {APP_NAME}: {report['status']}")
    for name, d in report["deployments"].items():
        replicas = ", ".join(f"{n} {state.lower()}" for state, n in d["replicas"].items()) or "-"
        typer.echo(f"  {name:<28} {d['status']:<10} {replicas}")
    usage = report["usage"]
    typer.echo(
        f"  usage ledger: {usage['shipped']} shipped, {usage['pending']} pending, "
        f"{usage['rejected']} set aside (usage_rejects), "
        f"{usage['recovered_from_dead_replicas']} taken over from dead replicas"
    )
    for replica, state in usage["failing"].items():
        typer.echo(
            f"  USAGE SHIPMENTS FAILING on gateway {replica} for {state['failing_for_s']} s: "
            f"{state['last_error']}"
        )
    for name, m in report["models"].items():
        adapters = ", ".join(m["adapters"]) or "no adapters"
        typer.echo(
            f"  model server {name:<15} {m['replicas']} replica(s), {m['running']} running, "
            f"{m['waiting']} queued, {adapters}"
        )


def usage_stats(replicas: dict[str, dict], rejected: int) -> dict[str, Any]:
    """The usage ledger as the gateway replicas last reported it (every 10 s), and the
    records the database refused (set aside in usage_rejects)."""
    gateways = {r: s["usage"] for r, s in replicas.items() if s.get("gateway")}
    total = {
        k: sum(g[k] for g in gateways.values())
        for k in ("shipped", "pending", "recovered_from_dead_replicas")
    }
    failing = {r: g for r, g in gateways.items() if not g["healthy"]}
    return {**total, "rejected": rejected, "failing": failing, "per_replica": gateways}


def model_stats(replicas: dict[str, dict]) -> dict[str, dict]:
    """Per self-hosted provider: replicas reporting, requests running and queued, and
    the adapters loaded anywhere (with each replica's own view)."""
    models: dict[str, dict] = {}
    for replica, stats in sorted(replicas.items()):
        if "provider" not in stats:
            continue
        m = models.setdefault(
            stats["provider"],
            {"replicas": 0, "running": 0, "waiting": 0, "adapters": [], "per_replica": {}},
        )
        m["replicas"] += 1
        m["running"] += stats["running"]
        m["waiting"] += stats["waiting"]
        m["adapters"] = sorted(set(m["adapters"]) | set(stats["adapters"]))
        m["per_replica"][replica] = stats
    return models


def _with_store(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    """Run ``action`` against the key store of the configured database (migrated first)."""
    return on_database(KeyStore, action)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="The default organization's admin key.")
    ] = False,
    operator: Annotated[
        bool, typer.Option("--operator", help="A platform operator's key (every organization).")
    ] = False,
    model: Annotated[
        list[str] | None, typer.Option(help="Only this model (repeatable; default: all).")
    ] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option(help="Only this endpoint, e.g. /v1/chat/completions (repeatable)."),
    ] = None,
) -> None:
    """Create a key of the default organization's default project and print it (the only
    time it is shown)."""
    role: Role = "platform" if operator else "admin" if admin else "user"
    created = _with_store(
        lambda store: store.create_key(
            name, role, allowed_models=model or None, allowed_endpoints=endpoint or None
        )
    )
    typer.echo(created.key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (prefixes only)."""
    for k in _with_store(lambda store: store.list_keys()):
        state = "revoked" if k.revoked_at else "active"
        typer.echo(
            f"{k.id}  {k.prefix}…  {k.role:<8}  {state:<7}  {k.org_id}/{k.project_id}  {k.name}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id (running gateways stop honouring it within the auth cache TTL)."""
    _with_store(lambda store: store.revoke_key(key_id))
    typer.echo(f"revoked {key_id}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema."""
    url = Settings().resolved_database_url()
    upgrade(url)
    typer.echo("database is at the latest revision")


@models_app.command("build-tiny")
def models_build_tiny(
    out: Annotated[Path | None, typer.Option(help="Where to save it.")] = None,
) -> None:
    """Build the tiny local Llama-style model and tokenizer (no model hub needed)."""
    from serve.models.tiny import build_tiny_model

    target = out or Settings().data_dir.resolve() / "models" / "tiny-llama"
    typer.echo(f"built {build_tiny_model(target)}")


@models_app.command("build-adapter")
def models_build_adapter(
    out: Annotated[Path, typer.Option(help="Where to save the adapter.")],
    base: Annotated[
        Path | None, typer.Option(help="Base model directory (default: the tiny model).")
    ] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of its random weights.")] = 1,
) -> None:
    """Build a random LoRA adapter for a base model, saved by PEFT (to try adapter
    serving without a fine-tuning run)."""
    from serve.models.tiny import build_tiny_adapter, build_tiny_model, is_built

    base = base or Settings().data_dir.resolve() / "models" / "tiny-llama"
    if not is_built(base):
        build_tiny_model(base)
    typer.echo(f"built {build_tiny_adapter(base, out, rank=rank, seed=seed)}")


if __name__ == "__main__":
    app()
