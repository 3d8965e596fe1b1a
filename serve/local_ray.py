"""The local Ray head of `forge up` (and of the tests' cluster): `ray.init`'s own, less
the two Python processes a one-node platform does not use.

`ray.init(address="local")` starts, beside the GCS and the raylet, the autoscaler's
monitor (nothing to scale on one machine: Ray's cluster launcher and KubeRay start heads
with `ray start`, where `forge up` only joins) and the log monitor (it streams every
worker's log lines to the driver's console). Together ~160 MiB resident and ~1% of a
core idle (bench/README.md, "Memory of `forge up`"). `ray.init` has no switch for
either; `ray start --head --no-monitor --include-log-monitor=false` has, but leaves the
processes without an owner when the driver dies, where `ray.init`'s head fate-shares
with it. So the head is still `ray.init`'s, with those two of its parameters set.

Without the log monitor, worker logs stay in the session's log folder (printed by
`forge up`); ``replica_logs=True`` keeps the monitor and streams them to the console.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from ray._private.node import Node
from ray._private.parameter import RayParams

from serve.lean_workers import WORKER_ENV


@contextmanager
def _lean_head(replica_logs: bool) -> Iterator[None]:
    """``RayParams`` as `ray start --head --no-monitor [--include-log-monitor=false]`
    would make them, for the head ``ray.init`` starts meanwhile."""
    original = RayParams.__init__

    def init(self: RayParams, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("no_monitor", True)
        if not replica_logs:
            kwargs.setdefault("include_log_monitor", False)
        original(self, *args, **kwargs)

    def no_api_server(self: Node, **_: Any) -> None:
        self._webui_url = None

    start_api_server = Node.start_api_server
    RayParams.__init__ = init  # type: ignore[method-assign]
    Node.start_api_server = no_api_server  # type: ignore[method-assign]
    try:
        yield
    finally:
        RayParams.__init__ = original  # type: ignore[method-assign]
        Node.start_api_server = start_api_server  # type: ignore[method-assign]


# Serve's fallback proxy: where HAProxy sends requests while no ingress replica is in its
# table (before the first one is, after the last one left). Fixed ports by default (8500,
# 9500), so a second Ray on the machine could not bind them, and its HAProxy fell back to
# the first one's proxy: requests answered by another platform (a 401 for a valid key).
FALLBACK_PORTS = ("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")


def unused_port() -> int:
    """A loopback port no one listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def init_local_head(
    namespace: str, *, replica_logs: bool = False, num_cpus: int | None = None
) -> Any:
    """Start a Ray head of our own on this machine and connect to it (the context
    ``ray.init`` returns). "local", never "auto": a stale /tmp/ray/ray_current_cluster
    (left by a test cluster) once made every start fail. The fallback proxy gets ports
    of its own unless they are set (``FALLBACK_PORTS``)."""
    for name in FALLBACK_PORTS:
        os.environ.setdefault(name, str(unused_port()))
    with _lean_head(replica_logs):
        return ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            namespace=namespace,
            log_to_driver=replica_logs,
            runtime_env=WORKER_ENV,
        )


def logs_folder(context: Any) -> str:
    """Where the head's processes write their logs."""
    return f"{context.address_info['session_dir']}/logs"
