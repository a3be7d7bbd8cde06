#!/usr/bin/env bash
# Fetch, on a machine with package-registry access, the wheels bench/device_check.sh needs on a GPU
# machine that has none: rankadapt's dependencies that the GPU image lacks (pydantic and its own),
# at the versions installed here, for CPython 3.12 on x86-64 Linux. They go to .whl/ (git-ignored),
# which travels with the working tree and which device_check.sh installs from, offline.
#
#   bash bench/device_wheels.sh            # then carry .whl/ to the GPU machine with the repository
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection)
mkdir -p .whl
for name in "${PACKAGES[@]}"; do
  version=$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version"
done
ls -l .whl
