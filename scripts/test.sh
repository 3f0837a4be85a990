#!/usr/bin/env bash
# Set up, then run the whole test suite with the real models on ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_BROWSER=1 bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
