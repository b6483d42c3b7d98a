#!/usr/bin/env bash
# Creates .venv in the checkout (if missing) and installs the pinned requirements. Run
# things from the checkout root (`python -m apollo_jax...`); re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
