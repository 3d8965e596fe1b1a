#!/usr/bin/env bash
# Set up, make sure PostgreSQL is up, run the whole test suite; then the vLLM engine's
# conformance tests in their own venv (FORGE_SKIP_VLLM=1 skips that step).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -p no:cacheprovider "$@"
if [ "${FORGE_SKIP_VLLM:-0}" != 1 ]; then
  bash scripts/test-vllm.sh -q -p no:warnings
fi
