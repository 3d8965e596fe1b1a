"""`forge up`: start or join Ray, migrate, deploy, serve in the foreground, stop cleanly.

The driver (this process) lives as long as the platform, and what it imports stays
resident, so it imports Ray and the config and little else: the database is prepared in
a child process (``forge.db.prepare``) and the application is built and deployed by a
one-off Ray task whose worker exits after it (``deploy_in_task``), so neither Alembic
nor the gateway's code is ever loaded here. Ray Serve's client is imported when
stopping. (The driver held 221 MiB RSS when it did all of it itself.)
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import ray

from actors.facets import running_facet
from forge.config import PlatformConfig
from forge.db.prepare import prepare_in_child
from forge.settings import Settings
from serve.constants import APP_NAME, DRAIN_MARGIN_S
from serve.env import FAST_SERVE_ENV, use_ray_token_if_present
from serve.haproxy_shim import HOST_ENV
from serve.lean_workers import WORKER_ENV
from serve.local_ray import init_local_head
from serve.processes import descendants, named, terminate

log = logging.getLogger(__name__)


def prepare_environment(settings: Settings, host: str = "127.0.0.1") -> Settings:
    """Make paths absolute and export what Ray's worker processes must inherit (HAProxy's
    own listeners go on the platform's ``host``)."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FORGE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault(HOST_ENV, host)
    for key, value in FAST_SERVE_ENV.items():
        os.environ.setdefault(key, value)
    return settings.model_copy(update={"data_dir": data_dir})


def start(
    settings: Settings,
    config: PlatformConfig,
    host: str,
    port: int,
    signals: StopSignals | None = None,
    replica_logs: bool = False,
) -> tuple[str | None, Any]:
    """Migrate, start Ray and deploy. Returns a newly generated admin key (if any) and
    the Ray context (``serve.local_ray``: a local head streams replicas' logs to the
    console only with ``replica_logs``). ``ray.init`` installs Ray's own SIGTERM handler (a stack
    dump, then abort), so ``signals`` are installed again right after it. ``settings``
    must be this process's environment's (``prepare_environment``): the database is
    prepared by a child that reads them from there."""
    new_key = prepare_in_child()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        use_ray_token_if_present()
        context = ray.init(address=address, namespace=APP_NAME, runtime_env=WORKER_ENV)
    else:
        context = init_local_head(APP_NAME, replica_logs=replica_logs)
    if signals is not None:
        signals.install()
    deploy_in_task(config, host, port, reap_haproxy=not address)
    return new_key, context


def deploy_in_task(
    config: PlatformConfig, host: str, port: int, reap_haproxy: bool, attempts: int = 2
) -> None:
    """``deploy``, in a one-off Ray task (``max_calls=1``: its worker process exits with
    the gateway's code it imported). A failed try is retried once from here, after
    clearing Serve and, on our own head (``reap_haproxy``), any HAProxy it left."""
    task = ray.remote(num_cpus=0, max_calls=1, max_retries=0)(deploy).options(name="forge-deploy")
    for attempt in range(1, attempts + 1):
        try:
            ray.get(task.remote(config, host, port, attempts=1))
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("deploying failed (%s); retrying once", str(exc).splitlines()[0])
            _clear_serve(reap_haproxy)


def _clear_serve(reap_haproxy: bool) -> None:
    from ray import serve

    haproxies = named(descendants(os.getpid()), "haproxy") if reap_haproxy else []
    serve.shutdown()
    terminate(haproxies)


def deploy(config: PlatformConfig, host: str, port: int, attempts: int = 2) -> None:
    """Start Serve and run the application, once more if the first try fails.

    Serve's HAProxy ingress reloads HAProxy as replicas come up; now and then the new
    HAProxy process finds the port still held by the old one ("Address already in use"),
    crashes, and `serve.run` fails (seen in ~1 of 10 starts here, Ray 2.60). A second
    start, after clearing Serve and any HAProxy it left behind, has always succeeded.
    """
    from ray import serve

    from serve.app import build_application

    for attempt in range(1, attempts + 1):
        try:
            serve.start(http_options={"host": host, "port": port})
            serve.run(build_application(config), name=APP_NAME, route_prefix="/", blocking=False)
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("deploying failed (%s); retrying once", str(exc).splitlines()[0])
            _clear_serve(reap_haproxy=True)


