#!/usr/bin/env bash
# Fetch, HERE (a machine that reaches the package registry), the wheels the GPU machine lacks,
# into .whl/ at the repo root (git-ignored through .git/info/exclude), for scripts/gpu_check.sh.
#
# The GPU machine's python3 (Python 3.12, torch 2.11, torchvision 0.26) has numpy, OpenCV,
# PyYAML, scipy, psutil, prometheus-client, tqdm, nvidia-ml-py and pytest, but not PyAV,
# pyzmq or pydantic, and it reaches no registry. Versions: the ones this project's venv runs.
#
#   scripts/gpu_wheels.sh          # then name .whl in the device call's carry
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' "$(git rev-parse --git-path info/exclude)" 2>/dev/null \
  || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
mkdir -p .whl
PY=${PYTHON:-.venv/bin/python}
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PKGS=(
  "av==$(ver av)"
  "pyzmq==$(ver pyzmq)"
  "pydantic==$(ver pydantic)"
  "pydantic-core==$(ver pydantic-core)"
  "annotated-types==$(ver annotated-types)"
  "typing-inspection==$(ver typing-inspection)"
)
PLAT=()
for n in 17 27 28 31 34 35; do PLAT+=(--platform "manylinux_2_${n}_x86_64"); done
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLAT[@]}" --platform manylinux2014_x86_64 -d .whl "${PKGS[@]}"
ls -la .whl
du -sh .whl
