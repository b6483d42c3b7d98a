#!/usr/bin/env bash
# Creates .venv in the checkout (if missing) and installs the pinned requirements. Run
# things from the checkout root (`python -m apollo_jax...`); re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# Make the checkout importable from the venv (an editable install without build tools).
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD" > "$site/apollo_jax_checkout.pth"
