#!/usr/bin/env bash
# The one command for the lent GPU machine (device tool: carry [".whl"], after
# scripts/gpu-wheels.sh here). No Ray there: the engine runs in-process. Arguments go to
# bench.gpu_engine_bench, e.g. --only "LoRA" for one variant; `bash bench/gpu_run.sh train`
# runs bench.train_bench instead (the fine-tuning loop against the plain PEFT loop, ~2 min).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${1:-}" = train ]; then
  shift
  python3 -m bench.train_bench --out "${OUT:-/tmp}" "$@" 2>&1 | tee "${OUT:-/tmp}/train_bench.log"
  exit
fi
python3 -m bench.gpu_engine_bench --out "${OUT:-/tmp}" "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_engine_bench.log"
