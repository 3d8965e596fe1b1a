#!/usr/bin/env bash
# A 2-node Ray cluster on this one machine (head + one worker, 1 CPU each), then `forge up`
# joined to it: for trying multi-node behaviour (replicas on two raylets, one proxy per node)
# without a second machine, and what tests/integration/test_multinode.py runs.
# Ctrl-C or SIGTERM stops PromptForge (it drains), then both Ray nodes, and only them: each
# node is a `ray start --block` in the background, which stops its node when it is stopped
# (`ray stop` would stop every Ray of this user on this machine, a test's cluster too).
# Needs the repo's .venv (scripts/setup.sh). Secrets (DATABASE_URL, FORGE_MASTER_KEY,
# OPENAI_API_KEY) come from your environment, as for `forge up`; nothing is written here.
#
#   cluster/local-multinode.sh [forge up options, e.g. --port 8000]
#
# Ports, for when the defaults are taken (the test gives free ones): FORGE_GCS_PORT (6380),
# FORGE_WORKER_HTTP_PORT (8001, the worker node's HAProxy), FORGE_WORKER_STATS_PORT (8405),
# FORGE_WORKER_METRICS_PORT (9102), FORGE_HEAD_AGENT_PORT (52365),
# FORGE_WORKER_AGENT_PORT (52366). The head's HAProxy takes `forge up --port`, its stats and
# metrics ports RAY_SERVE_HAPROXY_STATS_PORT / RAY_SERVE_HAPROXY_METRICS_PORT (8404, 9101).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/.venv/bin"
GCS_PORT=${FORGE_GCS_PORT:-6380} # not 6379: a local Redis may hold it
ADDRESS="127.0.0.1:$GCS_PORT"

# Serve reads these at import in every Ray process, so they must be in the environment of
# `ray start` (the raylets pass them on to every worker). HAProxy ingress and the
# throughput-optimised data plane, as `forge up` uses; the drain period stays at Ray's default
# 30 s: with two nodes, HAProxy on the other node must stop routing to a draining replica.
# (`forge up` would default it to 2 s, meant for one node; an exported value wins.)
export RAY_SERVE_ENABLE_HA_PROXY=1
export RAY_SERVE_THROUGHPUT_OPTIMIZED=1
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-30}
export RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH=536870912
# The platform's request ids replace a client's x-request-id (gateway/request_ids.py).
export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=gateway.request_ids:serve_http_middlewares
# HAProxy through `forge-haproxy`: its stats and metrics listeners on 127.0.0.1, its own
# errors in OpenAI's error shape (serve/haproxy_shim.py).
export RAY_SERVE_HAPROXY_BINARY_PATH="$BIN/forge-haproxy"
export FORGE_HAPROXY_HOST=127.0.0.1
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
# Ray's token authentication stays on (its default for `ray start --head`): the head writes
# the token to ~/.ray/auth_token, and the worker and `forge up` (same user, same machine)
# read it from there; they need the mode said explicitly, or a worker is refused with
# InvalidAuthToken.
export RAY_AUTH_MODE=token
# `ray start --head` refuses to start without a token where none exists yet (a fresh
# machine): make one, once (a no-op where there is one already).
"$BIN/ray" get-auth-token --generate >/dev/null

NODES=()
FORGE_PID=
cleanup() {
  trap - EXIT INT TERM
  [ -z "$FORGE_PID" ] || kill -TERM "$FORGE_PID" 2>/dev/null || true
  [ -z "$FORGE_PID" ] || wait "$FORGE_PID" 2>/dev/null || true
  # Worker first, then the head; each `ray start --block` stops its node's processes.
  for ((i = ${#NODES[@]} - 1; i >= 0; i--)); do
    kill -TERM "${NODES[i]}" 2>/dev/null || true
    wait "${NODES[i]}" 2>/dev/null || true
  done
  # `ray start` recorded this cluster as the machine's current one; `ray stop` would
  # remove the record, so do it here, or Ray's `auto` keeps pointing at a dead GCS.
  local current=/tmp/ray/ray_current_cluster
  ! grep -qs ":$GCS_PORT\$" "$current" || rm -f "$current"
}
trap cleanup EXIT
# Ctrl-C / SIGTERM: stop `forge up` (it drains), and the EXIT trap stops the nodes.
trap 'exit 130' INT
trap 'exit 143' TERM

# Workers run in the repo root, so relative paths (configs/, .forge/) resolve as for `forge up`.
"$BIN/ray" start --head --block --node-ip-address=127.0.0.1 --port="$GCS_PORT" --num-cpus=1 \
  --include-dashboard=false --disable-usage-stats \
  --dashboard-agent-listen-port="${FORGE_HEAD_AGENT_PORT:-52365}" &
NODES+=($!)

# The worker shares this machine's ports with the head: its Serve proxy (HAProxy) moves to
# 8001, and HAProxy's stats and metrics ports and the dashboard agent's port move up by one.
until "$BIN/ray" health-check --address="$ADDRESS" >/dev/null 2>&1; do
  kill -0 "${NODES[0]}" 2>/dev/null || { echo "the head node did not start" >&2; exit 1; }
  sleep 1
done
RAY_SERVE_WORKER_PROXY_HTTP_PORT=${FORGE_WORKER_HTTP_PORT:-8001} \
  RAY_SERVE_HAPROXY_STATS_PORT=${FORGE_WORKER_STATS_PORT:-8405} \
  RAY_SERVE_HAPROXY_METRICS_PORT=${FORGE_WORKER_METRICS_PORT:-9102} \
  "$BIN/ray" start --block --address="$ADDRESS" --node-ip-address=127.0.0.1 --num-cpus=1 \
  --dashboard-agent-listen-port="${FORGE_WORKER_AGENT_PORT:-52366}" --disable-usage-stats &
NODES+=($!)

# Both nodes up before `forge up`, so that Serve spreads the gateway replicas over them.
for _ in $(seq 120); do
  [ "$("$BIN/ray" status --address="$ADDRESS" 2>/dev/null | grep -c ' node_')" -ge 2 ] && break
  kill -0 "${NODES[1]}" 2>/dev/null || { echo "the worker node did not start" >&2; exit 1; }
  sleep 1
done

# `forge up` joins the cluster named by RAY_ADDRESS. It runs until Ctrl-C / SIGTERM (the
# traps above stop it), then the EXIT trap stops both nodes.
RAY_ADDRESS="$ADDRESS" "$BIN/forge" up "$@" &
FORGE_PID=$!
wait "$FORGE_PID"
