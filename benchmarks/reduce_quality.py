"""Reduced work (``--stride``, ``--skip-static``): model calls saved, IoU cost, end-to-end speed.

Part 1, quality (``tests/oracle.py``'s clips and oracle, as ``benchmarks/temporal_quality.py``):
every configuration runs :class:`streammask.temporal.keyframes.WorkReducer` in front of the oracle
(optionally followed by a temporal smoother) and is scored like the temporal benchmark
(IoU %, flicker %, lag in frames; definitions there). Reported per configuration: the
fraction of frames the model ran on, the reducer's own cost per frame (optical flow,
PSNR) and the IoU change against running the model on every frame. Besides the five
moving clips of the temporal benchmark, a ``still`` clip (a locked-off shot: static
textured scene, a small object that moves for 10 frames in the middle, camera noise)
shows what ``--skip-static`` is for.

Part 2, speed (``--e2e``): :func:`streammask.process_video` end to end (decode, model,
post-processing, all three outputs) with the full-size CLIPSeg architecture and random
weights on a real clip, for stride 1 / 2 / 3 and skip-static; frames/s and the speed-up.

    python benchmarks/reduce_quality.py                     # part 1: 6 clips x 60 frames (~1 min on a CPU)
    python benchmarks/reduce_quality.py --e2e examples/carphone.mp4 --e2e-frames 30
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from oracle import CLIP_KINDS, OracleSegmenter, SyntheticClip, add_benchmark_arguments, benchmark_clips, score  # noqa: E402
from streammask.temporal.keyframes import WorkReducer
from streammask.temporal import make_temporal  # noqa: E402

# (label, reducer options, temporal method)
CONFIGS = [
    ("every frame", {}, "none"),
    ("stride 2", {"stride": 2}, "none"),
    ("stride 3", {"stride": 3}, "none"),
    ("stride 4", {"stride": 4}, "none"),
    ("stride 6", {"stride": 6}, "none"),
    ("stride 2, dis_ultrafast flow", {"stride": 2, "flow_algorithm": "dis_ultrafast"}, "none"),
    ("stride 3, dis_ultrafast flow", {"stride": 3, "flow_algorithm": "dis_ultrafast"}, "none"),
    ("skip-static 40 dB", {"skip_static": True, "static_psnr": 40.0}, "none"),
    ("skip-static 35 dB", {"skip_static": True, "static_psnr": 35.0}, "none"),
    ("stride 3 + skip-static 40", {"stride": 3, "skip_static": True}, "none"),
    ("every frame + flow smoothing", {}, "flow"),
    ("stride 2 + flow smoothing", {"stride": 2}, "flow"),
    ("stride 3 + flow smoothing", {"stride": 3}, "flow"),
]


def still_clip(*, length: int = 60, size: tuple[int, int] = (240, 320), seed: int = 0) -> SyntheticClip:
    """A locked-off shot: textured static background, a disc that moves only in frames 25-34, sensor noise."""
    rng = np.random.default_rng(1000 + seed)
    h, w = size
    bg = (rng.integers(40, 200, (h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)).astype(np.float32)
    bg += rng.normal(0, 12, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    frames, truth = [], []
    for t in range(length):
        step = min(max(t - 25, 0), 10)
        cy, cx = h * 0.5, w * 0.3 + step * w * 0.03
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (h * 0.15) ** 2
        img = bg.copy()
        img[disc] = (230, 60, 40)
        img += rng.normal(0, 1.0, img.shape)  # sensor noise: ~48 dB between still frames
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        truth.append(disc)
    return SyntheticClip("still", np.stack(frames), np.stack(truth), np.zeros(length, bool))


def run_clip(options: dict, method: str, oracle: OracleSegmenter, c: int, *, batch_size: int):
    clip = oracle.clips[c]
    frames = clip.frames_bchw()
    reducer = WorkReducer(**options)
    smoother = make_temporal(method)
    outs, busy = [], 0.0
    for s in range(0, len(clip), batch_size):
        fb = frames[s:s + batch_size]
        t0 = time.perf_counter()
        calls = []

        def infer(keys):
            t1 = time.perf_counter()
            out = {"k": oracle.segment(keys, ["object"])}
            calls.append(time.perf_counter() - t1)
            return out

        logits = reducer.logits(fb, infer)["k"]
        busy += time.perf_counter() - t0 - sum(calls)
        lg, _, _ = smoother.update(logits, fb, list(range(s, s + len(fb))))
        outs.append(lg)
    lg, _, _ = smoother.flush()
    outs.append(lg)
    pred = (torch.cat(outs)[:, 0] > 0).numpy()
    return pred, reducer.counts, busy


def evaluate(args) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for seed in args.seeds:
        clips = benchmark_clips(length=args.length, size=tuple(args.size), seed=seed)
        clips.append(still_clip(length=args.length, size=tuple(args.size), seed=seed))
        oracle = OracleSegmenter(clips, size=args.side, seed=seed, cache=True)
        for label, options, method in CONFIGS:
            r = results.setdefault(label, {"clips": {}, "model": 0, "frames": 0, "busy": 0.0, "per_clip_model": {}})
            for c, clip in enumerate(clips):
                pred, counts, busy = run_clip(options, method, oracle, c, batch_size=args.batch_size)
                sc = score(pred, oracle.truth(c), clip.cuts)
                r["clips"].setdefault(clip.name, []).append((sc.iou, sc.flicker, sc.lag))
                r["per_clip_model"].setdefault(clip.name, []).append(counts["model"] / len(clip))
                r["model"] += counts["model"]
                r["frames"] += len(clip)
                r["busy"] += busy
            print(f"seed {seed} {label:<30} done", file=sys.stderr, flush=True)
    for r in results.values():
        r["per_clip"] = {k: np.mean(v, axis=0) for k, v in r["clips"].items()}
        moving = [v for k, v in r["per_clip"].items() if k in CLIP_KINDS]
        r["iou"], r["flicker"], r["lag"] = np.mean(moving, axis=0)
        r["model_frac"] = r["model"] / r["frames"]
        r["ms"] = 1000 * r["busy"] / r["frames"]
    return results


def table(results: dict[str, dict], args) -> str:
    base = results["every frame"]
    kinds = list(CLIP_KINDS) + ["still"]
    lines = [
        f"Oracle clips: {', '.join(CLIP_KINDS)} (as the temporal benchmark) + still; {args.length} frames each at "
        f"{args.size[0]}x{args.size[1]}, model side {args.side}, seeds {', '.join(map(str, args.seeds))}, batch "
        f"{args.batch_size}; masks = logits > 0. IoU / flicker / lag: mean over the five moving clips.",
        "",
        "| configuration | model runs on (% of frames, all clips) | IoU % | dIoU vs every frame | flicker % | lag (frames) "
        "| still: model % / IoU % | reducer ms/frame (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, _, _ in CONFIGS:
        r = results[label]
        still_iou = r["per_clip"]["still"][0]
        still_model = 100 * np.mean(r["per_clip_model"]["still"])
        lines.append(f"| {label} | {100 * r['model_frac']:.0f} | {r['iou']:.1f} | {r['iou'] - base['iou']:+.1f} | "
                     f"{r['flicker']:.3f} | {r['lag']:+.2f} | {still_model:.0f} / {still_iou:.1f} | {r['ms']:.1f} |")
    lines += ["", "Per clip IoU % (model % of frames):", "",
              "| configuration | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for label, _, _ in CONFIGS:
        r = results[label]
        lines.append(f"| {label} | " + " | ".join(
            f"{r['per_clip'][k][0]:.1f} ({100 * np.mean(r['per_clip_model'][k]):.0f})" for k in kinds) + " |")
    lines += ["", f"Timing: the reducer only (flow, PSNR, warps; oracle excluded), {platform.processor() or platform.machine()}, "
                  f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); indicative (shared machine)."]
    return "\n".join(lines) + "\n"


def end_to_end(args) -> str:
    import tempfile

    from streammask import load_clipseg, process_video
    from streammask.testing import save_random_clipseg

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or save_random_clipseg(Path(tmp) / "full", full_size=True)
        seg = load_clipseg(model_dir, device="cpu", dtype=args.dtype)
        configs = [("every frame", {}), ("stride 2", {"stride": 2}), ("stride 3", {"stride": 3}),
                   ("skip-static 40 dB", {"skip_static": True}), ("stride 3 + flow smoothing", {"stride": 3, "temporal": "flow"})]
        process_video(args.e2e, prompt="person", out_dir=Path(tmp) / "warm", segmenter=seg, progress=False,
                      max_frames=2, batch_size=1)
        runs: dict[str, list] = {}
        for r in range(args.e2e_rounds):  # interleaved rounds: a busy spell of a shared machine hits every config
            for label, opts in configs:
                t0 = time.perf_counter()
                s = process_video(args.e2e, prompt="person", out_dir=Path(tmp) / label.replace(" ", "_"), segmenter=seg,
                                  progress=False, max_frames=args.e2e_frames, batch_size=args.e2e_batch, **opts)
                sec = time.perf_counter() - t0
                runs.setdefault(label, []).append((s.frames, s.model_frames if s.model_frames is not None else s.frames,
                                                   s.frames / sec))
                print(f"e2e round {r} {label}: {s.frames / sec:.3f} fps", file=sys.stderr, flush=True)
        for label, _ in configs:
            n, m, _ = runs[label][0]
            rows.append((label, n, m, float(np.median([fps for _, _, fps in runs[label]]))))
    base = rows[0][3]
    lines = [f"End to end, `{args.e2e}`, first {args.e2e_frames} frames, full-size rd64-refined architecture with random "
             f"weights, {args.dtype}, CPU ({args.threads} threads), batch {args.e2e_batch}, prompt 'person', variant soft, "
             "mask + heatmap + matte:", "",
             f"| configuration | frames | model frames | frames/s end to end (median of {args.e2e_rounds}) | speed-up |", "|---|---|---|---|---|"]
    for label, n, m, fps in rows:
        lines.append(f"| {label} | {n} | {m} | {fps:.3f} | {fps / base:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_benchmark_arguments(ap)
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "reduce_results.md")
    ap.add_argument("--skip-quality", action="store_true", help="only the end-to-end part")
    ap.add_argument("--e2e", metavar="CLIP", help="also time process_video end to end on this clip")
    ap.add_argument("--e2e-frames", type=int, default=30)
    ap.add_argument("--e2e-batch", type=int, default=1)
    ap.add_argument("--e2e-rounds", type=int, default=3, help="interleaved repetitions (median reported)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help="model directory for --e2e (default: full-size random weights)")
    args = ap.parse_args(argv)
    text = ""
    if not args.skip_quality:
        torch.set_num_threads(1)
        text += table(evaluate(args), args)
    if args.e2e:
        text += ("\n" if text else "") + end_to_end(args)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(text)
    print(text)
    print(f"wrote {args.table}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
