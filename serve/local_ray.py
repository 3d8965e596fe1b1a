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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from ray._private.node import Node
from ray._private.parameter import RayParams


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


def init_local_head(
    namespace: str, *, replica_logs: bool = False, num_cpus: int | None = None
) -> Any:
    """Start a Ray head of our own on this machine and connect to it (the context
    ``ray.init`` returns). "local", never "auto": a stale /tmp/ray/ray_current_cluster
    (left by a test cluster) once made every start fail."""
    with _lean_head(replica_logs):
        return ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            namespace=namespace,
            log_to_driver=replica_logs,
        )


def logs_folder(context: Any) -> str:
    """Where the head's processes write their logs."""
    return f"{context.address_info['session_dir']}/logs"
