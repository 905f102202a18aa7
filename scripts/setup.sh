#!/usr/bin/env bash
# Install lmsat and what its tests need, from package registries only (PyPI, Debian, npm).
# torch comes first and pinned, so no range pulls a multi-GB CUDA build on CPU machines.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
