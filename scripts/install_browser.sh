#!/usr/bin/env bash
# Install what the browser test of `lmsat report` needs, from package registries only:
#   * Debian's chromium (and chromium-driver) at /usr/bin/chromium, via apt-get;
#   * the Python `playwright` package, whose driver ships inside the wheel.
# Playwright's own browser download (`playwright install`) is never used: these machines
# reach the package registries and nothing else, and the test drives Debian's chromium.
#
# Usage: bash scripts/install_browser.sh   (as root, or with sudo available)
set -euo pipefail

need_apt=0
command -v chromium >/dev/null 2>&1 || need_apt=1
command -v chromedriver >/dev/null 2>&1 || need_apt=1

if [ "$need_apt" = 1 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install_browser.sh: chromium is missing and this user cannot run apt-get; run as root: apt-get install chromium chromium-driver" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
fi

if ! python -c "import playwright" >/dev/null 2>&1; then
    python -m pip install -q "playwright>=1.45"
fi

chromium --version
python -c "import playwright, importlib.metadata as m; print('playwright', m.version('playwright'))"
