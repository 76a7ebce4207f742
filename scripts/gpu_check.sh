#!/usr/bin/env bash
# Everything a GPU machine checks, in one go, on a fresh machine with no network (the H200 of
# the device tool): build against the installed torch (make install: the CUDA kernels too),
# the whole suite (make test-gpu), the demo with its defaults (make demo), and the GPU
# benchmark sweep. Logs and CSVs go to $OUT (default gpu_out/): run.log, tests.log, demo.log
# and one CSV per benchmark under $OUT/bench, at most 8 files.
#
#   bash scripts/gpu_check.sh [all|tests|bench]      (default all)
#
# Optional Python packages that the machine lacks (liac-arff, iterative-stratification and
# torchdata on the H200 image) can travel as wheels in .whl/ (bench/RESULTS.md says how); they
# are installed for this run only. Without them their tests skip, saying what is missing.
set -u
export PYTHONUNBUFFERED=1
WHAT=${1:-all}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT/bench"
LOG="$OUT/run.log"
START=$(date +%s)
el() { echo "$(($(date +%s) - START))s"; }
step() { echo "== $* (at $(el))" | tee -a "$LOG"; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, '| triton', triton.__version__)"
  nvcc --version | tail -1
  "${CXX:-g++}" --version | head -1
  echo "cores $(nproc)"
} > "$LOG" 2>&1

if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ubs_site .whl/*.whl >> "$LOG" 2>&1 &&
    export PYTHONPATH=/tmp/ubs_site${PYTHONPATH:+:$PYTHONPATH}
fi

export UBS_TARGET_DEVICE=${UBS_TARGET_DEVICE:-cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)}
step "make install"
if ! timeout "${BUILD_TIMEOUT:-300}" make install >> "$LOG" 2>&1; then
  step "make install FAILED"
  tail -30 "$LOG"
  exit 1
fi
PY=.venv/bin/python

if [ "$WHAT" != bench ]; then
  step "make test-gpu"
  timeout "${TEST_TIMEOUT:-420}" make test-gpu JOBS="${JOBS:-12}" PYTEST="$PY -m pytest -q -p no:cacheprovider -rfEs" \
    > "$OUT/tests.log" 2>&1
  echo "make test-gpu: exit $?" >> "$OUT/tests.log"
  tail -1 "$OUT/tests.log" | tee -a "$LOG"
  grep -E "^(FAILED|ERROR)|passed|failed|crashed" "$OUT/tests.log" | tail -40 >> "$LOG"
  step "make demo"
  timeout "${DEMO_TIMEOUT:-180}" make demo > "$OUT/demo.log" 2>&1
  echo "make demo: exit $?" | tee -a "$OUT/demo.log" "$LOG"
fi

if [ "$WHAT" != tests ]; then
  B=(--device cuda --min-run-time "${MIN_RUN_TIME:-0.3}" --out "$OUT/bench")
  step "bench label_mi"
  timeout 240 $PY bench/bench_label_mi.py "${B[@]}" --sizes 5000,374 20000,1000 200000,1000 1000000,1000 \
    --max-seconds 15 --subset-seconds 1 >> "$LOG" 2>&1
  step "bench observe"
  timeout 150 $PY bench/bench_observe.py "${B[@]}" --sizes 2407,6 20000,1000 1000000,1000 \
    --whole-sizes 1000000,1000 >> "$LOG" 2>&1
  step "bench uncertainty"
  timeout 120 $PY bench/bench_uncertainty.py "${B[@]}" --sizes 20000,1000 1000000,1000 >> "$LOG" 2>&1
  step "bench selection_log_probs"
  timeout 120 $PY bench/bench_selection_log_probs.py "${B[@]}" --sizes 20000,1000 1000000,1000 >> "$LOG" 2>&1
  step "bench selector (n = 10^6, q = 1000, in a training loop)"
  timeout 300 $PY bench/bench_selector.py --device cuda --out "$OUT/bench" --min-run-time 1 >> "$LOG" 2>&1
fi
step "done"
