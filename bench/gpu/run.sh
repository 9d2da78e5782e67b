#!/usr/bin/env bash
# The one prepared GPU session script (issue 11): in one call of at most ~8 minutes on a GPU machine with no
# network (torch + CUDA, Triton, nvcc, pytest, ninja preinstalled; no venv), it
#   1. builds dopamine_fast._C in place with every core, for the GPU present (CMakeLists.txt's default),
#   2. runs the CUDA and Triton tests (pytest -k "cuda or triton"),
#   3. runs the benchmarks on the GPU, most telling first, each under its own timeout and --budget-s:
#      the sigma=1e-5 full-rank precision check, populations (MLP 3x1024 K=4096 B=32 vs the cuBLAS floor, loop,
#      vmap, FLOP/s fraction of a dense matmul), whole steps (paper RNN: 512 hidden, batch 5000, look-back 32,
#      vs Adam/BPTT: time and peak CUDA memory), each op's benchmark (bench/suite.py: noise vs torch.randn,
#      perturbed_linear, perturbed_rnn with the nn.RNN floor, rpe_update), the 124M-parameter lean step
#      (bench_large.py), op dispatch overhead, then the cuda-vs-triton choice per op,
#   4. packs everything into at most 6 files under $OUT (only up to 8 come back from the device machine):
#        log.txt  the whole run, in order, with timestamps      build.txt  compiler output (ptxas report)
#        pytest.txt  the tests      bench.txt  the benchmarks' output      results.tgz  CSV, JSON, plots
#        long.txt  the long runs' curves (RUN_LONG_S below)
# The script stops cleanly at its own budget (RUN_BUDGET_S, default 450 s): a step that would not fit is skipped
# and logged, a step that overruns is killed by its timeout, and the packing always runs. A rerun that needs only
# the numbers can skip the tests (RUN_TESTS=0) or the build (RUN_BUILD=0, when the module is already there), and
# RUN_BENCHES names the benchmark steps to run (default: all, in the order below; e.g. "bench_step bench_large").
# RUN_LONG_S=S also trains the paper-size Lorenz RNN (bench_long_runs.py --paper: Dopamine's defaults and WP at
# lr 0.02, the better of 0.02 and 0.04 at 1000 steps on the H200; 2000 steps) for at most S seconds, in the
# background while the tests and the memory check run (they time nothing). The timed benchmarks start once it ends.
#
#   bash bench/gpu/run.sh                       # on the GPU machine; results under $OUT (or bench/results/gpu)
#   RUN_DEVICE=cpu RUN_QUICK=1 RUN_BUDGET_S=300 bash bench/gpu/run.sh   # dry run here: CPU, tiny sizes; its
#       build goes to a temporary folder (the checkout's module is left alone); RUN_BUILD=0 skips the build
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/bench/results/gpu}"
DEVICE="${RUN_DEVICE:-cuda}"
BUDGET="${RUN_BUDGET_S:-450}"
QUICK="${RUN_QUICK:+--quick}"
QUICK_LONG="${RUN_QUICK:+--steps 2}"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && [ "$DEVICE" = cpu ] && echo "$ROOT/.venv/bin/python" || echo python3)}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
WORK="$(mktemp -d)"        # benchmark files (packed into results.tgz) and the dry run's build
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
START=$(date +%s)

