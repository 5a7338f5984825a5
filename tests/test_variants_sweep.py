"""Each node variant swept across the whole range of every input, on frames of several shapes.

Frames: carphone (``tests/data``) resized to odd (177x145), portrait (145x257),
768x576 and 1280x720 sizes, and a batch of mixed content (a carphone frame,
flat grey, a gradient, noise) at 201x151; two frames per size.

Parameters (the nodes' widget ranges): essentials ``smooth`` 0/1/2/9/32 x
``dilate`` -32/-1/0/1/32 (every pair), ``blur`` 0/1/2/64 (every pair with
each of the others), ``threshold`` 0 to 1; mixlab ``blur`` 0/0.5/5/15 x
``dilation_factor`` 0/1/10 x ``threshold`` 0/0.3/1 (every triple), and the
issue's 768x576 case (``dilation_factor`` 10, ``blur`` 5) on every shape;
masquerade one to three positive prompts x none to two negative ones x
``normalize`` no/yes, with ``model_size`` 352/max_side and ``precision``
0/0.5/1 spread over them.

Each case is checked twice against the node's code (``tests/seed_reference.py``):

* **post-processing**: the variant's ``postprocess`` on the very logits the
  node's code computed: what the parameters do, without model noise;
* **end to end**: the variant through :class:`streammask.MaskPipeline` (its own
  preprocessing, batching and model call) against the node run whole.

Tolerance (the variants issue's): soft outputs >= 99.9 % of pixels within 2/255
and every pixel within 8/255; binary outputs >= 99.9 % agreement; on the mixed
batch, batched == per-frame and streamed in chunks (``process_stream``) ==
batched by the same measure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import seed_reference as ref  # noqa: E402

from streammask import MaskPipeline  # noqa: E402
from streammask.variants import VARIANTS  # noqa: E402
from streammask.model.threads import torch_threads  # noqa: E402

CARPHONE = Path(__file__).parent / "data" / "carphone_pristine.mp4"
SHAPES = {"odd": (177, 145), "portrait": (145, 257), "768x576": (768, 576), "1280x720": (1280, 720),
          "mixed": (201, 151)}  # name -> (W, H)
SHAPE_NAMES = list(SHAPES)

SOFT_TOL, SOFT_MAX, FRACTION, EPS = 2 / 255, 8 / 255, 0.999, 1e-5
# matplotlib multiplies the node's NaN map (nothing above the threshold, dilated) by 256 with a warning
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")


# ---------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------
def _essentials_cases():
    smooth, dilate, blur = (0, 1, 2, 9, 32), (-32, -1, 0, 1, 32), (0, 1, 2, 64)
    thresholds = (0.0, 0.4, 0.7, 0.95, 1.0)
    prompts = ("car", "face", "road", "sky|trees")
    cases = []
    for i, s in enumerate(smooth):
        for j, d in enumerate(dilate):  # blur on a Latin square: every (smooth, blur) and (dilate, blur) pair
            cases.append((SHAPE_NAMES[(2 * i + j) % 5], prompts[(i + j) % 4],
                          dict(threshold=thresholds[(i + 2 * j) % 5], smooth=s, dilate=d, blur=blur[(i + j) % 4])))
    cases += [(name, "car", {}) for name in SHAPE_NAMES]  # the node's defaults on every shape
    return cases


def _mixlab_cases():
    cases = []
    k = 0
    for blur in (0.0, 0.5, 5.0, 15.0):
        for factor in (0, 1, 10):
            for threshold in (0.0, 0.3, 1.0):
                cases.append((SHAPE_NAMES[k % 5], ("car", "person", "a|b road")[k % 3],
                              dict(blur=blur, dilation_factor=factor, threshold=threshold)))
                k += 1
    cases += [(name, "car", dict(blur=5.0, dilation_factor=10, threshold=0.3)) for name in SHAPE_NAMES]
    return cases


def _masquerade_cases():
    positives = ("car", "car|face| person", "sky|trees|road")
    negatives = ("", "road", "sky|car")
    cases = []
    for i, pos in enumerate(positives):
        for j, neg in enumerate(negatives):
            for n, normalize in enumerate(("no", "yes")):
                model_size = ("352", "max_side")[(i + j + n) % 2]
                shape = SHAPE_NAMES[(i + 2 * j + n) % 5]
                if shape == "1280x720" and model_size == "max_side" and (i + j) % 3:
                    shape = "768x576"  # the seed's 1280x1280 model input is slow: one such case is enough
                cases.append((shape, pos, dict(negative_prompt=neg, normalize=normalize, model_size=model_size,
                                               precision=(0.0, 0.5, 1.0)[(i + 2 * j + n) % 3])))
    return cases


CASES = ([("essentials", *c) for c in _essentials_cases()] + [("mixlab", *c) for c in _mixlab_cases()]
         + [("masquerade", *c) for c in _masquerade_cases()])


def _id(case):
    name, shape, prompt, params = case
    return f"{name}-{shape}-{prompt}-" + ",".join(f"{k}={v}" for k, v in params.items())


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's ops gain nothing from threads on a busy 2-core machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    import av
    import cv2

    with av.open(str(CARPHONE)) as container:
        clip = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    out = {name: np.stack([cv2.resize(clip[i], size, interpolation=cv2.INTER_CUBIC) for i in (0, 80)])
           for name, size in SHAPES.items() if name != "mixed"}
    w, h = SHAPES["mixed"]
    yy, xx = np.mgrid[0:h, 0:w]
    gradient = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], -1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out["mixed"] = np.stack([cv2.resize(clip[40], (w, h), interpolation=cv2.INTER_AREA),
                             np.full((h, w, 3), 128, np.uint8), gradient, noise])
    return out


@pytest.fixture(scope="module")
def clip_seg(tiny_model_dir):
    return ref.load_processor_and_model(str(tiny_model_dir))


_LOGITS: dict[tuple, object] = {}


def _image(u8: np.ndarray) -> torch.Tensor:
    """The ComfyUI ``IMAGE`` of uint8 frames (``u / 255``, as LoadImage)."""
    return torch.from_numpy(u8.astype(np.float32) / 255.0)


def _seed(name, shape, prompt, params, frames, clip_seg, model_dir):
    """The node's outputs and the logits its own model calls gave (cached per shape and prompt)."""
    image = _image(frames[shape])
    p = {**VARIANTS[name].params.defaults(), **params}
    if name == "mixlab":
        key = (name, shape, prompt)
        if key not in _LOGITS:
            _LOGITS[key] = ref.mixlab_logits(image, prompt, model_dir=model_dir)
        logits = _LOGITS[key]
        mask, heat, bw = ref.mixlab_segment_image(image, prompt, p["blur"], p["threshold"], p["dilation_factor"],
                                                  model_dir=model_dir, logits=logits)
        return {"mask": mask, "heatmap": heat, "bw": bw}, logits
    if name == "essentials":
        key = (name, shape, prompt)
        if key not in _LOGITS:
            _LOGITS[key] = ref.essentials_logits(image, clip_seg, prompt)
        logits = _LOGITS[key]
        (mask,) = ref.essentials_apply_clipseg(image, clip_seg, prompt, p["threshold"], p["smooth"], p["dilate"],
                                               p["blur"], logits=logits)
        return {"mask": mask}, logits
    used_dim = None if p["model_size"] == "max_side" else int(p["model_size"])
    key = (name, shape, prompt, p["negative_prompt"], used_dim)
    (thresholded, raw), (preds, neg) = ref.masquerade_get_mask(
        image, prompt, p["negative_prompt"], p["precision"], p["normalize"], clip_seg=clip_seg, used_dim=used_dim,
        logits=_LOGITS.get(key), return_logits=True)
    _LOGITS[key] = (preds, neg)
    b = image.shape[0]
    per_frame = [preds.reshape(-1, b, *preds.shape[-2:]).transpose(0, 1)]  # (P * B, 1, S, S) -> (B, P, S, S)
    if neg is not None:
        per_frame.append(neg.reshape(-1, b, *neg.shape[-2:]).transpose(0, 1))
    return {"thresholded_mask": thresholded, "raw_mask": raw}, torch.cat(per_frame, dim=1)


