"""Temporal smoothing quality: every method on synthetic clips with known truth.

Clips (``tests/oracle.py``, rendered in memory, seeded): ``moving`` (two textured
objects on curved paths), ``turning`` (a rotating bar and an orbiting disc),
``entering`` (objects entering and leaving through the frame edges), ``cut`` (a hard
cut between two shots) and ``pan`` (the camera pans while an object moves). The
oracle segmenter returns each frame's true mask as CLIPSeg-like logits with fresh
per-frame noise: correlated pixel noise, blotches, edge jitter and wobble, and
occasional dropouts of all or half of the object.

Every method's output logits are thresholded at 0 (probability 0.5) at the model
side ``S`` and compared with the truth at that side:

* **IoU** (%): per-frame intersection over union, averaged over frames whose truth
  is not empty, then over clips.
* **flicker** (% of pixels): for each pair of consecutive frames in one shot, the
  fraction of the pixels whose truth does not change whose predicted value does;
  averaged over pairs, then clips.
* **lag** (frames): every pixel whose truth switches at frame ``t`` and holds for 5
  frames before and after (an edge passing over it, inside one shot) is a
  transition. The prediction over ``[t-5, t+5)`` is fit by a step (old value, then
  the new one from frame ``t + d`` on) with the fewest mismatches (ties averaged);
  ``d`` is that transition's lag. Transitions where the prediction is wrong at
  either end of the window are left out (misses are IoU errors, not lag). Reported:
  the mean ``d``; 0 = on time, > 0 = the edge trails, < 0 = it leads. Symmetric
  per-frame noise averages to 0 (``none`` reads ~0).

Writes a markdown table (``benchmarks/temporal_results.md``) and a flicker-vs-lag
plot (``docs/temporal.png``). Example::

    python benchmarks/temporal_quality.py              # 5 clips x 60 frames, 240x320, S = 352 (~2 min on a CPU)
    python benchmarks/temporal_quality.py --seeds 0 1 2
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

from oracle import CLIP_KINDS, OracleSegmenter, add_benchmark_arguments, benchmark_clips, score  # noqa: E402
from streammask.temporal import make_temporal  # noqa: E402

# (label, method, params, shown in the main table)
CONFIGS = [
    ("none", "none", {}, True),
    ("ema a=0.5", "ema", {"ema_alpha": 0.5}, True),
    ("ema a=0.3", "ema", {"ema_alpha": 0.3}, True),
    ("ema a=0.7", "ema", {"ema_alpha": 0.7}, False),
    ("median 5 centered", "median", {"window": 5}, True),
    ("mean 5 centered", "mean", {"window": 5}, True),
    ("median 3 trailing", "median", {"window": 3, "window_align": "trailing"}, True),
    ("hysteresis 0.6/0.4", "hysteresis", {}, True),
    ("flow (default)", "flow", {}, True),
    ("flow strength 0.6", "flow", {"flow_strength": 0.6}, False),
    ("flow strength 0.9", "flow", {"flow_strength": 0.9}, False),
    ("flow dis_fast", "flow", {"flow_algorithm": "dis_fast"}, True),
    ("flow dis_ultrafast", "flow", {"flow_algorithm": "dis_ultrafast"}, True),
    ("flow farneback", "flow", {"flow_algorithm": "farneback"}, True),
    ("flow side 160", "flow", {"flow_side": 160}, True),
]


def run_clip(smoother, oracle: OracleSegmenter, c: int, *, batch_size: int) -> tuple[np.ndarray, float]:
    """``(T, S, S)`` bool prediction of clip ``c`` and the seconds spent in the smoother."""
    clip = oracle.clips[c]
    frames = clip.frames_bchw()
    outs, order, busy = [], [], 0.0
    for s in range(0, len(clip), batch_size):
        fb = frames[s:s + batch_size]
        logits = oracle.segment(fb, ["object"])
        t0 = time.perf_counter()
        lg, fr, pl = smoother.update(logits, fb, list(range(s, s + len(fb))))
        busy += time.perf_counter() - t0
        outs.append(lg), order.extend(pl)
    t0 = time.perf_counter()
    lg, fr, pl = smoother.flush()
    busy += time.perf_counter() - t0
    outs.append(lg), order.extend(pl)
    if order != list(range(len(clip))):
        raise AssertionError(f"{smoother!r} returned frames {order}")
    return (torch.cat(outs)[:, 0] > 0).numpy(), busy


def evaluate(args) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for seed in args.seeds:
        clips = benchmark_clips(length=args.length, size=tuple(args.size), seed=seed)
        oracle = OracleSegmenter(clips, size=args.side, seed=seed, cache=True)
        for label, method, params, _ in CONFIGS:
            r = results.setdefault(label, {"method": method, "params": params, "clips": {}, "busy": 0.0, "frames": 0})
            for c, clip in enumerate(clips):
                smoother = make_temporal(method, **params)
                pred, busy = run_clip(smoother, oracle, c, batch_size=args.batch_size)
                sc = score(pred, oracle.truth(c), clip.cuts)
                r["clips"].setdefault(clip.name, []).append((sc.iou, sc.flicker, sc.lag))
                r["busy"] += busy
                r["frames"] += len(clip)
                r["delay"], r["causal"] = smoother.delay, smoother.causal
            print(f"seed {seed} {label:<20} done", file=sys.stderr, flush=True)
    for r in results.values():
        per_clip = {k: np.mean(v, axis=0) for k, v in r["clips"].items()}
        r["per_clip"] = per_clip
        r["iou"], r["flicker"], r["lag"] = np.mean(list(per_clip.values()), axis=0)
        r["ms"] = 1000 * r["busy"] / r["frames"]
    return results


def table(results: dict[str, dict], args) -> str:
    base = results["none"]
    flow, ema = results["flow (default)"], results["ema a=0.5"]
    cut = 100 * (1 - flow["flicker"] / base["flicker"])
    lines = [
        f"Oracle clips: {', '.join(CLIP_KINDS)}; {args.length} frames each at {args.size[0]}x{args.size[1]}, "
        f"model side {args.side}, seeds {', '.join(map(str, args.seeds))}; masks = logits > 0. "
        "Definitions of IoU, flicker and lag: `benchmarks/temporal_quality.py`.",
        "",
        "| method | causal | delay | IoU % | dIoU | flicker % | flicker vs none | lag (frames) | smoother ms/frame (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, _, _, shown in CONFIGS:
        if not shown:
            continue
        r = results[label]
        lines.append(
            f"| {label} | {'yes' if r['causal'] else 'no'} | {r['delay']} | {r['iou']:.1f} | {r['iou'] - base['iou']:+.1f} | "
            f"{r['flicker']:.3f} | {100 * (r['flicker'] / base['flicker'] - 1):+.0f} % | {r['lag']:+.2f} | {r['ms']:.1f} |")
    lines += [
        "",
        f"Targets for `flow` (defaults: `flow_algorithm=dis_medium`, `flow_side=240`, `flow_strength=0.8`, `flow_error=0.05`): "
        f"flicker cut >= 60 % vs `none`: **{cut:.0f} %** ({'met' if cut >= 60 else 'NOT met'}); "
        f"IoU loss <= 1 point: **{flow['iou'] - base['iou']:+.1f}** ({'met' if flow['iou'] >= base['iou'] - 1 else 'NOT met'}); "
        f"lag <= 0.5 frames: **{flow['lag']:.2f}** ({'met' if flow['lag'] <= 0.5 else 'NOT met'}). "
        f"`ema` (alpha 0.5) beside it: flicker {100 * (ema['flicker'] / base['flicker'] - 1):+.0f} %, "
        f"lag {ema['lag']:.2f} frames, IoU {ema['iou'] - base['iou']:+.1f}.",
        "",
        "Per clip (IoU % / flicker % / lag):",
        "",
        "| method | " + " | ".join(CLIP_KINDS) + " |",
        "|---|" + "---|" * len(CLIP_KINDS),
    ]
    for label in ("none", "ema a=0.5", "mean 5 centered", "flow (default)", "flow dis_fast"):
        pc = results[label]["per_clip"]
        lines.append(f"| {label} | " + " | ".join(f"{pc[k][0]:.1f} / {pc[k][1]:.2f} / {pc[k][2]:+.2f}" for k in CLIP_KINDS) + " |")
    lines += ["", f"Timing: smoother only (oracle excluded), batch {args.batch_size}, {platform.processor() or platform.machine()}, "
                  f"torch {torch.__version__}, {torch.get_num_threads()} threads; indicative (shared machine)."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    curves = {"ema": ["ema a=0.7", "ema a=0.5", "ema a=0.3"],
              "flow": ["flow strength 0.6", "flow (default)", "flow strength 0.9"]}
    colors = {"none": "black", "ema": "tab:orange", "median": "tab:green", "mean": "tab:olive",
              "hysteresis": "tab:purple", "flow": "tab:blue"}
    for method, labels in curves.items():
        ax.plot([results[k]["lag"] for k in labels], [results[k]["flicker"] for k in labels], "-", color=colors[method],
                alpha=0.5, zorder=1)
    key = {"none", "ema a=0.7", "ema a=0.5", "ema a=0.3", "median 5 centered", "mean 5 centered", "median 3 trailing",
           "hysteresis 0.6/0.4", "flow (default)"}
    for label, method, _, _ in CONFIGS:
        r = results[label]
        marker = "o" if r["causal"] else "s"
        if label in key:
            ax.scatter(r["lag"], r["flicker"], color=colors[method], marker=marker, s=40, zorder=3)
            left = "centered" in label
            ax.annotate(label, (r["lag"], r["flicker"]), textcoords="offset points", xytext=(-7, -3) if left else (6, 4),
                        ha="right" if left else "left", fontsize=8, weight="bold" if label == "flow (default)" else None)
        else:
            ax.scatter(r["lag"], r["flicker"], facecolor="none", edgecolor=colors[method], marker=marker, s=28, zorder=2,
                       label="flow variants: dis_fast, dis_ultrafast, farneback,\nside 160, strength 0.6 / 0.9"
                       if label == "flow dis_fast" else None)
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.axvline(0.5, color="gray", lw=0.8, ls=":")
    ax.axhline(0.4 * results["none"]["flicker"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel("lag: frames a moving edge trails the truth")
    ax.set_ylabel("flicker: % of truth-stable pixels changing per frame")
    ax.set_title("Temporal smoothing on oracle clips (circles causal, squares look ahead)\n"
                 "dotted: targets (flicker -60 % vs none, lag 0.5 frame)", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=min(-0.5, ax.get_xlim()[0]))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_benchmark_arguments(ap)
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "temporal_results.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "temporal.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = evaluate(args)
    text = table(results, args)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(text)
    plot(results, args.plot)
    print(text)
    print(f"wrote {args.table} and {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
