"""The in-place colormap / blend of streammask.ops are bit-identical to their reference formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streammask import ops


def _reference_blend(a, b, alpha):
    return ops.to_uint8(a.float() * (1.0 - alpha) + b.float() * alpha, 1.0)


def _reference_colormap(x, name):
    lut = ops.colormap_lut(name, x.device)
    xf = x[:, 0].float()
    nan = torch.isnan(xf)
    idx = torch.nan_to_num(xf * 256.0, nan=0.0).floor().clamp_(0, 255).long()
    rgb = torch.where(nan[..., None], torch.zeros((), dtype=torch.uint8), lut[idx])
    return rgb.permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.3, 0.5, 0.7, 1.0])
def test_blend_matches_reference_and_cv2(alpha):
    import cv2

    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (2, 3, 17, 23), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (2, 3, 17, 23), dtype=torch.uint8, generator=g)
    a0, b0 = a.clone(), b.clone()
    out = ops.blend(a, b, alpha)
    assert torch.equal(out, _reference_blend(a, b, alpha))
    assert torch.equal(a, a0) and torch.equal(b, b0)  # inputs untouched
    an = a[0].permute(1, 2, 0).numpy()
    bn = b[0].permute(1, 2, 0).numpy()
    cv = cv2.addWeighted(an, 1.0 - alpha, bn, alpha, 0)
    assert np.abs(out[0].permute(1, 2, 0).numpy().astype(int) - cv.astype(int)).max() <= 1


def test_blend_leaves_float_inputs_alone():
    a = torch.full((1, 3, 2, 2), 10.0)
    b = torch.full((1, 3, 2, 2), 20.0)
    ops.blend(a, b, 0.5)
    assert torch.equal(a, torch.full((1, 3, 2, 2), 10.0)) and torch.equal(b, torch.full((1, 3, 2, 2), 20.0))


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("name", ["jet", "viridis"])
def test_colormap_matches_reference(name, with_nan):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 19, 21, generator=g) * 1.2 - 0.1  # also out of [0, 1]
    x[0, 0, 0, 0], x[1, 0, 5, 5] = 0.0, 1.0
    if with_nan:
        x[0, 0, 3, :4] = float("nan")
    out = ops.apply_colormap(x, name)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 19, 21)
    assert torch.equal(out, _reference_colormap(x, name))
    if with_nan:
        assert int(out[0, :, 3, :4].max()) == 0
