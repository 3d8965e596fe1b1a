"""``forge finetune``: fine-tuning jobs from a terminal, through the platform's own API
with the official ``openai`` SDK (so it needs only an API key and the URL): upload and
create, list, follow a job's events with a live progress line, cancel."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

finetune_app = typer.Typer(
    help="Fine-tuning jobs (through the platform's API).", no_args_is_help=True
)
BaseUrl = Annotated[
    str,
    typer.Option(
        envvar="OPENAI_BASE_URL", help="The platform's API (default: a local `forge up`)."
    ),
]
ApiKey = Annotated[str, typer.Option(envvar=["FORGE_API_KEY", "OPENAI_API_KEY"], help="API key.")]
FINISHED = ("succeeded", "failed", "cancelled")
BAR = 24


def client(base_url: str, api_key: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=2)


def progress_line(metrics: dict[str, Any], eta_s: float | None) -> str:
    """``[######------]  12/32  loss 2.1432  val 2.2001  3,065 tok/s  ETA 0:00:07``"""
    step, total = int(metrics.get("step", 0)), max(1, int(metrics.get("total_steps", 1)))
    filled = BAR * min(step, total) // total
    parts = [f"[{'#' * filled}{'-' * (BAR - filled)}] {step:>5}/{total}"]
    if metrics.get("train_loss") is not None:
        parts.append(f"loss {metrics['train_loss']:.4f}")
    if metrics.get("valid_loss") is not None:
        parts.append(f"val {metrics['valid_loss']:.4f}")
    if metrics.get("tokens_per_s"):
        parts.append(f"{metrics['tokens_per_s']:,.0f} tok/s")
    if eta_s is not None:
        parts.append(f"ETA {timedelta(seconds=round(eta_s))}")
    return "  ".join(parts)


def _upload(api: Any, path_or_id: str) -> str:
    """A file id as it is, or a local JSONL file uploaded with purpose fine-tune."""
    if path_or_id.startswith("file-") and not Path(path_or_id).exists():
        return path_or_id
    with Path(path_or_id).open("rb") as f:
        return str(api.files.create(file=f, purpose="fine-tune").id)


@finetune_app.command("create")
def create(
    model: Annotated[str, typer.Option(help="The self-hosted base model.")],
    training_file: Annotated[str, typer.Option("--file", help="A JSONL path or a file id.")],
    base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    api_key: ApiKey = "",
    validation_file: Annotated[str | None, typer.Option(help="A JSONL path or file id.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the model's name.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: auto).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: auto).")] = None,
    lr_multiplier: Annotated[float | None, typer.Option(help="Learning rate multiplier.")] = None,
    hyperparameters: Annotated[
        str | None, typer.Option(help="More hyperparameters as JSON (lora_rank, …).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="For a reproducible run.")] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per training worker.")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per training worker.")] = 0.0,
    deploy: Annotated[bool, typer.Option(help="Serve the model when the job succeeds.")] = False,
    follow: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = True,
) -> None:
    """Upload the data (if paths are given) and start a job."""
    api = client(base_url, api_key)
    hyper: dict[str, Any] = json.loads(hyperparameters) if hyperparameters else {}
    for name, value in (("n_epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            hyper[name] = value
    if lr_multiplier is not None:
        hyper["learning_rate_multiplier"] = lr_multiplier
    args: dict[str, Any] = {
        "model": model,
        "training_file": _upload(api, training_file),
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "extra_body": {
            "deploy": deploy,
            "resources": {"cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker},
        },
    }
    if validation_file is not None:
        args["validation_file"] = _upload(api, validation_file)
    if suffix is not None:
        args["suffix"] = suffix
    if seed is not None:
        args["seed"] = seed
    job = api.fine_tuning.jobs.create(**args)
    typer.echo(f"{job.id}  {job.status}  epochs {job.hyperparameters.n_epochs}")
    if follow:
        _follow(api, job.id)


@finetune_app.command("list")
def list_jobs(
    base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    api_key: ApiKey = "",
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """The project's jobs, newest first."""
    for job in client(base_url, api_key).fine_tuning.jobs.list(limit=limit).data:
        model = job.fine_tuned_model or "-"
        typer.echo(f"{job.id}  {job.status:<10} {job.model:<20} {model}")


@finetune_app.command("events")
def events(
    job_id: Annotated[str, typer.Argument(help="The job.")],
    base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    api_key: ApiKey = "",
    follow: Annotated[bool, typer.Option(help="Keep showing progress until it ends.")] = False,
) -> None:
    """The job's events, oldest first (``--follow``: then its progress, live)."""
    api = client(base_url, api_key)
    for event in reversed(api.fine_tuning.jobs.list_events(job_id, limit=100).data):
        typer.echo(f"{_when(event.created_at)}  {event.level:<5} {event.message}")
    if follow:
        _follow(api, job_id)


@finetune_app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job.")],
    base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    api_key: ApiKey = "",
) -> None:
    """Cancel the job; its workers stop at their next step."""
    job = client(base_url, api_key).fine_tuning.jobs.cancel(job_id)
    typer.echo(f"{job.id}  {job.status}")


def _follow(api: Any, job_id: str, poll_s: float = 1.0) -> None:
    """The progress line, redrawn as metrics arrive; the job's messages above it."""
    seen: set[str] = set()
    started = time.monotonic()
    tty = sys.stdout.isatty() and not os.environ.get("CI")
    while True:
        page = api.fine_tuning.jobs.list_events(job_id, limit=100).data
        latest: dict[str, Any] | None = None
        for event in reversed(page):
            if event.id in seen:
                continue
            seen.add(event.id)
            if event.type == "metrics":
                latest = dict(event.data or {})
            else:
                typer.echo(("\r\033[K" if tty else "") + event.message)
        if latest is not None:
            step, total = latest.get("step", 0), latest.get("total_steps", 0)
            elapsed = time.monotonic() - started
            eta = elapsed / step * (total - step) if step else None
            line = progress_line(latest, eta)
            typer.echo(("\r\033[K" + line) if tty else line, nl=not tty)
        job = api.fine_tuning.jobs.retrieve(job_id)
        if job.status in FINISHED:
            if tty:
                typer.echo()
            typer.echo(f"{job.id}  {job.status}  {job.fine_tuned_model or ''}".rstrip())
            if job.status == "failed" and job.error is not None:
                typer.echo(f"error {job.error.code}: {job.error.message}", err=True)
                raise typer.Exit(1)
            return
        time.sleep(poll_s)


def _when(created_at: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(created_at))