def _ours(out) -> dict[str, torch.Tensor]:
    """A variant's outputs in the node's layout (``(B, H, W)`` masks, ``(B, H, W, 3)`` float images)."""
    d = {"mask": out.mask[:, 0]}
    if out.heatmap is not None:
        d["heatmap"] = out.heatmap.permute(0, 2, 3, 1).float() / 255.0
    for k, v in out.extra.items():
        d[k] = v.permute(0, 2, 3, 1).float() / 255.0 if v.dtype == torch.uint8 else v[:, 0]
    return d


BINARY = {"thresholded_mask"}


def _check(got: torch.Tensor, expected: torch.Tensor, what: str, failures: list[str], *, binary: bool) -> None:
    a, e = got.detach().cpu().double(), expected.detach().cpu().double()
    if a.shape != e.shape:
        failures.append(f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}")
        return
    if binary:
        frac = float((a == e).double().mean())
        if frac < FRACTION:
            failures.append(f"{what}: {frac:.4%} of pixels agree")
        return
    d = (a - e).abs()
    frac, worst = float((d <= SOFT_TOL + EPS).double().mean()), float(d.max())
    if not torch.isfinite(a).all() or frac < FRACTION or worst > SOFT_MAX + EPS:
        failures.append(f"{what}: {frac:.4%} within 2/255, max {worst * 255:.2f}/255")


