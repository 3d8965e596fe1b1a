#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (Python 3.12 there; it has torch and transformers
# 5.17, whose continuous batching predates what the engine uses), into .whl/ for the
# device tool's `carry`. See bench/README.md, "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  "transformers==$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')" \
  pydantic pydantic-core annotated-types typing-inspection
du -sh .whl
