"""streammask.refine: the matte refinement and edge-control operators (one class per operator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streammask import refine
from streammask.errors import ParameterError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _frames(b=2, h=36, w=52, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


class TestBoxMean:
    def test_smoke_and_value(self):
        x = torch.arange(25.0).view(1, 1, 5, 5)
        y = refine.box_mean(x, 1)
        assert y.shape == x.shape and y[0, 0, 2, 2].item() == pytest.approx(12.0)
        assert refine.box_mean(x, 0) is x

    def test_opencv_path_equals_torch_path(self):
        x = _rand(2, 3, 31, 40)  # float32 on the CPU: OpenCV; float64: torch
        for r in (1, 3, 7):
            assert torch.allclose(refine.box_mean(x, r), refine.box_mean(x.double(), r).float(), atol=1e-6)

    def test_matches_kornia(self):
        kornia = pytest.importorskip("kornia")
        x = _rand(2, 2, 23, 29)
        for r in (1, 4):
            ref = kornia.filters.box_blur(x, 2 * r + 1, "reflect")
            assert torch.allclose(refine.box_mean(x, r), ref, atol=1e-6)

    def test_radius_larger_than_image(self):
        x = _rand(1, 1, 3, 4)
        y = refine.box_mean(x, 5)  # the reflection repeats: no error, finite values
        assert y.shape == x.shape and torch.isfinite(y).all()

    @pytest.mark.parametrize("bad, err", [((torch.rand(3, 4), 1), ValueError), ((torch.rand(1, 1, 4, 4), -1), ValueError),
                                          ((torch.rand(1, 1, 4, 4), 1.5), ValueError),
                                          ((torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 1), TypeError)])
    def test_exceptions(self, bad, err):
        with pytest.raises(err):
            refine.box_mean(*bad)


class TestGuidedFilter:
    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("radius, subsample", [(2, 1), (4, 1), (4, 2), (8, 4)])
    def test_matches_kornia(self, channels, radius, subsample):
        kornia = pytest.importorskip("kornia")
        g = _rand(2, channels, 37, 53, seed=1)
        p = _rand(2, 1, 37, 53, seed=2)
        ref = kornia.filters.guided_blur(g, p, 2 * radius + 1, 1e-2, subsample=subsample)
        assert torch.allclose(refine.guided_filter(g, p, radius, 1e-2, subsample=subsample), ref, atol=1e-5)
        # the torch path (float64 on the CPU: what CUDA runs) gives the same
        out64 = refine.guided_filter(g.double(), p.double(), radius, 1e-2, subsample=subsample)
        assert out64.dtype == torch.float64 and torch.allclose(out64.float(), ref, atol=1e-5)

    def test_uint8_guide_is_the_guide_over_255(self):
        f = _frames()
        p = _rand(2, 1, 36, 52, seed=3)
        a = refine.guided_filter(f, p, 3, 1e-3, subsample=2)
        b = refine.guided_filter(f.float() / 255, p, 3, 1e-3, subsample=2)
        assert torch.allclose(a, b, atol=1e-5)

    def test_several_src_channels(self):
        g = _rand(1, 3, 20, 24)
        p = _rand(1, 2, 20, 24, seed=5)
        both = refine.guided_filter(g, p, 2, 1e-3)
        assert both.shape == (1, 2, 20, 24)
        assert torch.allclose(both[:, 1:], refine.guided_filter(g, p[:, 1:], 2, 1e-3), atol=1e-6)

    def test_follows_the_guide_edge(self):
        # a blurry ramp across a sharp edge of the guide becomes a step at the guide's edge
        g = torch.zeros(1, 1, 16, 64)
        g[..., 30:] = 1.0
        ramp = torch.linspace(-1, 2, 64).clamp(0, 1).view(1, 1, 1, 64).expand(1, 1, 16, 64).contiguous()
        q = refine.guided_filter(g, ramp, 8, 1e-4)
        row = q[0, 0, 8]
        assert row[:29].max() < 0.5 < row[31:].min()
        assert (row[31] - row[28]) > (ramp[0, 0, 8, 31] - ramp[0, 0, 8, 28]) * 2

    def test_batch_equals_frame_by_frame(self):
        f = _frames(3)
        p = _rand(3, 1, 36, 52, seed=4)
        whole = refine.guided_filter(f, p, 5, 1e-4, subsample=2)
        one = torch.cat([refine.guided_filter(f[i:i + 1], p[i:i + 1], 5, 1e-4, subsample=2) for i in range(3)])
        assert torch.equal(whole, one)

    def test_module_equals_function(self):
        g, p = _rand(1, 3, 20, 20), _rand(1, 1, 20, 20, seed=1)
        m = refine.GuidedFilter(3, 1e-3, subsample=2)
        assert "radius=3" in repr(m)
        assert torch.equal(m(g, p), refine.guided_filter(g, p, 3, 1e-3, subsample=2))

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_dtype_device(self, device, dtype):
        g = _rand(1, 3, 24, 24).to(device, dtype)
        p = _rand(1, 1, 24, 24, seed=1).to(device, dtype)
        out = refine.guided_filter(g, p, 3, 1e-3, subsample=2)
        assert out.dtype == dtype and out.device.type == device

    @pytest.mark.parametrize("kwargs, err, text", [
        (dict(guide=torch.rand(1, 2, 8, 8)), ValueError, "1 or 3 channels"),
        (dict(guide=torch.rand(1, 3, 8, 9)), ValueError, "same batch and size"),
        (dict(radius=0), ValueError, "radius"),
        (dict(radius=1.5), ValueError, "radius"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(subsample=0), ValueError, "subsample"),
        (dict(subsample=True), ValueError, "subsample"),
        (dict(guide=torch.zeros(1, 3, 8, 8, dtype=torch.int32)), TypeError, "guide"),
        (dict(src=torch.rand(8, 8)), ValueError, "src"),
        (dict(guide=torch.rand(1, 3, 8, 8, device="meta")), ValueError, "same device"),
    ])
    def test_exceptions(self, kwargs, err, text):
        args = dict(guide=torch.rand(1, 3, 8, 8), src=torch.rand(1, 1, 8, 8), radius=2, eps=1e-3, subsample=1)
        args.update(kwargs)
        with pytest.raises(err, match=text):
            refine.guided_filter(args["guide"], args["src"], args["radius"], args["eps"], subsample=args["subsample"])


class TestSharpenAlpha:
    def test_values(self):
        x = torch.tensor([0.0, 0.3, 0.5, 0.6, 1.0]).view(1, 1, 1, 5)
        assert refine.sharpen_alpha(x, 2.0).flatten().tolist() == pytest.approx([0.0, 0.1, 0.5, 0.7, 1.0])
        assert torch.equal(refine.sharpen_alpha(x * 3 - 1, 1.0), (x * 3 - 1).clamp(0, 1))

    def test_exceptions(self):
        with pytest.raises(ValueError, match="gain"):
            refine.sharpen_alpha(torch.rand(1, 1, 2, 2), 0.5)


class TestChoke:
    def test_cardinality_and_direction(self):
        a = torch.zeros(1, 1, 21, 21)
        a[..., 5:16, 5:16] = 1.0
        assert refine.choke(a, 0) is a
        assert refine.choke(a, 2).sum() < a.sum() < refine.choke(a, -2).sum()
        # an integer choke of a hard square moves each straight side by that many pixels
        assert refine.choke(a, 2)[0, 0, 10].sum().item() == 7
        assert refine.choke(a, -3)[0, 0, 10].sum().item() == 17

    def test_fraction_is_continuous(self):
        a = torch.zeros(1, 1, 15, 15)
        a[..., 4:11, 4:11] = 1.0
        s1, s15, s2 = (refine.choke(a, v).sum().item() for v in (1.0, 1.5, 2.0))
        assert s1 > s15 > s2
        assert s15 == pytest.approx((s1 + s2) / 2)

    def test_opencv_path_equals_torch_path(self):
        a = _rand(2, 1, 30, 33)
        for px in (1, 2.5, -3, -0.5):
            assert torch.allclose(refine.choke(a, px), refine.choke(a.double(), px).float(), atol=1e-6)

    @pytest.mark.parametrize("device", DEVICES)
    def test_device(self, device):
        out = refine.choke(_rand(1, 1, 9, 9).to(device), 1.5)
        assert out.device.type == device

    def test_exceptions(self):
        with pytest.raises(ValueError, match="finite"):
            refine.choke(torch.rand(1, 1, 4, 4), float("nan"))
        with pytest.raises(ValueError):
            refine.choke(torch.rand(4, 4), 1)


class TestFeather:
    def test_matches_scipy(self):
        ndimage = pytest.importorskip("scipy.ndimage")
        a = _rand(1, 1, 40, 50)
        for sigma in (0.7, 2.0, 4.5):
            ref = ndimage.gaussian_filter(a[0, 0].double().numpy(), sigma, mode="reflect")
            assert np.allclose(refine.feather(a, sigma)[0, 0].numpy(), ref, atol=1e-5)  # OpenCV path
            assert np.allclose(refine.feather(a.double(), sigma)[0, 0].numpy(), ref, atol=1e-6)  # torch path

    def test_zero_and_exceptions(self):
        a = _rand(1, 1, 8, 8)
        assert refine.feather(a, 0) is a
        with pytest.raises(ValueError, match="sigma"):
            refine.feather(a, -1)


class TestClipLevels:
    def test_values(self):
        x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).view(1, 1, 1, 5)
        assert refine.clip_levels(x, 0.1, 0.9).flatten().tolist() == pytest.approx([0, 0, 0.5, 1, 1])

    @pytest.mark.parametrize("black, white", [(0.5, 0.5), (0.6, 0.4), (-0.1, 1.0), (0.0, 1.2)])
    def test_exceptions(self, black, white):
        with pytest.raises(ValueError, match="black"):
            refine.clip_levels(torch.rand(1, 1, 2, 2), black, white)


class TestRefineAlpha:
    def test_smoke_and_range(self):
        f = _frames()
        out = refine.refine_alpha(f, _rand(2, 1, 36, 52))
        assert out.shape == (2, 1, 36, 52) and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    def test_batch_equals_frame_by_frame(self):
        f = _frames(3, 72, 96)
        a = _rand(3, 1, 72, 96, seed=2)
        whole = refine.refine_alpha(f, a)
        assert torch.equal(whole, torch.cat([refine.refine_alpha(f[i:i + 1], a[i:i + 1]) for i in range(3)]))

    def test_radius_scales_with_the_frame(self):
        assert refine.auto_subsample(24) == 6 and refine.auto_subsample(2) == 1 and refine.auto_subsample(400) == 16

    @pytest.mark.parametrize("frames, alpha, text", [
        (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.rand(1, 1, 8, 8), "frames must be"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.rand(1, 2, 8, 8), "alpha"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.rand(1, 1, 8, 8), "same batch"),
    ])
    def test_exceptions(self, frames, alpha, text):
        with pytest.raises(ValueError, match=text):
            refine.refine_alpha(frames, alpha)


class TestMatteRefiner:
    def test_inactive_by_default(self):
        m = refine.MatteRefiner()
        assert not m.active
        a = _rand(1, 1, 8, 8)
        assert m(_frames(1, 8, 8), a) is a

    def test_module_equals_functions(self):
        f, a = _frames(2, 40, 60), _rand(2, 1, 40, 60, seed=9)
        m = refine.MatteRefiner(refine="guided", refine_radius=4, refine_eps=1e-4, refine_sharpen=3, choke=1.5,
                                feather=1.0, clip_black=0.05, clip_white=0.9)
        assert m.active and "choke=1.5" in repr(m)
        want = refine.refine_alpha(f, a, radius=4, eps=1e-4, sharpen=3)
        want = refine.feather(refine.choke(refine.clip_levels(want, 0.05, 0.9), 1.5), 1.0)
        assert torch.equal(m(f, a), want)

    def test_from_settings_ignores_other_keys(self):
        m = refine.MatteRefiner.from_settings({"refine": "guided", "prompt": "x", "choke": -2})
        assert m.settings["refine"] == "guided" and m.settings["choke"] == -2

    @pytest.mark.parametrize("settings, name", [
        ({"refine": "magic"}, "refine"), ({"refine_radius": 0}, "refine_radius"), ({"refine_eps": 0}, "refine_eps"),
        ({"refine_sharpen": 0.5}, "refine_sharpen"), ({"choke": 500}, "choke"), ({"feather": -1}, "feather"),
        ({"clip_black": 0.6, "clip_white": 0.4}, "clip_white"), ({"clip_white": 1.5}, "clip_white"),
    ])
    def test_errors_name_the_parameter(self, settings, name):
        with pytest.raises(ParameterError, match=name) as exc:
            refine.MatteRefiner(**settings)
        assert isinstance(exc.value, ValueError)


@pytest.mark.needs_cuda
def test_cuda_refinement_matches_the_cpu():
    """The CUDA path (torch box means, bilinear upsampling on the device) gives the CPU's (OpenCV) result."""
    f, a = _frames(2, 72, 128, seed=4), _rand(2, 1, 72, 128, seed=5)
    m = refine.MatteRefiner(refine="guided", choke=1.5, feather=1.0, clip_black=0.05)
    cpu = m(f, a)
    gpu = m(f.cuda(), a.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