def _compare(ours: dict, seed: dict, name: str, params: dict, label: str, failures: list[str]) -> None:
    for key, expected in seed.items():
        if key == "heatmap" and name == "mixlab" and params["threshold"] >= 1.0 and params["dilation_factor"] > 0:
            continue  # nothing passes: OpenCV's -FLT_MAX border stripes in the node's heatmap (README deviation)
        _check(ours[key], expected, f"{label} {key}", failures, binary=key in BINARY)


# ---------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_variant_matches_node(tiny_model, tiny_model_dir, clip_seg, frames, case):
    name, shape, prompt, params = case
    variant = VARIANTS[name]
    seed, seed_logits = _seed(name, shape, prompt, params, frames, clip_seg, tiny_model_dir)
    u8 = frames[shape]
    failures: list[str] = []

    post = variant.postprocess(seed_logits, torch.from_numpy(u8).permute(0, 3, 1, 2).contiguous(), prompt,
                               variant.validate(params))
    _compare(_ours(post), seed, name, params, "post-processing", failures)

    run = MaskPipeline(tiny_model, prompt=prompt, variants={name: params}).process(u8)[name]
    _compare(_ours(run), seed, name, params, "end to end", failures)

    if shape == "mixed" and not (name == "masquerade" and params.get("normalize") == "yes"):
        # (masquerade's normalize=yes is over the batch, by the node's rule: batch-dependent by design)
        single = [_ours(MaskPipeline(tiny_model, prompt=prompt, variants={name: params}).process(u8[i:i + 1])[name])
                  for i in range(len(u8))]
        batched = _ours(run)
        for key, value in batched.items():
            _check(value, torch.cat([s[key] for s in single]), f"batched vs per-frame {key}", failures,
                   binary=key in BINARY)
    assert not failures, "\n".join(failures)


STREAM_CASES = [("essentials", "car", dict(threshold=0.4, smooth=9, dilate=1, blur=9)),
                 ("essentials", "face", dict(threshold=0.7, smooth=32, dilate=-1, blur=64)),
                 ("mixlab", "car", dict(blur=5.0, dilation_factor=10, threshold=0.3)),
                 ("masquerade", "car|face", dict(negative_prompt="road", normalize="yes", normalize_scope="frame"))]


