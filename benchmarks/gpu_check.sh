#!/usr/bin/env bash
# One prepared GPU run: the performance issue's GPU figures and the CUDA tests, in at most ~9.5 minutes.
#
# Where a GPU machine is lent through the workplace's device tool (no network there; its image has torch,
# transformers, OpenCV and pytest, but not PyAV or kornia):
#   here, once:   bash benchmarks/fetch_gpu_wheels.sh          # PyAV + kornia wheels into .whl/ (git-ignored)
#   device run:   command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 600
# Anywhere else with a CUDA GPU and streammask installed: bash benchmarks/gpu_check.sh [OUTDIR]
#
# Every step has its own time limit and the script goes on after a failed step, so one run returns
# every figure it could take. Results land in OUTDIR ($OUT on the device machine, else ./gpu-out), at most
# seven files (the device tool returns at most 8): summary.md (environment, each step's status, seconds and
# output, appended as each step ends, so a run cut short still returns what it did), bench_fp16.json,
# bench_null.json, bench_null_veryfast.json, matte_gpu.md, and SAM 3's sam3_speed.json, sam3_memory.json.
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
    || { echo "installing the carried wheels failed" | tee "$OUTDIR/summary.md"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

LOGS=$(mktemp -d /tmp/streammask-gpu-logs.XXXXXX)
SUMMARY=$OUTDIR/summary.md
step() {  # step NAME LIMIT_S COMMAND...: run, append its status, seconds and output to summary.md; never stop
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  local line="$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)"
  echo "$line" | tee -a "$LOGS/steps.txt"
  { echo; echo "## $line"; echo; echo '```'; grep -v -e 'it/s]' -e '^round ' "$LOGS/$name.log" | tail -n 80; echo '```'; } \
    >> "$SUMMARY"
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
} > "$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"
{ echo "# streammask GPU check"; echo; echo '```'; cat "$LOGS/env.txt"; echo '```'; } > "$SUMMARY"

CLIP=/tmp/streammask-bench-$SIZE.mp4
step make_clip 60 $PY benchmarks/make_clip.py examples/carphone.mp4 "$CLIP" --size "$SIZE" --frames "$CLIP_FRAMES"

# in order of value: a run cut short by the device call's limit keeps the most important figures
# 1. model only / end to end (all three outputs, and mask + heatmap only) / seed loop, fp16, 1080p, fixed batch
step bench_fp16 200 $PY -m streammask bench "$CLIP" --device "$DEVICE" --dtype "$DTYPE" --batch-size "$BATCH" \
  --frames "$E2E" --seed-frames "$SEED" --mask-heatmap --json "$OUTDIR/bench_fp16.json"

# 2. encoder-bound: no model, each encoder alone vs the pipeline (post-processing on the GPU)
step bench_null 90 $PY -m streammask bench "$CLIP" --segmenter null --device "$DEVICE" --batch-size "$BATCH" \
  --frames "$((E2E / 2))" --json "$OUTDIR/bench_null.json"

# 3. the CUDA tests (skipped on CI), with the modules that hold them
step tests_cuda 100 $PY -m pytest -q -p no:cacheprovider -m needs_cuda -rs \
  tests/model/test_model.py tests/test_bench.py tests/temporal/test_temporal.py tests/test_variants.py tests/model/test_perf.py \
  tests/pipeline/test_transfer.py tests/test_refine.py

# 4. model options (dtype, attention, channels_last), model only; --compile is left to a second run (its
#    compilation alone can take minutes)
step model_options 90 $PY benchmarks/model_options.py "$CLIP" --device "$DEVICE" --batch-size "$BATCH" \
  --iters "$ITERS" --rounds "$ROUNDS" --threads 8

# 5. encoder-bound again with the x264 veryfast preset for the H.264 outputs
step bench_null_veryfast 90 $PY -m streammask bench "$CLIP" --segmenter null --device "$DEVICE" \
  --batch-size "$BATCH" --frames "$((E2E / 2))" --encoder-preset veryfast --json "$OUTDIR/bench_null_veryfast.json"

# 6. the copy / compute overlap on and off (end to end, mask + heatmap)
step overlap 90 $PY benchmarks/overlap_check.py "$CLIP" --device "$DEVICE" --dtype "$DTYPE" --batch-size "$BATCH" \
  --frames "$((E2E / 2))" --rounds 2

# 7. the matte refinement on the device: ms/frame at 720p / 1080p beside the model (issue 20's GPU target:
#    <= 15 ms per 1080p frame), on a short quality run (one seed, 4 frames a clip, no sweep)
step matte_refine 90 $PY benchmarks/matte_quality.py --seeds 0 --length 4 --no-sweep --device "$DEVICE" \
  --timing-rounds 3 --table "$OUTDIR/matte_gpu.md" --figure /tmp/streammask-matte.png

# 8. SAM 3 (issue 22's GPU figures), last: the full-size architecture with random weights (real weights cost the
#    same), every detection kept so the object count is the cap. Speed by object count (model only), then GPU
#    memory (allocated / reserved / peak) and RSS sampled along a long synthetic clip, pruned session vs stock.
#    Needs transformers 5.25.x there (the device image had 5.17 in 2026-11: then the step records why it skipped).
if $PY -c "import transformers, sys; sys.exit(not transformers.__version__.startswith('5.25.'))" 2>/dev/null; then
  step sam3_speed 150 $PY benchmarks/sam3_bench.py speed --size full --objects 0,1,4,16 --frames 8 \
    --device "$DEVICE" --dtype "$DTYPE" --json "$OUTDIR/sam3_speed.json"
  step sam3_memory 150 $PY benchmarks/sam3_bench.py memory --size full --objects 4 --frames-list 100,300,600,1000 \
    --stock 200 --device "$DEVICE" --dtype "$DTYPE" --json "$OUTDIR/sam3_memory.json"
else
  step sam3 5 $PY -c "import transformers as t; print('SAM 3 skipped: transformers', t.__version__, 'here, 5.25.x needed')"
fi

{ echo; echo "## steps"; echo; echo '```'; cat "$LOGS/steps.txt"; echo '```'; } >> "$SUMMARY"
cat "$LOGS/steps.txt"
