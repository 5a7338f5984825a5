"""streammask.ops against their reference formulas: the in-place colormap / blend are bit-identical to the
plain formulas; the torchvision v2 Gaussian blur is bit-identical to the hand-written copy of torchvision in
``tests/seed_reference.py`` (itself checked against torchvision in ``tests/test_references_torchvision.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streammask import ops

sys.path.insert(0, str(Path(__file__).parent))
import seed_reference as ref  # noqa: E402


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


# ---------------------------------------------------------------------------
# ops.gaussian_blur_torchvision: torchvision v2's gaussian_blur (the essentials node's smooth / blur)
# ---------------------------------------------------------------------------
KERNEL_SIZES = [1, 3, 5, 9, 17, 33, 65]  # the node's smooth 0..32 and blur 0..64, made odd: 1..33 and 1..65


def _masks(gen, shape, densities=(0.01, 0.3, 0.5, 0.7)):
    return [torch.rand(shape, generator=gen) < d for d in densities]


class TestGaussianBlurTorchvision:
    def test_smoke_shape_dtype_device(self):
        for dtype in (torch.bool, torch.uint8, torch.int16, torch.float32, torch.float64):
            x = torch.zeros(2, 3, 11, 7, dtype=dtype)
            y = ops.gaussian_blur_torchvision(x, 5)
            assert y.shape == x.shape and y.dtype == dtype and y.device == x.device

    @pytest.mark.parametrize("bad,err,match", [
        (dict(kernel_size=4), ValueError, "odd and positive"),
        (dict(kernel_size=0), ValueError, "odd and positive"),
        (dict(kernel_size=-3), ValueError, "odd and positive"),
        (dict(kernel_size=3, sigma=0.0), ValueError, "sigma must be > 0"),
        (dict(kernel_size=3, sigma=-1.0), ValueError, "sigma must be > 0"),
    ])
    def test_bad_arguments(self, bad, err, match):
        with pytest.raises(err, match=match):
            ops.gaussian_blur_torchvision(torch.zeros(1, 1, 8, 8), **bad)

    @pytest.mark.parametrize("x,err", [(torch.zeros(8, 8), ValueError), (torch.zeros(1, 8, 8), ValueError),
                                       (np.zeros((1, 1, 8, 8)), TypeError)])
    def test_bad_input(self, x, err):
        with pytest.raises(err):
            ops.gaussian_blur_torchvision(x, 3)

    def test_empty_input(self):
        x = torch.zeros(0, 1, 5, 5, dtype=torch.bool)
        assert ops.gaussian_blur_torchvision(x, 3).shape == x.shape

    def test_default_sigma_is_torchvisions(self):
        """v2's ``ksize * 0.15 + 0.35``, the same float."""
        for k in range(1, 66, 2):
            assert ops.gaussian_kernel_size_sigma(k) == k * 0.15 + 0.35

    @pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
    def test_kernel_matches_copy(self, kernel_size):
        sigma = kernel_size * 0.15 + 0.35
        for dtype in (torch.float32, torch.float64):
            expected = ref._get_gaussian_kernel1d(kernel_size, sigma, dtype, torch.device("cpu"))
            assert torch.equal(ops.gaussian_kernel1d_torchvision(kernel_size, sigma, dtype=dtype), expected)
            assert abs(float(expected.double().sum()) - 1) < 1e-6

    @pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
    def test_bool_mask_matches_copy(self, kernel_size):
        """Bit for bit, as the node calls it: on the ``(B, H, W)`` stack of masks."""
        gen = torch.Generator().manual_seed(kernel_size)
        for shape in ((3, 71, 67), (2, 40, 97)):
            for x in _masks(gen, shape):
                expected = ref.tv_gaussian_blur(x, kernel_size)
                got = ops.gaussian_blur_torchvision(x[:, None], kernel_size)[:, 0]
                assert got.dtype == torch.bool
                assert torch.equal(got, expected), (kernel_size, shape)

    @pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
    def test_uint8_and_float_match_copy(self, kernel_size):
        gen = torch.Generator().manual_seed(100 + kernel_size)
        u8 = torch.randint(0, 256, (2, 3, 69, 73), dtype=torch.uint8, generator=gen)
        assert torch.equal(ops.gaussian_blur_torchvision(u8, kernel_size), ref.tv_gaussian_blur(u8, kernel_size))
        f = torch.rand(2, 3, 69, 73, generator=gen)
        assert torch.equal(ops.gaussian_blur_torchvision(f, kernel_size), ref.tv_gaussian_blur(f, kernel_size))
        f = (torch.rand(2, 1, 69, 73, generator=gen) < 0.5).float()  # the node's blur: a 0/1 float mask
        assert torch.equal(ops.gaussian_blur_torchvision(f, kernel_size), ref.tv_gaussian_blur(f[:, 0], kernel_size)[:, None])

    def test_bool_is_rounded_not_cast(self):
        """v2 rounds (True where the weighted share of True is > 0.5): a majority filter, not a dilation."""
        m = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
        m[..., 4, 4] = True
        assert not ops.gaussian_blur_torchvision(m, 3).any()  # a lone pixel is voted away
        m[..., 3:6, 3:6] = True
        m[..., 4, 4] = False
        assert ops.gaussian_blur_torchvision(m, 3)[0, 0, 4, 4]  # a one-pixel hole is filled
        half = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
        half[..., :, :6] = True
        for k in (3, 9, 11):  # a straight edge stays where it is: the centre column tips the balance
            assert torch.equal(ops.gaussian_blur_torchvision(half, k), half), k
        blurred = ops.gaussian_blur_torchvision(half.float(), 9)[0, 0]
        on = ops.gaussian_blur_torchvision(half, 9)[0, 0]
        assert torch.equal(on, blurred > 0.5)

    def test_uint8_rounds_half_to_even(self):
        """A constant image blurs to itself; the rounding is torch's round (half to even), as ``round_()``."""
        for v in (0, 1, 127, 128, 254, 255):
            x = torch.full((1, 1, 7, 7), v, dtype=torch.uint8)
            assert torch.equal(ops.gaussian_blur_torchvision(x, 5), x)

    def test_radius_beyond_the_image_repeats_the_reflection(self):
        """torchvision refuses a padding >= H or W; the op reflects again (numpy's ``reflect``, edge not repeated)."""
        gen = torch.Generator().manual_seed(7)
        x = torch.rand(2, 1, 6, 9, generator=gen)
        k = 21
        sigma = ops.gaussian_kernel_size_sigma(k)
        k1 = ops.gaussian_kernel1d_torchvision(k, sigma, dtype=torch.float64).numpy()
        padded = np.pad(x.double().numpy(), ((0, 0), (0, 0), (10, 10), (10, 10)), mode="reflect")
        expected = np.zeros(x.shape)
        for i in range(k):
            for j in range(k):
                expected += k1[i] * k1[j] * padded[..., i:i + 6, j:j + 9]
        np.testing.assert_allclose(ops.gaussian_blur_torchvision(x, k).numpy(), expected, rtol=0, atol=1e-6)

    @pytest.mark.needs_cuda
    @pytest.mark.parametrize("kernel_size", [3, 9, 33, 65])
    def test_cuda_matches_cpu(self, kernel_size):
        """CUDA runs the filter in float64 (no TF32): floats agree to float32 noise, bool masks on all but
        the rare pixels whose share is within float32 rounding of 0.5."""
        gen = torch.Generator().manual_seed(kernel_size)
        f = torch.rand(4, 1, 352, 352, generator=gen)
        torch.testing.assert_close(ops.gaussian_blur_torchvision(f.cuda(), kernel_size).cpu(),
                                   ops.gaussian_blur_torchvision(f, kernel_size), rtol=0, atol=1e-6)
        for x in _masks(gen, (4, 1, 352, 352)):
            cpu = ops.gaussian_blur_torchvision(x, kernel_size)
            gpu = ops.gaussian_blur_torchvision(x.cuda(), kernel_size).cpu()
            assert gpu.dtype == torch.bool
            assert float((cpu == gpu).double().mean()) >= 0.99999