@pytest.mark.parametrize("name,prompt,params", STREAM_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(STREAM_CASES)])
def test_streamed_in_chunks_equals_batched(tiny_model, frames, name, prompt, params):
    """The streamed path (``process_stream``, what ``process_video`` runs) in chunks of 1 and 3 frames
    gives the batch's result on the mixed batch."""
    u8 = frames["mixed"]
    whole = _ours(MaskPipeline(tiny_model, prompt=prompt, variants={name: params}).process(u8)[name])
    for chunk in (1, 3):
        pipe = MaskPipeline(tiny_model, prompt=prompt, variants={name: params})
        parts = []
        for start in range(0, len(u8), chunk):
            items = list(range(start, min(start + chunk, len(u8))))
            results, _, payload = pipe.process_stream(u8[start:start + chunk], items)
            assert payload == items
            parts.append(_ours(results[name]))
        failures: list[str] = []
        for key, value in whole.items():
            _check(torch.cat([p[key] for p in parts]), value, f"chunks of {chunk}: {key}", failures,
                   binary=key in BINARY)
        assert not failures, "\n".join(failures)


def test_sweep_covers_every_listed_value():
    """The sweep reaches every value the issue lists, on every shape."""
    seen: dict[tuple[str, str], set] = {}
    for name, shape, _, params in CASES:
        full = {**VARIANTS[name].params.defaults(), **params}
        for k, v in full.items():
            seen.setdefault((name, k), set()).add(v)
        seen.setdefault((name, "shape"), set()).add(shape)
    wanted = {("essentials", "smooth"): {0, 1, 2, 9, 32}, ("essentials", "dilate"): {-32, -1, 0, 1, 32},
              ("essentials", "blur"): {0, 1, 2, 64}, ("essentials", "threshold"): {0.0, 1.0},
              ("mixlab", "blur"): {0.0, 0.5, 5.0, 15.0}, ("mixlab", "dilation_factor"): {0, 1, 10},
              ("mixlab", "threshold"): {0.0, 1.0}, ("masquerade", "precision"): {0.0, 1.0},
              ("masquerade", "normalize"): {"no", "yes"}, ("masquerade", "model_size"): {"352", "max_side"},
              ("masquerade", "negative_prompt"): {"", "road", "sky|car"}}
    for key, values in wanted.items():
        assert values <= seen[key], (key, values - seen[key])
    for name in ("essentials", "mixlab", "masquerade"):
        assert seen[(name, "shape")] == set(SHAPES), name


# ---------------------------------------------------------------------------
# CUDA vs CPU, per variant
# ---------------------------------------------------------------------------
@pytest.mark.needs_cuda
@pytest.mark.parametrize("name", ["essentials", "mixlab", "masquerade"])
def test_sweep_cuda_matches_cpu(tiny_model, tiny_model_dir, frames, name):
    """The sweep's cases on CUDA (float32, TF32 off) against the CPU run: >= 99.9 % of pixels within 2/255
    (binary: agreeing) for every output. No 8/255 bound: float rounding can flip a pixel that sits on a
    threshold, and essentials' smooth / mixlab's dilation carry such a flip to its neighbourhood."""
    from streammask import load_clipseg

    gpu = load_clipseg(tiny_model_dir, device="cuda", dtype="float32")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        failures: list[str] = []
        for _, shape, prompt, params in (c for c in CASES if c[0] == name):
            u8 = frames[shape]
            cpu = _ours(MaskPipeline(tiny_model, prompt=prompt, variants={name: params}).process(u8)[name])
            cuda = _ours(MaskPipeline(gpu, prompt=prompt, variants={name: params}).process(u8)[name])
            for key, value in cpu.items():
                other = cuda[key].cpu().double()
                if key in BINARY:
                    frac = float((value.double() == other).double().mean())
                else:
                    frac = float(((other - value.double()).abs() <= SOFT_TOL + EPS).double().mean())
                if frac < FRACTION:
                    failures.append(f"{shape} {prompt!r} {params} {key}: {frac:.4%}")
        assert not failures, "\n".join(failures)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
