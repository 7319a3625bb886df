#!/usr/bin/env bash
# The GPU check of issue 16: under 10 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [OUT]            # OUT defaults to runs/gpu-check-<time>
#
# 1. the default model in bfloat16 on cuda through every method: 20 ZsRE edits, both scorers (tf, gen);
# 2. MEMOIR's fast/full edit ratio on the GPU (benchmarks/memoir_edit_speed.py, bf16 and fp32);
# 3. peak device memory (timings.jsonl's peak_device_mb, and torch's own peak in step 2);
# 4. the same comparison with --device-map auto (accelerate places the model; one GPU here, so it must give
#    the same numbers as step 1).
# Every step's output goes to OUT/*.log; benchmarks/gpu_check_summary.py prints one table at the end (seconds
# per edit, which fast loop each edit took, losses finite, peak host and device memory) and exits non-zero when
# a loss is not finite or a run failed.
#
# Environment: DEVICE (default cuda; DEVICE=cpu NUM_EDITS=2 SCORERS=tf is a dry run of the plumbing on a CPU),
# NUM_EDITS (20), SCORERS (tf,gen), METHODS (memoir,ft,grace,wise), MEMOIR_EDITS (5, the speed benchmark),
# THREADS (torch CPU threads), PYTHON (.venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
NUM_EDITS=${NUM_EDITS:-20}
SCORERS=${SCORERS:-tf,gen}
METHODS=${METHODS:-memoir,ft,grace,wise}
MEMOIR_EDITS=${MEMOIR_EDITS:-5}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")  # THREADS=1 for a CPU dry run on shared cores
OUT=${1:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
status=0
step() {  # step NAME COMMAND...: run, log, time; a failure is recorded, the next step still runs
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*" | tee -a "$OUT/commands.txt"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc, $((SECONDS - start)) s (log: $OUT/$name.log)"
  tail -n 12 "$OUT/$name.log" | sed 's/^/   | /'
  [ $rc -eq 0 ] || status=1
}

step device "$PYTHON" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__); print('devices:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
if [ "$DEVICE" != cpu ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to torch (a CPU build of torch, or no GPU): nothing to check; DEVICE=cpu runs the dry run"
  exit 2
fi

common=(--methods "$METHODS" --num-edits "$NUM_EDITS" --scorers "$SCORERS" --dtype bfloat16 --no-progress --overwrite "${threads[@]}")
step bf16 "$PYTHON" -m editkit.cli compare "${common[@]}" --device "$DEVICE" --out "$OUT/bf16"
step memoir-speed-bf16 "$PYTHON" benchmarks/memoir_edit_speed.py --device "$DEVICE" --dtype bfloat16 --num-edits "$MEMOIR_EDITS" "${threads[@]}"
step memoir-speed-fp32 "$PYTHON" benchmarks/memoir_edit_speed.py --device "$DEVICE" --dtype float32 --num-edits "$MEMOIR_EDITS" "${threads[@]}"
if [ "$DEVICE" != cpu ]; then
  step device-map "$PYTHON" -m editkit.cli compare "${common[@]}" --device-map auto --out "$OUT/device-map"
else
  step device-map "$PYTHON" -m editkit.cli compare "${common[@]}" --device cpu --device-map auto --out "$OUT/device-map"
fi
step summary "$PYTHON" benchmarks/gpu_check_summary.py "$OUT/bf16" "$OUT/device-map"
cat "$OUT/summary.log"
exit $status
