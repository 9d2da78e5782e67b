#!/usr/bin/env bash
# One call on a GPU machine (no network): environment, in-place build of dopamine_fast._C with the CUDA kernels,
# the whole test suite (CUDA and Triton backends run by themselves when a GPU is present), then every
# bench/bench_*.py on the GPU. Results go to $OUT (or bench/results/gpu): few files, since only up to 8 come
# back from the device machine:
#   log.txt             everything below, in order
#   build.txt           the compiler output (ptxas register and spill report included)
#   pytest.txt          the test run
#   bench.txt           the benchmarks' own output
#   bench_results.tgz   whatever the benchmarks wrote (CSV, JSON, plots)
# Budget: about 8 minutes in all (override with RUN_BUDGET_S); each phase gets a timeout, failures are logged
# and the script goes on, so one broken phase never hides the others.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/bench/results/gpu}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
BENCH_DIR="$(mktemp -d)"  # the benchmarks' files, tarred into one at the end
START=$(date +%s)
BUDGET="${RUN_BUDGET_S:-480}"

log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
remaining() { echo $((BUDGET - ($(date +%s) - START))); }
# run_phase NAME TIMEOUT_S OUTFILE CMD...: runs CMD with a timeout, appending its output to OUTFILE and log.txt.
run_phase() {
  local name="$1" limit="$2" outfile="$3"
  shift 3
  log "== $name (timeout ${limit}s): $*"
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$outfile" | tee -a "$LOG"
  rc=$?
  log "== $name: exit $rc after $(($(date +%s) - t0))s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  return $rc
}

log "== environment"
{
  nvidia-smi || echo "nvidia-smi failed"
  python3 -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  python3 -c "import triton; print('triton', triton.__version__)" || echo "triton not importable"
  nvcc --version | tail -2 || echo "nvcc not found"
  nproc
} 2>&1 | tee -a "$LOG"

# The toolkit behind nvcc (nvcc may be a wrapper script; setup.py searches further if this finds nothing).
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
  home="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  [ -f "$home/include/cuda_runtime.h" ] && export CUDA_HOME="$home"
fi
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET DOPAMINE_FAST_BACKEND DOPAMINE_FAST_NO_NATIVE
log "CUDA_HOME=${CUDA_HOME:-<unset>} TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"

# A module built elsewhere (another torch) must not be picked up: rebuild from scratch.
rm -rf build dopamine_fast/_C*.so
run_phase build 240 "$OUT/build.txt" python3 setup.py build_ext --inplace --force
python3 - 2>&1 <<'EOF' | tee -a "$LOG"
import dopamine_fast
from dopamine_fast import _native
print("native load error:", _native.load_error())
for op, where in dopamine_fast.backend_info().items():
    print(f"  {op:18s} {where}")
EOF

# The CUDA-kernel tests first (ids "cuda-cuda": backend cuda on device cuda), so their verdict comes back even if
# the whole suite (Triton kernels JIT-compile on first use) runs out of time.
run_phase pytest-cuda-kernels 150 "$OUT/pytest.txt" \
  python3 -m pytest -q -rfE -p no:cacheprovider -k "cuda-cuda" tests/
run_phase pytest "$(( $(remaining) > 330 ? 240 : $(remaining) * 3 / 4 ))" "$OUT/pytest.txt" \
  python3 -m pytest -q -rfEs --durations=15 -p no:cacheprovider tests/

shopt -s nullglob
benches=(bench/bench_*.py)
log "== benchmarks: ${#benches[@]} found"
for b in "${benches[@]}"; do
  left=$(remaining)
  if [ "$left" -lt 20 ]; then
    log "skipping $b: budget spent"
    continue
  fi
  limit=$(( left < 150 ? left - 10 : 150 ))
  run_phase "$(basename "$b")" "$limit" "$OUT/bench.txt" python3 "$b" --device cuda --out "$BENCH_DIR" || true
done

# The paper-sized quality run (512 hidden, look-back 32, large batches) is long: only when asked, e.g.
# PAPER_QUALITY="--seeds 2 --scale 0.1" RUN_BUDGET_S=1500 bash bench/gpu/run.sh
if [ -n "${PAPER_QUALITY:-}" ]; then
  # shellcheck disable=SC2086  # PAPER_QUALITY holds several flags
  run_phase quality-paper "$(remaining)" "$OUT/bench.txt" \
    python3 bench/bench_quality.py --paper --device cuda --out "$BENCH_DIR/quality_paper" $PAPER_QUALITY || true
fi

if [ -n "$(ls -A "$BENCH_DIR")" ]; then
  tar -czf "$OUT/bench_results.tgz" -C "$BENCH_DIR" . && log "benchmark files: $(cd "$BENCH_DIR" && find . -type f | tr '\n' ' ')"
  # CSVs also inline in the log, so they can be read without unpacking.
  find "$BENCH_DIR" -name '*.csv' -type f | sort | while read -r f; do
    echo "---- ${f#$BENCH_DIR/}" >>"$LOG"
    head -200 "$f" >>"$LOG"
  done
fi
rm -rf "$BENCH_DIR"
log "== done in $(($(date +%s) - START))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
