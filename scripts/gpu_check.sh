#!/usr/bin/env bash
# The one GPU check (issue 16), for a single device call on one H200 (about 6 minutes):
#   1. environment: nvidia-smi, python/torch/PyAV versions, decoders and backends usable;
#   2. pytest -m gpu (the CUDA tests; everything else is CPU-tested in CI);
#   3. scripts/bench_gpu.py: 1080p clips, 1/8/32/64 streams through the graph, naive loop,
#      per-stage/model table; its JSON line is bench_gpu.json.
# Results and logs go to $OUT (default ./gpu-check-out): at most 6 files, none nested.
#
# Before the call, HERE: scripts/gpu_wheels.sh (PyAV, pyzmq, pydantic wheels into .whl/, which
# the GPU machine lacks and cannot download). Then, as the device call:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=580)
# Knobs (environment): BUDGET_S (seconds per configuration, default 20), STREAMS (1,8,32,64),
# SIZE (1920x1080), STAGES_BUDGET_S (45), PYTEST_TIMEOUT_S (120), BENCH_TIMEOUT_S (330);
# DEVICE=cpu SKIP_WHEELS=1 PYTHON=.venv/bin/python SIZE=160x96 STREAMS=1 dry-runs it on a CPU.
# Every step is bounded: at most about 8 minutes in all, plus the machine's start.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
start=$(date +%s)

if [ -z "${SKIP_WHEELS:-}" ] && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$OUT/env.txt" 2>&1 \
    || { echo "wheel install failed"; cat "$OUT/env.txt"; exit 3; }
  export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD"
fi

{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$PY" - <<'PY' 2>&1
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
try:
    import av, av.codec.hwaccel as h
    print("av", av.__version__, "hwdevices", h.hwdevices_available())
except Exception as exc:
    print("av unusable:", exc)
from stream.gpu_decode import decoder_status
from models.backends import backend_status
print("decoders", decoder_status("cuda"))
print("backends", backend_status("cuda"))
PY
} >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== pytest -m gpu"
# Only the files that hold gpu tests: others import CI-only packages (selenium, pycocotools).
mapfile -t GPU_TESTS < <(grep -rl --include='test_*.py' 'pytest.mark.gpu' tests | sort)
timeout "${PYTEST_TIMEOUT_S:-120}" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider \
  --continue-on-collection-errors "${GPU_TESTS[@]}" > "$OUT/pytest_gpu.log" 2>&1
pytest_rc=$?
tail -25 "$OUT/pytest_gpu.log"
echo "pytest rc=$pytest_rc" | tee -a "$OUT/pytest_gpu.log"

rm -rf /tmp/bench-gpu
echo "== bench_gpu ($(( $(date +%s) - start )) s so far)"
timeout "${BENCH_TIMEOUT_S:-330}" "$PY" scripts/bench_gpu.py --device "${DEVICE:-cuda}" \
  --size "${SIZE:-1920x1080}" --streams "${STREAMS:-1,8,32,64}" --budget-s "${BUDGET_S:-20}" \
  --clip-s 6 --stages-budget-s "${STAGES_BUDGET_S:-45}" --stage-seconds 2 --out /tmp/bench-gpu \
  > "$OUT/bench_gpu.txt" 2> "$OUT/bench_gpu.log"
bench_rc=$?
echo "bench_gpu rc=$bench_rc" | tee -a "$OUT/bench_gpu.log"
cat "$OUT/bench_gpu.txt"
# The last JSON line: the final one, or the partial one (pipeline figures) if cut off.
grep "^{" "$OUT/bench_gpu.txt" | tail -n 1 > "$OUT/bench_gpu.json"
# The graph's own logs, last lines of each run, for a failed or slow configuration.
for f in /tmp/bench-gpu/graph*/vigil.log; do
  [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }
done > "$OUT/graph_logs.txt" 2>&1
echo "total $(( $(date +%s) - start )) s"
# The call's exit status says whether the GPU tests and the bench passed (not just that it ran).
[ "$pytest_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