# wanted NAME: whether RUN_BENCHES (a space-separated list; unset: every step) names the benchmark step NAME.
wanted() { [ -z "${RUN_BENCHES:-}" ] || [[ " $RUN_BENCHES " == *" $1 "* ]]; }
log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
remaining() { echo $((BUDGET - ($(date +%s) - START))); }
# step NAME WANT_S OUTFILE CMD...: runs CMD unbuffered with a timeout of WANT_S, or of what is left of the budget
# (less 15 s kept for packing); skipped when under 10 s would be left. Output goes to OUTFILE and log.txt.
step() {
  local name="$1" want="$2" outfile="$3" left limit t0 rc
  shift 3
  left=$(( $(remaining) - 15 ))
  limit=$(( want < left ? want : left ))
  if [ "$limit" -lt 10 ]; then
    log "== $name: skipped, the budget of ${BUDGET}s is spent"
    return 0
  fi
  log "== $name (timeout ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" stdbuf -oL -eL "$@" 2>&1 | tee -a "$outfile" >>"$LOG"
  rc=$?
  log "== $name: exit $rc after $(($(date +%s) - t0))s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  return 0
}
# bench NAME WANT_S ARGS...: a benchmark script with a --budget-s that ends it before its timeout does; it leaves
# 45 s of the budget to the backend choice, the summary and the packing.
bench() {
  local name="$1" want="$2" left limit
  shift 2
  wanted "$name" || return 0
  left=$(( $(remaining) - 45 ))
  limit=$(( want < left ? want : left ))
  if [ "$limit" -lt 10 ]; then
    log "== $name: skipped, the budget of ${BUDGET}s is spent"
    return 0
  fi
  step "$name" "$limit" "$OUT/bench.txt" "$PYTHON" -u "bench/$name.py" --device "$DEVICE" --out "$RESULTS" \
    --budget-s "$(( limit * 3 / 5 ))" $QUICK "$@"
}

log "== environment (device $DEVICE, budget ${BUDGET}s, python $PYTHON)"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1 || echo "no nvidia-smi"
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  "$PYTHON" -c "import triton; print('triton', triton.__version__)" 2>&1 || echo "triton not importable"
  nvcc --version 2>&1 | tail -1
  cmake --version 2>&1 | head -1   # setup.py builds with CMake (3.21 or newer) and Ninja
  echo "cores $(nproc)"
} 2>&1 | tee -a "$LOG"

# The CUDA toolkit and the targets are CMakeLists.txt's to find (CUDA_HOME, else the toolkit behind nvcc, else
# /usr/local/cuda*; the GPU present); its build output (build.txt) and the backends step below say what it used.
export MAX_JOBS="${MAX_JOBS:-$(nproc)}" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET DOPAMINE_FAST_BACKEND DOPAMINE_FAST_NO_NATIVE
log "CUDA_HOME=${CUDA_HOME:-<CMake finds it>} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<CMake default: this GPU>} MAX_JOBS=$MAX_JOBS"

if [ "${RUN_BUILD:-1}" = 0 ]; then
  log "== build: skipped (RUN_BUILD=0), using the module already built"
elif [ "$DEVICE" = cuda ]; then
  # A module built elsewhere (another torch, another GPU) must not be picked up: rebuild from scratch, in place.
  rm -rf build dopamine_fast/_C*.so dopamine_fast/_build_config.py
  step build 180 "$OUT/build.txt" "$PYTHON" setup.py build_ext --inplace --force
else
  # Dry run: the same build into a temporary folder, so the shared checkout's module stays as it is.
  step build 240 "$OUT/build.txt" "$PYTHON" setup.py build_ext --force --build-temp "$WORK/build-temp" \
    --build-lib "$WORK/build-lib"
fi
# What was built (the build record: CUDA targets and toolkit) and which backend each op runs on, with the reasons.
step backends 30 "$OUT/build.txt" "$PYTHON" -c "import dopamine_fast as df, json; print('built:', df.backends.native.build_summary()); print(json.dumps(df.backend_info(explain=True), indent=1))"

LONG_PIDS=()
if [ "${RUN_LONG_S:-0}" -gt 0 ]; then
  # Two runs side by side on the one GPU (each a process; none is timed against another), each line as it comes.
  log "== long runs: Lorenz at the paper's size for at most ${RUN_LONG_S}s, in the background (long.txt)"
  for run in "--optimizer dopamine" "--optimizer wp --option lr=0.02 --option max_grad_norm=20.0"; do
    # shellcheck disable=SC2086  # $run holds several arguments
    timeout --kill-after=5 "$RUN_LONG_S" "$PYTHON" -u bench/bench_long_runs.py lorenz --paper --device "$DEVICE" \
      --seeds 1 --log-every 250 $QUICK_LONG $run >>"$OUT/long.txt" 2>&1 &
    LONG_PIDS+=($!)
  done
