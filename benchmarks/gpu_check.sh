#!/usr/bin/env bash
# One prepared GPU run: the CUDA tests and the performance issue's GPU figures, in about 8 minutes.
#
# Where a GPU machine is lent through the workplace's device tool (no network there; its image has torch,
# transformers, OpenCV and pytest, but not PyAV or kornia):
#   here, once:   bash benchmarks/fetch_gpu_wheels.sh          # PyAV + kornia wheels into .whl/ (git-ignored)
#   device run:   command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 600
# Anywhere else with a CUDA GPU and streammask installed: bash benchmarks/gpu_check.sh [OUTDIR]
#
# Every step has its own time limit and the script goes on after a failed step, so one run returns
# every figure it could take. Results land in OUTDIR ($OUT on the device machine, else ./gpu-out):
# env.txt, tests_cuda.log, bench_fp16.json/.md, bench_null.json/.md, model_options.md, steps.txt.
# A CPU dry run of the plumbing (small sizes, no CUDA needed, ~5 min on 2 cores):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_DTYPE=float32 GPU_CHECK_SMALL=1 bash benchmarks/gpu_check.sh /tmp/gpu-dry
set -u
OUTDIR=${1:-${OUT:-gpu-out}}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
DTYPE=${GPU_CHECK_DTYPE:-float16}
if [ -n "${GPU_CHECK_SMALL:-}" ]; then
  SIZE=320x180; CLIP_FRAMES=24; E2E=8; BATCH=4; SEED=2; ITERS=1; ROUNDS=1
else
  SIZE=1920x1080; CLIP_FRAMES=600; E2E=512; BATCH=32; SEED=32; ITERS=8; ROUNDS=3
fi

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" | tee "$OUTDIR/steps.txt"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

step() {  # step NAME LIMIT_S COMMAND...: run, log its status and seconds, never stop the script
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUTDIR/steps.txt"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  nproc
  $PY - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
for name in ("transformers", "av", "kornia", "cv2", "numpy", "PIL"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING", exc)
EOF
} > "$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"

CLIP=/tmp/streammask-bench-$SIZE.mp4
step make_clip 120 $PY benchmarks/make_clip.py examples/carphone.mp4 "$CLIP" --size "$SIZE" --frames "$CLIP_FRAMES"

# 1. the CUDA tests (skipped on CI), with the modules that hold them
step tests_cuda 150 $PY -m pytest -q -p no:cacheprovider -m needs_cuda -rs \
  tests/test_model.py tests/test_bench.py tests/test_temporal.py tests/test_variants.py tests/test_perf.py

# 2. model only / end to end (mask + heatmap + ProRes matte) / seed loop, fp16, 1080p, fixed batch
step bench_fp16 240 $PY -m streammask bench "$CLIP" --device "$DEVICE" --dtype "$DTYPE" --batch-size "$BATCH" \
  --frames "$E2E" --seed-frames "$SEED" --mask-heatmap --json "$OUTDIR/bench_fp16.json"
cp "$OUTDIR/bench_fp16.log" "$OUTDIR/bench_fp16.md" 2>/dev/null

# 3. encoder-bound: no model, each encoder alone vs the pipeline (post-processing on the GPU)
step bench_null 120 $PY -m streammask bench "$CLIP" --segmenter null --device "$DEVICE" --batch-size "$BATCH" \
  --frames "$((E2E / 2))" --json "$OUTDIR/bench_null.json"
cp "$OUTDIR/bench_null.log" "$OUTDIR/bench_null.md" 2>/dev/null

# 4. model options (dtype, attention, channels_last) model only; --compile is left to a second run (its
#    compilation alone can take minutes)
step model_options 120 $PY benchmarks/model_options.py "$CLIP" --device "$DEVICE" --batch-size "$BATCH" \
  --iters "$ITERS" --rounds "$ROUNDS" --threads 8
cp "$OUTDIR/model_options.log" "$OUTDIR/model_options.md" 2>/dev/null

cat "$OUTDIR/steps.txt"
