#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.sh needs on the GPU machine (Python 3.12, x86-64, no network
# there): PyAV and kornia (+ kornia_rs), the versions this project is tested with. About 43 MB into .whl/,
# which .git/info/exclude keeps out of git; name ".whl" in the device run's carry.
set -eu
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "av==${AV_VERSION:-18.1.0}" "kornia==${KORNIA_VERSION:-0.9.0}" kornia_rs
ls -la .whl