fi

if [ "${RUN_TESTS:-1}" = 0 ]; then
  log "== tests: skipped (RUN_TESTS=0)"
elif [ "$DEVICE" = cuda ]; then
  # Triton compiles each kernel variant on the CPU on first use: pytest-xdist (in the GPU image) spreads that over
  # the cores, one CUDA context per worker.
  XDIST="$("$PYTHON" -c "import xdist" 2>/dev/null && echo "-n $(nproc)")"
  step pytest-gpu 150 "$OUT/pytest.txt" "$PYTHON" -m pytest -q -rfEs --maxfail=25 --durations=10 -p no:cacheprovider \
    $XDIST -k "cuda or triton" tests/
else
  step pytest-dry 60 "$OUT/pytest.txt" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_backends.py
fi

# Peak memory of a paper-size RNN step against Adam/BPTT, with and without Population's max_memory (issue 21's
# 0.25x target): the CUDA allocator's peak is exact, so it runs beside the long runs.
wanted memory && step memory 90 "$OUT/bench.txt" "$PYTHON" -u bench/bench_memory.py --device "$DEVICE" \
  --out "$RESULTS" --repeats 1 --bptt-repeats 1 $QUICK
if [ "${#LONG_PIDS[@]}" -gt 0 ]; then
  log "== waiting for the long runs"
  wait "${LONG_PIDS[@]}"
  log "== long runs ended"
fi

# Most telling first, so that a spent budget cuts the least.
wanted precision && step precision 30 "$OUT/bench.txt" "$PYTHON" -u bench/gpu/precision_check.py --device "$DEVICE" --out "$RESULTS" $QUICK
bench bench_population 90
# The GPU kernels only: the reference's paper-size step takes the budget the MLP cases need.
bench bench_step 150 $( [ "$DEVICE" = cuda ] && echo "--backends cuda,triton")
# One benchmark per op of ops.SPECS that has one (bench/suite.py), 35 s each.
OP_BENCHES="$("$PYTHON" bench/suite.py)" || log "== bench/suite.py failed: the op benchmarks are not run"
for name in $OP_BENCHES; do
  bench "$name" 35
done
# The 124M-parameter model's lean Dopamine step: memory against inference, the step against its forward passes
# (bench_large.py writes its CSV at the end: a case cut by the timeout loses the run's rows).
wanted bench_large && step bench_large 90 "$OUT/bench.txt" "$PYTHON" -u bench/bench_large.py --device "$DEVICE" --sizes 124M \
  --dtypes bfloat16 --steps 2 --methods "inference,adam,mezo,dopamine lean r0,dopamine lean r4" --out "$RESULTS" $QUICK
bench bench_dispatch 20
wanted choose-backends && step choose-backends 20 "$OUT/bench.txt" "$PYTHON" bench/gpu/choose_backends.py --out "$RESULTS" \
  --backends "$( [ "$DEVICE" = cuda ] && echo cuda,triton || echo cpp,reference )"
step summarize 20 "$OUT/bench.txt" "$PYTHON" bench/summarize.py --out "$RESULTS" \
  --command "bash bench/gpu/run.sh (RUN_DEVICE=$DEVICE)"

tar -czf "$OUT/results.tgz" -C "$RESULTS" . && log "results.tgz: $(cd "$RESULTS" && find . -type f | sort | tr '\n' ' ')"
# The CSV files also go into the log, so that they can be read without unpacking.
find "$RESULTS" -name '*.csv' -type f | sort | while read -r f; do
  echo "---- ${f#"$RESULTS"/}" >>"$LOG"
  head -120 "$f" >>"$LOG"
done
rm -rf "$WORK"
log "== done in $(($(date +%s) - START))s of ${BUDGET}s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
