#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (Python 3.12 there; it has torch and transformers
# 5.17, whose continuous batching predates what the engine uses), into .whl/ for the
# device tool's `carry`: our transformers with the dependencies it checks at import
# (huggingface-hub 2.x and its httpx2, tokenizers, safetensors, ...) and what the
# engine's modules import (orjson, llguidance, psutil), less numpy, which
# the machine has and which alone would take a quarter of the 64 MiB. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  $(.venv/bin/python -c 'import importlib.metadata as m
for p in ("transformers", "huggingface_hub", "tokenizers", "safetensors", "pydantic",
          "orjson", "llguidance", "psutil", "sniffio", "jinja2"):
    print(f"{p}=={m.version(p)}")')
rm -f .whl/numpy-*.whl
du -sh .whl
