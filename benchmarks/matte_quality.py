"""Matte quality against ground-truth alpha: ``refine`` none vs guided, with the matting field's metrics.

Clips (``tests/matte_oracle.py``, composed in memory, seeded): real textures from the project's
clips (``examples/carphone.mp4``, and ``../shared/media/*.mp4`` when present) as foreground and
background, composed with a known alpha: ``wobble`` (two moving shapes with soft, wobbling edges,
one with a hole), ``strands`` (a head-like shape with 22-33 thin hair-like strands of partial alpha
that sway) and ``holes`` (a turning ring and a plate with four holes); the background pans.

The segmenter is an oracle that plays CLIPSeg (``MatteOracle``): each frame's true alpha squashed
to the 352 square (area average), blurred by 2 model pixels, with fresh low-frequency noise
(0.6 logits, correlated over 40 model pixels) and a per-frame bias (0.3 logits), as logits. The
masks come from the real pipeline (``MaskPipeline``, variant ``soft``, the run's
``MatteRefiner``), in float, before quantization.

Metrics, as RobustVideoMatting's and MatAnyone's evaluations compute them on alpha in [0, 1]:
MAD and MSE (x 1e3), Grad (Gaussian-derivative gradient error, sigma 1.4, summed over the frame,
/ 1e3; both mattes min-max normalized first), dtSSD (x 1e2, temporal coherence), each averaged over
frames, then over clips. Timing: the refinement alone (``MatteRefiner`` on one frame already in
memory) and the model alone (the full-size rd64-refined CLIPSeg architecture with random weights,
``segment`` of one frame), in the same process, interleaved, at 1280x720 and 1920x1080.

Writes a markdown table (``benchmarks/matte_results.md``) and the README picture
(``docs/matte.png``: source | refine none | refine guided | truth, zoomed on an edge). Example::

    python benchmarks/matte_quality.py                       # 3 kinds x 3 seeds x 24 frames at 720p
    python benchmarks/matte_quality.py --seeds 0 --length 8 --no-sweep --no-timing   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from matte_oracle import MATTE_KINDS, MatteOracle, clip_metrics, load_textures, make_matte_clip  # noqa: E402
from streammask import refine as rf  # noqa: E402
from streammask.pipeline import MaskPipeline  # noqa: E402

METRICS = ("mad", "mse", "grad", "dtssd")

# (label, refiner settings, temporal method, table) -- "sweep" rows are run on the first seed only
CONFIGS = [
    ("none", {}, "none", "main"),
    ("guided (defaults)", {"refine": "guided"}, "none", "main"),
    ("guided, no re-sharpening (plain guided filter)", {"refine": "guided", "refine_sharpen": 1.0}, "none", "main"),
    ("sharpening only (gain 2, no guide)", "sharpen-only", "none", "main"),
    ("none + --temporal flow", {}, "flow", "main"),
    ("guided + --temporal flow", {"refine": "guided"}, "flow", "main"),
]
SWEEP = [
    *[(f"radius {r}", {"refine": "guided", "refine_radius": r}) for r in (2.0, 4.0, 6.0, 8.0, 12.0)],
    *[(f"eps {e:g}", {"refine": "guided", "refine_eps": e}) for e in (1e-6, 1e-5, 1e-4, 1e-3)],
    *[(f"sharpen {g}", {"refine": "guided", "refine_sharpen": g}) for g in (1.5, 2.0, 3.0, 4.0)],
]


def texture_paths() -> list[Path]:
    paths = [ROOT / "examples" / "carphone.mp4"]
    shared = ROOT.parent / "shared" / "media"
    if shared.is_dir():
        paths += sorted(p for p in shared.glob("*.mp4") if "carphone" not in p.name)
    return paths


def run_masks(oracle: MatteOracle, c: int, settings, temporal: str, batch_size: int) -> np.ndarray:
    """``(T, H, W)`` float32 soft-variant mask of clip ``c`` through the pipeline."""
    clip = oracle.clips[c]
    if settings == "sharpen-only":
        plain = run_masks(oracle, c, {}, temporal, batch_size)
        return rf.sharpen_alpha(torch.from_numpy(plain)[:, None], 2.0)[:, 0].numpy()
    pipe = MaskPipeline(oracle, prompt="object", variants=["soft"], temporal=temporal,
                        refiner=rf.MatteRefiner(**settings))
    frames = clip.frames_bchw()
    outs, order = [], []
    for s in range(0, len(clip), batch_size):
        res, _, pay = pipe.process_stream(frames[s:s + batch_size], list(range(s, min(s + batch_size, len(clip)))))
        if res is not None:
            outs.append(res["soft"].mask[:, 0].float().numpy()), order.extend(pay)
    res, _, pay = pipe.flush_stream()
    if res is not None:
        outs.append(res["soft"].mask[:, 0].float().numpy()), order.extend(pay)
    if order != list(range(len(clip))):
        raise AssertionError(f"frames came back as {order}")
    return np.concatenate(outs).clip(0, 1)


def evaluate(args, clips_by_seed) -> dict[str, dict]:
    results: dict[str, dict] = {}
    jobs = [(label, settings, temporal, table) for label, settings, temporal, table in CONFIGS]
    if args.sweep:
        jobs += [(label, settings, "none", "sweep") for label, settings in SWEEP]
    for label, settings, temporal, table in jobs:
        r = results.setdefault(label, {"table": table, "settings": settings, "temporal": temporal, "per_kind": {}})
        seeds = list(clips_by_seed) if table == "main" else list(clips_by_seed)[:1]
        for seed in seeds:
            oracle = clips_by_seed[seed]
            for c, clip in enumerate(oracle.clips):
                pred = run_masks(oracle, c, settings, temporal, args.batch_size)
                r["per_kind"].setdefault(clip.name.split("/")[0], []).append(clip_metrics(pred, clip.alpha))
        r["seeds"] = seeds
        kinds = {k: {m: float(np.mean([v[m] for v in vals])) for m in METRICS} for k, vals in r["per_kind"].items()}
        r["kinds"] = kinds
        r.update({m: float(np.mean([kinds[k][m] for k in kinds])) for m in METRICS})
        print(f"{label:<48} " + "  ".join(f"{m} {r[m]:7.2f}" for m in METRICS), file=sys.stderr, flush=True)
    return results


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def timing(args, textures) -> dict:
    """Refinement and model ms/frame, interleaved, in this process: with the default threads (what
    ``streammask run`` uses) and with one torch and one OpenCV thread (less sensitive to other load)."""
    import cv2

    from streammask import load_clipseg
    from streammask.testing import save_random_clipseg

    device = torch.device(args.device)
    threads = (torch.get_num_threads(), cv2.getNumThreads())
    out: dict = {"device": str(device), "threads": threads, "load_before": os.getloadavg(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = load_clipseg(save_random_clipseg(Path(tmp) / "full", full_size=True), device=device)
        refiner = rf.MatteRefiner(refine="guided")
        settings = [threads] + ([(1, 1)] if device.type == "cpu" and threads != (1, 1) else [])
        for (n_torch, n_cv), (h, w) in ((t, s) for t in settings for s in ((720, 1280), (1080, 1920))):
            torch.set_num_threads(n_torch)
            cv2.setNumThreads(n_cv)
            clip = make_matte_clip("strands", textures, length=1, size=(h, w), seed=0)
            frames = clip.frames_bchw().to(device)
            alpha = torch.from_numpy(clip.alpha[:, None]).to(device)
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

            def run_refine():
                refiner(frames, alpha)
                sync()

            def run_model():
                model.segment(frames, ["object"])
                sync()

            run_refine(), run_model()  # warm-up
            ref_ms, model_ms = [], []
            for _ in range(args.timing_rounds):  # interleaved: both see the same load
                ref_ms.append(_median_ms(run_refine, 5))
                model_ms.append(_median_ms(run_model, 1))
            row = {"frame": f"{h}p", "threads": (n_torch, n_cv), "refine_ms": statistics.median(ref_ms),
                   "model_ms": statistics.median(model_ms), "refine_ms_min": min(ref_ms)}
            out["rows"].append(row)
            print(f"timing {row['frame']} threads {row['threads']}: refine {row['refine_ms']:.1f} ms, model "
                  f"{row['model_ms']:.0f} ms", file=sys.stderr, flush=True)
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    out["load_after"] = os.getloadavg()
    return out


def table(results: dict[str, dict], timings: dict | None, args) -> str:
    base, guided = results["none"], results["guided (defaults)"]
    d = {m: 100 * (guided[m] / base[m] - 1) for m in METRICS}
    lines = [
        f"Clips: {', '.join(MATTE_KINDS)}; {args.length} frames each at {args.size[1]}x{args.size[0]}, seeds "
        f"{', '.join(map(str, args.seeds))} ({len(args.seeds) * len(MATTE_KINDS)} clips); textures from "
        f"{', '.join(p.name for p in texture_paths())}. Oracle: true alpha at 352x352, blur 2 model px, noise 0.6 "
        "logits, bias 0.3 logits. Metrics x1e3 (MAD, MSE), /1e3 (Grad), x1e2 (dtSSD); lower is better.",
        "",
        "| configuration | MAD | MSE | Grad | dtSSD | MAD vs none | Grad vs none | dtSSD vs none |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        if r["table"] != "main":
            continue
        ref = results["none + --temporal flow"] if r["temporal"] == "flow" else base
        rel = " | ".join(f"{100 * (r[m] / ref[m] - 1):+.0f} %" for m in ("mad", "grad", "dtssd"))
        lines.append(f"| {label} | {r['mad']:.2f} | {r['mse']:.2f} | {r['grad']:.2f} | {r['dtssd']:.2f} | {rel} |")
    lines += ["", "(rows with `--temporal flow` are compared with `none + --temporal flow`)", "",
              "Per clip kind, MAD / Grad / dtSSD:", "",
              "| configuration | " + " | ".join(MATTE_KINDS) + " |", "|---|" + "---|" * len(MATTE_KINDS)]
    for label in ("none", "guided (defaults)", "none + --temporal flow", "guided + --temporal flow"):
        k = results[label]["kinds"]
        lines.append(f"| {label} | " + " | ".join(
            f"{k[n]['mad']:.2f} / {k[n]['grad']:.2f} / {k[n]['dtssd']:.2f}" for n in MATTE_KINDS) + " |")
    sweep = [(label, r) for label, r in results.items() if r["table"] == "sweep"]
    if sweep:
        seed = sweep[0][1]["seeds"][0]
        lines += ["", f"Parameter sweep (seed {seed} only; one setting changed from the defaults radius 6, eps 1e-5, "
                      "sharpen 2):", "", "| setting | MAD | MSE | Grad | dtSSD |", "|---|---|---|---|---|"]
        for label, r in sweep:
            lines.append(f"| {label} | {r['mad']:.2f} | {r['mse']:.2f} | {r['grad']:.2f} | {r['dtssd']:.2f} |")
    flow_n, flow_g = results["none + --temporal flow"], results["guided + --temporal flow"]
    lines += ["", "Targets (`refine=guided` against `none`): "
              f"MAD >= 60 % lower: **{-d['mad']:.0f} % lower** ({'met' if d['mad'] <= -60 else 'NOT met'}); "
              f"Grad >= 30 % lower: **{-d['grad']:.0f} % lower** ({'met' if d['grad'] <= -30 else 'NOT met'}); "
              f"dtSSD not worse: **{d['dtssd']:+.0f} %** ({'met' if d['dtssd'] <= 0 else 'NOT met'}); with "
              f"`--temporal flow`: dtSSD {100 * (flow_g['dtssd'] / flow_n['dtssd'] - 1):+.0f} % "
              f"({'met' if flow_g['dtssd'] <= flow_n['dtssd'] else 'NOT met'})."]
    if timings:
        lines += ["", f"Timing ({timings['device']}, {platform.processor() or platform.machine()}, {os.cpu_count()} "
                      f"cores, torch {torch.__version__}; load average {timings['load_before'][0]:.1f} before, "
                      f"{timings['load_after'][0]:.1f} after; refinement = `MatteRefiner(refine='guided')` on one frame "
                      f"(median of 5 calls), model = `segment` of one frame; medians of {args.timing_rounds} "
                      "interleaved rounds, so both see the same load):", "",
                  "| frame | torch / OpenCV threads | refinement ms/frame (best round) | model ms/frame (full-size "
                  "CLIPSeg, batch 1) | refinement / model |", "|---|---|---|---|---|"]
        for t in timings["rows"]:
            lines.append(f"| {t['frame']} | {t['threads'][0]} / {t['threads'][1]} | {t['refine_ms']:.1f} "
                         f"({t['refine_ms_min']:.1f}) | {t['model_ms']:.0f} | {t['refine_ms'] / t['model_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def figure(oracle: MatteOracle, c: int, path: Path, *, t: int = 6) -> None:
    """source | refine none | refine guided | truth of clip ``c``, zoomed on the edge with the most partial alpha."""
    import cv2

    clip = oracle.clips[c]
    plain = run_masks(oracle, c, {}, "none", 8)[t]
    guided = run_masks(oracle, c, {"refine": "guided"}, "none", 8)[t]
    truth = clip.alpha[t]
    h, w = truth.shape
    # the window (a quarter of the height) with the most strand pixels (partial alpha) around the shape's top
    side = h // 4
    soft = ((truth > 0.05) & (truth < 0.95)).astype(np.float32)
    score = cv2.boxFilter(soft, -1, (side, side), normalize=False)
    cy, cx = np.unravel_index(np.argmax(score), score.shape)
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    crop = (slice(y0, y0 + side), slice(x0, x0 + side))
    zoom = 360 / side

    def panel(img):
        img = cv2.resize(img[crop], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        return np.pad(img, ((28, 4), (4, 4), (0, 0)), constant_values=255)

    def gray(a):
        return np.repeat(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)

    panels = [panel(clip.frames[t]), panel(gray(plain)), panel(gray(guided)), panel(gray(truth))]
    for img, text in zip(panels, ("source", "refine none", "refine guided", "true alpha")):
        cv2.putText(img, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    out = np.concatenate(panels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=24, help="frames per clip")
    ap.add_argument("--size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--timing-rounds", type=int, default=5)
    ap.add_argument("--no-sweep", dest="sweep", action="store_false")
    ap.add_argument("--no-timing", dest="timing", action="store_false")
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "matte_results.md")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "matte.png")
    args = ap.parse_args(argv)
    textures = load_textures(texture_paths())
    clips_by_seed = {}
    for seed in args.seeds:
        clips = [make_matte_clip(k, textures, length=args.length, size=tuple(args.size), seed=seed) for k in MATTE_KINDS]
        clips_by_seed[seed] = MatteOracle(clips, seed=seed)
        print(f"seed {seed}: clips composed", file=sys.stderr, flush=True)
    results = evaluate(args, clips_by_seed)
    timings = timing(args, textures) if args.timing else None
    text = table(results, timings, args)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(text)
    first = clips_by_seed[args.seeds[0]]
    figure(first, MATTE_KINDS.index("strands"), args.figure, t=min(6, args.length - 1))
    print(text)
    print(f"wrote {args.table} and {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
