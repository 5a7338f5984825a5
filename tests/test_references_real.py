"""The filters, tables and preprocessing the variants imitate, checked against the real library calls.

The seed nodes call scipy (``gaussian_filter``, ``grey_dilation`` / ``grey_erosion``),
OpenCV (``dilate``, ``resize``, ``addWeighted``), matplotlib (``cm.viridis`` /
``cm.Greys_r``) and transformers' ``CLIPSegProcessor`` (its PIL path). streammask
re-implements each in torch (:mod:`streammask.ops`, :meth:`streammask.ClipSeg.preprocess`)
and ``tests/seed_reference.py`` holds the seeds' helpers; here each is run
beside the real call on the same input, over the whole range the nodes allow.

All of these libraries are test extras or dependencies, so this file runs in
the main suite. torchvision (the essentials node's ``gaussian_blur``, the
masquerade node's ``Normalize`` / ``Resize``) does not install beside the CPU
torch of the main run: its comparisons are in ``test_references_torchvision.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import seed_reference as ref  # noqa: E402

from streammask import ops  # noqa: E402

cv2 = pytest.importorskip("cv2")
scipy_ndimage = pytest.importorskip("scipy.ndimage")
matplotlib_cm = pytest.importorskip("matplotlib.cm")

MIXLAB_SIGMAS = [round(0.1 * i, 1) for i in range(151)]  # blur: FLOAT 0..15, step 0.1
MIXLAB_DILATION_FACTORS = list(range(11))  # dilation_factor: INT 0..10


def _maps(seed: int, shape) -> list[np.ndarray]:
    """float32 maps like the mixlab node's: thresholded probabilities (zeros and values in (t, 1]),
    smooth blobs, noise, and a sparse one."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    noise = rng.random(shape).astype(np.float32)
    blob = np.exp(-((xx - 0.3 * w) ** 2 + (yy - 0.7 * h) ** 2) / (0.05 * (h * h + w * w))).astype(np.float32)
    thresholded = np.where(noise > 0.3, noise, np.float32(0))
    sparse = np.where(rng.random(shape) > 0.995, noise, np.float32(0))
    return [noise, blob, thresholded, sparse]


# ---------------------------------------------------------------------------
# scipy.ndimage.gaussian_filter (mixlab's blur)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(61, 67), (352, 352)])
def test_gaussian_blur_scipy_matches_scipy_for_every_mixlab_sigma(shape):
    """Every sigma the node's widget allows (0 to 15 by 0.1). At (61, 67) the radius ``int(4 sigma + 0.5)``
    (up to 60) passes the image size, so scipy's ``reflect`` repeats; ``ops`` must repeat it the same way."""
    sigmas = MIXLAB_SIGMAS if shape == (61, 67) else [0.0, 0.5, 1.0, 3.0, 5.0, 7.7, 15.0]
    maps = _maps(1, shape)
    x = torch.from_numpy(np.stack(maps))[:, None]
    for sigma in sigmas:
        got = ops.gaussian_blur_scipy(x, sigma)[:, 0].numpy()
        for m, g in zip(maps, got):
            expected = scipy_ndimage.gaussian_filter(m, sigma=sigma)  # the node's call, float32 in and out
            assert expected.dtype == np.float32
            np.testing.assert_allclose(g, expected, rtol=0, atol=2e-6, err_msg=f"sigma {sigma}")


