"""`forge up`: start or join Ray, migrate, deploy, serve in the foreground, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import ray
from ray import serve

from forge.config import PlatformConfig
from forge.db.engine import make_engine, make_sessionmaker
from forge.db.migrate import upgrade
from forge.keys import KeyStore
from forge.settings import Settings
from serve.app import APP_NAME, build_application
from serve.env import FAST_SERVE_ENV
from serve.processes import descendants, named, terminate

log = logging.getLogger(__name__)


def prepare_environment(settings: Settings) -> Settings:
    """Make paths absolute and export what Ray's worker processes must inherit."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FORGE_DATA_DIR"] = str(data_dir)
    for key, value in FAST_SERVE_ENV.items():
        os.environ.setdefault(key, value)
    return settings.model_copy(update={"data_dir": data_dir})


async def _ensure_master(url: str, master_key: str | None) -> str | None:
    engine = make_engine(url)
    try:
        return await KeyStore(make_sessionmaker(engine)).ensure_master(master_key)
    finally:
        await engine.dispose()


def start(
    settings: Settings, config: PlatformConfig, host: str, port: int
) -> tuple[str | None, str]:
    """Migrate, start Ray and deploy. Returns a newly generated admin key (if any) and
    the Ray cluster's address."""
    url = settings.resolved_database_url()
    upgrade(url)
    master = settings.master_key.get_secret_value() if settings.master_key else None
    new_key = asyncio.run(_ensure_master(url, master))
    address = os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, namespace=APP_NAME)
    else:
        context = ray.init(
            include_dashboard=False, _node_ip_address="127.0.0.1", namespace=APP_NAME
        )
    deploy(config, host, port)
    return new_key, context.address_info["gcs_address"]


def deploy(config: PlatformConfig, host: str, port: int, attempts: int = 2) -> None:
    """Start Serve and run the application, once more if the first try fails.

    Serve's HAProxy ingress reloads HAProxy as replicas come up; now and then the new
    HAProxy process finds the port still held by the old one ("Address already in use"),
    crashes, and `serve.run` fails (seen in ~1 of 10 starts here, Ray 2.60). A second
    start, after clearing Serve and any HAProxy it left behind, has always succeeded.
    """
    for attempt in range(1, attempts + 1):
        try:
            serve.start(http_options={"host": host, "port": port})
            serve.run(build_application(config), name=APP_NAME, route_prefix="/", blocking=False)
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("deploying failed (%s); retrying once", str(exc).splitlines()[0])
            haproxies = named(descendants(os.getpid()), "haproxy")
            serve.shutdown()
            terminate(haproxies)


def stop(own_ray: bool) -> None:
    """Shut Serve down, then our own Ray, then any HAProxy that outlived them."""
    haproxies = named(descendants(os.getpid()), "haproxy")
    try:
        serve.shutdown()
    finally:
        if own_ray:
            ray.shutdown()
            terminate([p for p in haproxies if p != os.getpid()])


def wait_for_signal(poll_s: float = 0.2) -> int:
    """Block until SIGINT or SIGTERM; returns the signal. Later signals are ignored, so
    that a second Ctrl-C cannot interrupt the shutdown.

    The handler only records the signal: a handler that touched a lock (threading.Event)
    deadlocked when a second signal arrived while the first handler held it (seen with
    `timeout` forwarding SIGTERM on top of a direct one)."""
    received: list[int] = []

    def record(signum: int, _frame: object) -> None:
        received.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, record)
    while not received:
        time.sleep(poll_s)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return received[0]
