"""Make the README picture: one frame, its mask, heatmap overlay and matte side by side.

    python examples/readme_figure.py examples/carphone.mp4 --prompt person --model PATH -o docs/figure.png

Without --model it uses a random-weight CLIPSeg (no download needed): the layout
is real, the mask content is noise. With the real weights the mask follows the prompt.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("--prompt", default="person")
    ap.add_argument("--variant", default="soft")
    ap.add_argument("--model", default=None)
    ap.add_argument("--frame", type=int, default=30)
    ap.add_argument("-o", "--output", default="docs/figure.png")
    args = ap.parse_args()

    import cv2
    import streammask
    from streammask.testing import save_random_clipseg

    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model or save_random_clipseg(Path(tmp.name) / "random")
    model = streammask.load_clipseg(model_dir)
    pipe = streammask.MaskPipeline(model, prompt=args.prompt, variants=[args.variant])
    batch = next(b for b in streammask.read_batches(args.input, batch_size=1) if b.start == args.frame)
    x = pipe.to_device(batch.frames)
    out = pipe.render(x, pipe.process(x)[args.variant], ("mask", "heatmap", "matte"))
    frame = batch.frames[0]
    h, w = frame.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    checker = np.where(((yy // 12) + (xx // 12)) % 2 == 0, 200, 140).astype(np.float32)[..., None]
    matte = out["matte"][0].astype(np.float32)
    a = matte[..., 3:] / 255.0
    over = (matte[..., :3] * a + checker * (1 - a)).round().astype(np.uint8)
    tiles = [frame, np.repeat(out["mask"][0], 3, axis=2), out["heatmap"][0], over]
    labels = ["source", f"mask ({args.variant})", "heatmap", "matte over checkerboard"]
    pad = 22
    canvas = np.full((h + pad, w * 4 + 30, 3), 255, np.uint8)
    for i, (t, label) in enumerate(zip(tiles, labels)):
        x0 = i * (w + 10)
        canvas[pad:, x0:x0 + w] = t
        cv2.putText(canvas, label, (x0 + 2, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.output, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
