"""Environment Ray Serve must see before it is imported (this module imports no Ray)."""

import sys
from pathlib import Path

# Serve's fast paths (see docs/architecture.md): HAProxy ingress and the throughput-
# optimised data plane. Read by Serve at import time in every Ray process, so they are
# set before Ray starts; an explicit setting in the environment wins. The drain period
# lets HAProxy on other nodes stop routing to a stopping replica; 30 s by default, which
# made every local stop take 30 s. Multi-node clusters should set it back (cluster/).
FAST_SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    # gRPC between replicas caps a message at 4 MiB by default: a large embeddings batch
    # (OpenAI allows 2,048 inputs) through a ProviderProxy deployment failed with
    # AioRpcError. Found by the OpenAPI fuzz test.
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(512 * 1024 * 1024),
    # The platform's own request ids, outside Serve's request-id middleware (which would
    # otherwise take a client's x-request-id as the id): gateway/request_ids.py.
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "gateway.request_ids:serve_http_middlewares",
    # An idle platform's own CPU: Serve's controller reconciles every 0.1 s and each
    # replica exports its cached metrics every 0.1 s by default; at 0.5 s and 1 s the
    # idle tree fell from 14% to 9% of a core (bench/README.md, "Streaming CPU"), which
    # a busy one pays too. Deployments react within half a second instead of 0.1 s.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # Serve's HTTP ingress metrics from HAProxy: a log datagram per request that the
    # HAProxyManager actor parses into Ray's metrics (~0.15 ms of CPU a request, 3% of a
    # streamed request's; bench/README.md). The platform counts its own requests
    # (/metrics); with this off, Serve counts its ingress in the replica instead.
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    # The raylet keeps up to one idle worker per CPU for tasks to come (79 MiB each,
    # left by Serve's start-up tasks); the platform runs few tasks, and a worker is
    # started for each actor anyway: idle ones go after a second.
    "RAY_num_workers_soft_limit": "0",
}

# HAProxy through `forge-haproxy` (serve/haproxy_shim.py): its statistics and metrics
# listeners on the platform's host instead of every interface, and its own errors in
# OpenAI's error shape. Only where the script is installed (`pip install -e .`).
_SHIM = Path(sys.executable).parent / "forge-haproxy"
if _SHIM.exists():
    FAST_SERVE_ENV["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(_SHIM)


def use_ray_token_if_present() -> None:
    """Join a Ray cluster with token authentication when a token is at hand.

    A local cluster authenticates by token whenever a token exists (Ray's default: its
    first `ray start --head` or `ray.init()` writes ``~/.ray/auth_token``), but a process
    that only connects sends the token only with ``RAY_AUTH_MODE=token`` and is otherwise
    refused (``InvalidAuthToken``). So `forge status`, and `forge up` joining through
    RAY_ADDRESS, say it when a token is there and the mode is not set either way."""
    import os

    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:  # Ray read its config at import: refresh it, as Ray does
            from ray._raylet import Config

            Config.initialize("")
