#!/usr/bin/env bash
# The whole test suite, from a clean checkout: install, fetch the real offline assets, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/install_browser.sh ]; then bash scripts/install_browser.sh; fi
lmsat fetch-assets
python -m pytest "$@"