def drain(timeout_s: float, poll_s: float = 0.25) -> bool:
    """Drain every gateway replica before Serve stops (gateway/drain.py): they stop
    admitting, finish what is in flight up to ``timeout_s``, end the streams still open,
    and ship their usage. True when every replica reported itself done in time."""
    try:
        directory = running_facet("directory")
        gateways = gateway_replica_count()
        deadline = ray.get(directory.begin_drain.remote(timeout_s), timeout=10)
    except Exception as exc:  # nothing deployed, or the directory is gone
        log.warning("no drain: %s", exc)
        return False
    give_up = deadline + DRAIN_MARGIN_S
    while time.time() < give_up:
        time.sleep(poll_s)
        try:
            reports = ray.get(directory.replica_stats.remote(), timeout=10).values()
        except Exception:
            continue
        draining = [r for r in reports if r.get("gateway") and r.get("draining")]
        done = [r for r in draining if r["in_flight"] == 0 and r["usage"]["pending"] == 0]
        if len(draining) >= gateways and len(done) == len(draining):
            return True
    log.warning("drain: gave up waiting for the gateway replicas after %.0f s", timeout_s)
    return False


def gateway_replica_count() -> int:
    """Running gateway replicas, as Serve reports them."""
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None or "gateway" not in app.deployments:
        return 0
    states = app.deployments["gateway"].replica_states
    return sum(n for state, n in states.items() if str(getattr(state, "value", state)) == "RUNNING")


def stop(own_ray: bool, drain_timeout_s: float | None = None) -> None:
    """Drain the gateways (if ``drain_timeout_s``), shut Serve down, then our own Ray,
    then any HAProxy that outlived them."""
    from ray import serve

    haproxies = named(descendants(os.getpid()), "haproxy")
    try:
        if drain_timeout_s is not None:
            drain(drain_timeout_s)
        serve.shutdown()
    finally:
        if own_ray:
            ray.shutdown()
            terminate([p for p in haproxies if p != os.getpid()])


class StopRequested(BaseException):
    """Ctrl-C / SIGTERM while the platform is still starting: unwind and stop cleanly.
    A BaseException, so that no ``except Exception`` on the way swallows it."""


class StopSignals:
    """SIGINT and SIGTERM for `forge up`, installed before anything starts.

    While starting, the first signal raises ``StopRequested`` (a SIGTERM between Serve
    answering and the URL being printed used to kill the process with status 15 and a
    stack dump). Once serving, handlers only record the signal: a handler that touched a
    lock (threading.Event) deadlocked when a second signal arrived while the first
    handler held it (seen with `timeout` forwarding SIGTERM on top of a direct one).
    After the first signal, later ones are ignored, so that a second Ctrl-C cannot
    interrupt the shutdown."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._starting = True
        self.install()

    def install(self) -> None:
        """(Again, after anything that took the signals over, such as ``ray.init``.)"""
        if self.received:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._record)

    def _record(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if len(self.received) == 1 and self._starting:
            self.ignore()
            raise StopRequested(signum)

    def started(self) -> None:
        """From here on a signal is only recorded (see ``wait``)."""
        self._starting = False

    def wait(self, poll_s: float = 0.2) -> int:
        """Block until SIGINT or SIGTERM; returns the signal, and ignores later ones."""
        self.started()
        while not self.received:
            time.sleep(poll_s)
        self.ignore()
        return self.received[0]

    @staticmethod
    def ignore() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def wait_for_signal(poll_s: float = 0.2) -> int:
    """Block until SIGINT or SIGTERM (`StopSignals.wait`)."""
    return StopSignals().wait(poll_s)
