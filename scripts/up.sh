#!/usr/bin/env bash
# Set up and run the platform on its embedded defaults (local Ray, SQLite, configs/default.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/forge up "$@"
