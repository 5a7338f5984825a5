"""Throughput benchmark: seed-style per-frame loop vs streammask end to end vs model only.

Same clip, same model architecture, same device, one run:

(a) a per-frame loop in the style of the seed nodes (CLIPSegProcessor + model per
    frame, the text re-encoded every frame);
(b) streammask end to end (decode thread, batched inference, post-processing,
    mask + heatmap + matte encoders on their own threads);
(c) streammask model only (preprocess + model) at the same batch size on
    already decoded frames.

Without --model it builds the full-size rd64-refined architecture with random
weights (real weights give the same speed). Example::

    python benchmarks/bench.py examples/carphone.mp4 --frames 48 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--model", default=None, help="model dir/id (default: full-size random weights)")
    ap.add_argument("--seed-frames", type=int, default=None, help="frames for the seed-style loop (default: --frames)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import streammask
    from streammask.testing import save_random_clipseg

    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model or str(save_random_clipseg(Path(tmp.name) / "full", full_size=True))
    model = streammask.load_clipseg(model_dir, device=args.device, dtype=args.dtype)
    frames = np.concatenate([b.frames for b in streammask.read_batches(args.input, batch_size=16, max_frames=args.frames)])
    n = len(frames)
    prompt = "person"
    torch.set_grad_enabled(False)

    # (a) seed style: processor + model per frame, text encoded per frame
    from PIL import Image
    from transformers import CLIPSegProcessor

    processor = CLIPSegProcessor.from_pretrained(model_dir)
    n_seed = args.seed_frames or n
    t0 = time.perf_counter()
    for f in frames[:n_seed]:
        inputs = processor(text=prompt, images=Image.fromarray(f), padding="max_length", return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        out = model.model(**inputs).logits
        torch.sigmoid(out).float().cpu().numpy()
    seed_fps = n_seed / (time.perf_counter() - t0)

    # (c) model only, same batch size
    pipe = streammask.MaskPipeline(model, prompt=prompt)
    model.segment(pipe.to_device(frames[:1]), [prompt])  # warm-up
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, n, args.batch_size):
        x = pipe.to_device(frames[i:i + args.batch_size])
        model.segment(x, [prompt])
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    model_fps = n / (time.perf_counter() - t0)

    # (b) end to end, all three outputs
    with tempfile.TemporaryDirectory() as out:
        s = streammask.process_video(args.input, out_dir=out, prompt=prompt, segmenter=model, batch_size=args.batch_size,
                                     max_frames=n, progress=False)
    e2e_fps = s.frames / s.seconds

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "device": str(model.device) + (f" ({torch.cuda.get_device_name()})" if model.device.type == "cuda" else ""),
        "dtype": str(model.dtype), "torch": torch.__version__, "frames": n, "batch_size": args.batch_size,
        "input": f"{frames.shape[2]}x{frames.shape[1]}",
        "seed_loop_fps": round(seed_fps, 3), "end_to_end_fps": round(e2e_fps, 3), "model_only_fps": round(model_fps, 3),
        "end_to_end_over_seed": round(e2e_fps / seed_fps, 3), "end_to_end_over_model": round(e2e_fps / model_fps, 3),
        "stages_s": {k: round(v, 3) for k, v in s.stage_seconds.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