@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.5, 1.2, 5.0, 12.4, 15.0])
def test_gaussian_blur_scipy_radius_matches_scipy(sigma):
    """The kernel's support is scipy's: an impulse spreads exactly ``int(4 sigma + 0.5)`` pixels."""
    radius = int(4.0 * sigma + 0.5)
    n = 2 * radius + 9
    impulse = np.zeros((n, n), np.float32)
    impulse[n // 2, n // 2] = 1
    expected = scipy_ndimage.gaussian_filter(impulse, sigma=sigma)
    got = ops.gaussian_blur_scipy(torch.from_numpy(impulse)[None, None], sigma)[0, 0].numpy()
    np.testing.assert_array_equal(got != 0, expected != 0)
    assert np.count_nonzero(expected[n // 2]) == 2 * radius + 1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------
# cv2.dilate with the kernels mixlab builds
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dilation_factor", MIXLAB_DILATION_FACTORS)
def test_box_dilate_matches_cv2_dilate(dilation_factor):
    """mixlab's ``dilate_mask``: ``cv2.dilate(mask, np.ones((2f + 1, 2f + 1), np.uint8))`` on float32, bit for bit,
    including images smaller than the kernel (OpenCV ignores the outside)."""
    k = int(dilation_factor * 2) + 1
    for shape in ((352, 352), (61, 67), (7, 5), (1, 13)):
        for m in _maps(dilation_factor, shape):
            expected = cv2.dilate(m, np.ones((k, k), np.uint8), iterations=1)
            via_seed = ref.dilate_mask(torch.from_numpy(m), dilation_factor).numpy()
            got = ops.box_dilate(torch.from_numpy(m)[None, None], k)[0, 0].numpy()
            np.testing.assert_array_equal(via_seed, expected)
            np.testing.assert_array_equal(got, expected, err_msg=f"factor {dilation_factor}, shape {shape}")


# ---------------------------------------------------------------------------
# scipy grey_dilation / grey_erosion with essentials' tapered cross (expand_mask)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("expand", [-32, -5, -1, 1, 2, 32])
def test_cross_dilate_matches_essentials_expand_mask(expand):
    gen = torch.Generator().manual_seed(abs(expand) + (expand < 0))
    for shape in ((3, 61, 67), (2, 352, 352), (1, 9, 4)):
        for x in ((torch.rand(shape, generator=gen) < 0.1).float(), torch.rand(shape, generator=gen)):
            expected = ref.expand_mask(x, expand, True)  # scipy.ndimage.grey_dilation / grey_erosion, footprint cross
            got = ops.cross_dilate(x[:, None], expand)[:, 0]
            assert torch.equal(got, expected), (expand, shape)


# ---------------------------------------------------------------------------
# matplotlib colormaps (mixlab's viridis / Greys_r; streammask's other heatmaps)
# ---------------------------------------------------------------------------
MPL_NAMES = {"viridis": "viridis", "greys_r": "Greys_r", "turbo": "turbo", "inferno": "inferno", "magma": "magma",
             "jet": "jet"}


@pytest.mark.parametrize("name", ops.COLORMAPS)
def test_colormap_tables_match_matplotlib(name):
    """The shipped tables (``colormaps.npz``) are matplotlib's, truncated to uint8 as the node does."""
    import matplotlib

    cmap = matplotlib.colormaps[MPL_NAMES[name]]
    expected = (cmap(np.arange(256) / 255.0)[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(ops.colormap_lut(name).numpy(), expected)


@pytest.mark.parametrize("name", ["viridis", "greys_r"])
def test_apply_colormap_matches_the_nodes_helper(name):
    """mixlab's ``apply_colormap`` (``(cmap(mask)[:, :, :3] * 255).astype(uint8)`` on the float32 mask) on every
    bin edge ``i / 256`` and its float32 neighbours, out-of-range values and NaN (the node's empty frame)."""
    edges = np.arange(257, dtype=np.float64) / 256
    values = np.concatenate([edges, np.nextafter(edges, -1), np.nextafter(edges, 2), np.arange(256) / 255.0,
                             [0.0, 1.0, -0.25, -1e-9, 1 + 1e-7, 1.5, np.nan]]).astype(np.float32)
    rng = np.random.default_rng(3)
    values = np.concatenate([values, rng.random(4000).astype(np.float32)])
    side = int(np.ceil(np.sqrt(values.size)))
    grid = np.full(side * side, 0.5, np.float32)
    grid[:values.size] = values
    grid = grid.reshape(side, side)
    expected = ref.apply_colormap(torch.from_numpy(grid), getattr(matplotlib_cm, MPL_NAMES[name]))
    got = ops.apply_colormap(torch.from_numpy(grid)[None, None], name)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# cv2.resize(INTER_LINEAR) of uint8 at the sweep's frame sizes, cv2.addWeighted
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dst", [(145, 177), (640, 360), (576, 768), (720, 1280), (151, 201)])
def test_resize_cv2_linear_matches_cv2_at_frame_sizes(dst):
    rng = np.random.default_rng(dst[0])
    for channels in (3, 1):
        img = rng.integers(0, 256, (352, 352, channels), dtype=np.uint8)
        expected = ref.resize_image(img, (dst[1], dst[0])).reshape(*dst, channels)
        got = ops.resize_cv2_linear(torch.from_numpy(img).permute(2, 0, 1)[None], dst)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, expected)


def test_blend_matches_the_nodes_overlay():
    """``overlay_image(frame, heatmap, 0.5)`` (``cv2.addWeighted``) == ``ops.blend`` on every pair of values."""
    a, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    a3, b3 = np.repeat(a[..., None], 3, -1), np.repeat(b[..., None], 3, -1)
    expected = ref.overlay_image(a3, b3, 0.5)
    got = ops.blend(torch.from_numpy(a3).permute(2, 0, 1)[None], torch.from_numpy(b3).permute(2, 0, 1)[None], 0.5)
    np.testing.assert_array_equal(got[0].permute(1, 2, 0).numpy(), expected)


# ---------------------------------------------------------------------------
# CLIPSegProcessor's PIL path (mixlab and essentials hand the frames to it)
# ---------------------------------------------------------------------------
def _pil_processor(model_dir):
    """``CLIPSegProcessor.from_pretrained(dir)`` on its PIL path, chosen the way this transformers chooses it."""
    from transformers import CLIPSegProcessor

    try:
        return CLIPSegProcessor.from_pretrained(model_dir, backend="pil")  # transformers >= 5
    except (TypeError, ValueError):
        return CLIPSegProcessor.from_pretrained(model_dir, use_fast=False)  # transformers 4.x: the slow one is PIL


FRAME_SHAPES = [(145, 177), (640, 360), (576, 768), (720, 1280), (5, 4), (40, 600), (352, 352)]  # not 3 rows: an
# array (3, W, 3) reads as channels-first to transformers


def test_seed_reference_processor_is_the_pil_path(tiny_model_dir):
    """The processor ``seed_reference`` builds by hand is the one transformers returns for its PIL path."""
    pil = _pil_processor(tiny_model_dir)
    built, _ = ref.load_processor_and_model(str(tiny_model_dir))
    assert type(built.image_processor) is type(pil.image_processor)
    assert "pil" in type(pil.image_processor).__name__.lower() or not hasattr(pil.image_processor, "backend")
    img = np.random.default_rng(0).integers(0, 256, (576, 768, 3), dtype=np.uint8)
    a = pil(text="car", images=img, padding="max_length", return_tensors="pt")
    b = built(text="car", images=img, padding="max_length", return_tensors="pt")
    for key in ("pixel_values", "input_ids", "attention_mask"):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("shape", FRAME_SHAPES, ids=[f"{h}x{w}" for h, w in FRAME_SHAPES])
def test_preprocess_matches_clipseg_processor_pil_path(tiny_model, tiny_model_dir, shape):
    """streammask's ``pil`` preprocessing (CPU path) == ``CLIPSegProcessor``'s pixel values, as the nodes call it:
    mixlab with a PIL image, essentials with the uint8 array."""
    from PIL import Image

    processor = _pil_processor(tiny_model_dir)
    rng = np.random.default_rng(shape[0] * shape[1])
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = tiny_model.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], mode="pil")
    for given in (Image.fromarray(img, mode="RGB"), [img]):
        expected = processor(text="car", images=given, padding="max_length", return_tensors="pt")["pixel_values"]
        assert ours.shape == expected.shape
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
