"""Temporal smoothing: the state-object protocol, scene cuts, delays and the quality targets on oracle clips."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from oracle import OracleSegmenter, make_clip, run_smoother, score
from streammask.errors import ParameterError, StreamMaskError
from streammask.temporal import (
    LOGIT_EPS,
    METHOD_PARAMS,
    TEMPORAL_METHODS,
    TEMPORAL_PARAMS,
    EmaSmoother,
    FlowSmoother,
    HysteresisSmoother,
    IdentitySmoother,
    MeanSmoother,
    MedianSmoother,
    SceneCutDetector,
    make_temporal,
    warp,
)

S = 64  # model side for the protocol tests (the smoothers work at any side)

# Every method, plus the non-default shapes of the windowed ones.
CONFIGS = [
    ("none", {}),
    ("ema", {"ema_alpha": 0.4}),
    ("median", {"window": 5}),
    ("mean", {"window": 4}),
    ("median", {"window": 3, "window_align": "trailing"}),
    ("hysteresis", {}),
    ("flow", {}),
    ("flow", {"flow_algorithm": "farneback", "flow_side": 48}),
]
IDS = [name + "".join(f"-{v}" for v in p.values()) for name, p in CONFIGS]


@pytest.fixture(scope="module")
def cut_clip():
    """20 frames, a cut at frame 10, with the oracle's noisy logits at side S."""
    clip = make_clip("cut", length=20, size=(48, 64), seed=3)
    oracle = OracleSegmenter(clip, size=S, seed=3)
    return clip, oracle.segment(clip.frames_bchw(), ["object", "thing"])


def _chunks(sizes, total):
    out, start = [], 0
    for n in sizes:
        out.append((start, min(start + n, total)))
        start += n
    assert start >= total
    return [c for c in out if c[0] < c[1]]


def _run(smoother, logits, frames, chunks, *, hand_over=None):
    """Feed chunks; optionally hand the state to a fresh smoother (through torch.save) between chunks."""
    outs, fouts, pays = [], [], []
    for a, b in chunks:
        lg, fr, pl = smoother.update(logits[a:b], frames[a:b], [(i, 1001 * i) for i in range(a, b)])
        outs.append(lg), fouts.append(fr), pays.extend(pl)
        if hand_over is not None:
            buf = io.BytesIO()
            torch.save(smoother.state_dict(), buf)
            buf.seek(0)
            smoother = hand_over()
            smoother.load_state_dict(torch.load(buf, weights_only=False))
    lg, fr, pl = smoother.flush()
    outs.append(lg), fouts.append(fr), pays.extend(pl)
    return torch.cat(outs), torch.cat(fouts), pays


class TestProtocol:
    @pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
    def test_chunked_equals_one_pass(self, cut_clip, name, params):
        clip, logits = cut_clip
        frames = clip.frames_bchw()
        n = len(clip)
        ref = _run(make_temporal(name, **params), logits, frames, [(0, n)])
        for sizes in ([1] * n, [3, 7, 1, 6, 3]):
            got = _run(make_temporal(name, **params), logits, frames, _chunks(sizes, n))
            assert torch.equal(got[0], ref[0]), sizes
            assert torch.equal(got[1], ref[1]) and got[2] == ref[2]
        handed = _run(make_temporal(name, **params), logits, frames, _chunks([4, 5, 2, 9], n),
                      hand_over=lambda: make_temporal(name, **params))
        assert torch.equal(handed[0], ref[0]) and handed[2] == ref[2]

    @pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
    def test_every_frame_once_in_order_with_its_payload(self, cut_clip, name, params):
        clip, logits = cut_clip
        frames = clip.frames_bchw()
        sm = make_temporal(name, **params)
        lg, fr, pl = _run(sm, logits, frames, _chunks([2, 3, 8, 7], len(clip)))
        assert [p[0] for p in pl] == list(range(len(clip)))
        assert [p[1] for p in pl] == [1001 * i for i in range(len(clip))]
        assert torch.equal(fr, frames)
        assert lg.shape == logits.shape and lg.dtype == torch.float32

    @pytest.mark.parametrize(("window", "align", "delay"), [(5, "centered", 2), (4, "centered", 2), (1, "centered", 0),
                                                             (5, "trailing", 0)])
    def test_delay(self, cut_clip, window, align, delay):
        clip, logits = cut_clip
        frames = clip.frames_bchw()
        sm = MedianSmoother(window=window, align=align)
        assert sm.delay == delay and sm.causal == (delay == 0)
        returned = []
        for a in range(0, 9, 3):  # batches of 3
            lg, fr, pl = sm.update(logits[a:a + 3], frames[a:a + 3], list(range(a, a + 3)))
            assert len(lg) == len(fr) == len(pl)
            returned += pl
            assert returned == list(range(a + 3 - delay))  # held back exactly `delay` frames
        _, _, pl = sm.flush()
        assert returned + pl == list(range(9))
        assert sm.flush()[2] == []  # flush ends the stream

    def test_empty_outputs_keep_shapes(self, cut_clip):
        clip, logits = cut_clip
        sm = MeanSmoother(window=7)
        lg, fr, pl = sm.update(logits[:2], clip.frames_bchw()[:2], [0, 1])
        assert lg.shape == (0, 2, S, S) and fr.shape == (0, 3, 48, 64) and fr.dtype == torch.uint8 and pl == []
        assert len(MeanSmoother().flush()[2]) == 0

    def test_none_is_untouched(self, cut_clip):
        clip, logits = cut_clip
        sm = make_temporal("none")
        out = sm.update(logits, clip.frames_bchw(), list(range(len(clip))))
        assert out[0] is logits and isinstance(sm, IdentitySmoother) and sm.causal and sm.delay == 0

    def test_reset_forgets(self, cut_clip):
        clip, logits = cut_clip
        frames = clip.frames_bchw()
        a = EmaSmoother(alpha=0.3)
        a.update(logits[:5], frames[:5], list(range(5)))
        a.reset()
        fresh = EmaSmoother(alpha=0.3)
        assert torch.equal(a.update(logits[5:9], frames[5:9], [0] * 4)[0], fresh.update(logits[5:9], frames[5:9], [0] * 4)[0])

    def test_output_is_logits_of_smoothed_probabilities(self, cut_clip):
        clip, logits = cut_clip
        frames = clip.frames_bchw()
        out = EmaSmoother(alpha=0.25, cut_threshold=1.0).update(logits[:2], frames[:2], [0, 1])[0]
        p = torch.sigmoid(logits[:2])
        expect = torch.logit(torch.stack([p[0], 0.25 * p[1] + 0.75 * p[0]]), eps=LOGIT_EPS)
        torch.testing.assert_close(out, expect, atol=1e-4, rtol=1e-5)
        assert out.abs().max() <= torch.logit(torch.tensor(1 - LOGIT_EPS)) + 1e-4

    def test_hysteresis_is_binary_and_sticky(self):
        frames = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
        p = torch.tensor([0.55, 0.65, 0.45, 0.35]).view(4, 1, 1, 1).expand(4, 1, 4, 4)
        out = HysteresisSmoother(on=0.6, off=0.4).update(torch.logit(p), frames, [0, 1, 2, 3])[0]
        assert torch.sigmoid(out)[:, 0, 0, 0].round().tolist() == [1.0, 1.0, 1.0, 0.0]  # 0.45 stays on, 0.35 turns off


class TestSceneCuts:
    def test_detector_flags_the_cut_only(self, cut_clip):
        clip, _ = cut_clip
        det = SceneCutDetector()
        flags = det.update(clip.frames_bchw())
        assert flags == [True] + [bool(c) for c in clip.cuts[1:]]

    @pytest.mark.parametrize(("name", "params"), [c for c in CONFIGS if c[0] != "none"], ids=IDS[1:])
    def test_no_bleed_across_a_cut(self, cut_clip, name, params):
        clip, _ = cut_clip
        frames = clip.frames_bchw()
        cut = int(np.flatnonzero(clip.cuts)[0])
        logits = torch.full((len(clip), 1, S, S), 5.0)
        logits[cut:] = -5.0  # object everywhere before the cut, nothing after
        out, _, _ = _run(make_temporal(name, **params), logits, frames, _chunks([6, 6, 8], len(clip)))
        if name == "hysteresis":
            expect = torch.logit(torch.tensor([1.0, 0.0]), eps=LOGIT_EPS)
        else:
            expect = torch.logit(torch.sigmoid(torch.tensor([5.0, -5.0])), eps=LOGIT_EPS)
        assert torch.allclose(out[:cut], expect[0], atol=1e-4)
        assert torch.allclose(out[cut:], expect[1], atol=1e-4)

    def test_without_cut_detection_the_state_bleeds(self, cut_clip):
        """The check above is sensitive: with detection off, the EMA carries scene A into scene B."""
        clip, _ = cut_clip
        cut = int(np.flatnonzero(clip.cuts)[0])
        logits = torch.full((len(clip), 1, S, S), 5.0)
        logits[cut:] = -5.0
        out, _, _ = _run(make_temporal("ema", cut_threshold=1.0), logits, clip.frames_bchw(), [(0, len(clip))])
        assert out[cut].mean() > -1  # half of +5 and half of -5, instead of -5


class TestParams:
    def test_declarations(self):
        assert TEMPORAL_PARAMS["temporal"].choices == TEMPORAL_METHODS and TEMPORAL_PARAMS["temporal"].default == "none"
        for key in ("ema_alpha", "window", "hysteresis_on", "hysteresis_off", "flow_strength", "cut_threshold"):
            assert key in TEMPORAL_PARAMS
        used = {k for keys in METHOD_PARAMS.values() for k in keys}
        assert used | {"temporal"} == set(TEMPORAL_PARAMS.names())
        assert set(METHOD_PARAMS) == set(TEMPORAL_METHODS)

    @pytest.mark.parametrize("name", TEMPORAL_METHODS)
    def test_factory_takes_the_whole_validated_set(self, name):
        values = TEMPORAL_PARAMS.validate({"temporal": name})
        sm = make_temporal(values.pop("temporal"), **values)
        assert sm.method == name

    @pytest.mark.parametrize(("name", "params", "match"), [
        ("blur", {}, "temporal='blur'"),
        ("ema", {"ema_alpha": 0.0}, "ema_alpha=0.0"),
        ("ema", {"alpha": 0.5}, "alpha=0.5"),
        ("median", {"window": 0}, "window=0"),
        ("median", {"window_align": "left"}, "window_align='left'"),
        ("hysteresis", {"hysteresis_on": 0.3, "hysteresis_off": 0.5}, "hysteresis_off=0.5"),
        ("flow", {"flow_algorithm": "raft"}, "flow_algorithm='raft'"),
        ("flow", {"flow_strength": 1.0}, "flow_strength=1.0"),
        ("flow", {"temporal": "ema"}, "temporal='flow'"),
    ])
    def test_bad_values(self, name, params, match):
        with pytest.raises(ParameterError, match=match) as info:
            make_temporal(name, **params)
        assert isinstance(info.value, (StreamMaskError, ValueError))

    @pytest.mark.parametrize(("logits", "frames", "payload", "error"), [
        (torch.zeros(2, 1, 8), torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], ValueError),
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [0, 1], ValueError),
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, 8, 8), [0, 1], TypeError),
        (torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], TypeError),
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0], ValueError),
        (np.zeros((2, 1, 8, 8)), torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], TypeError),
    ])
    def test_bad_batches(self, logits, frames, payload, error):
        with pytest.raises(error):
            EmaSmoother().update(logits, frames, payload)

    def test_state_of_another_method_is_refused(self):
        with pytest.raises(ParameterError, match="state"):
            EmaSmoother().load_state_dict(FlowSmoother().state_dict())


class TestWarp:
    def test_shift(self):
        x = torch.zeros(1, 1, 16, 16)
        x[..., 4:8, 4:8] = 1
        flow = torch.zeros(1, 2, 16, 16)
        flow[:, 0] = -3 * 2 / 16  # out(x) = in(x - 3): content moves 3 px right
        y = warp(x, flow)
        assert torch.equal(y[0, 0, 5].nonzero().flatten(), torch.arange(7, 11))

    def test_flow_follows_a_translation(self):
        """The motion field of a pure pan is the pan, and the warp is trusted there."""
        clip = make_clip("pan", length=3, size=(96, 128), seed=0)
        sm = FlowSmoother()
        small = clip.frames[:2]
        field = sm.motion(small[1], small[0])
        dx = np.median(field[0]) * 128 / 2  # back to pixels
        assert dx == pytest.approx(1.5 * 1.28, abs=0.3)  # the pan moves 1.5 % of the width per frame
        assert np.median(field[2]) > 0.8


@pytest.mark.needs_cuda
@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_cuda_matches_cpu(cut_clip, name, params):
    clip, logits = cut_clip
    frames = clip.frames_bchw()
    cpu = _run(make_temporal(name, **params), logits, frames, [(0, 8), (8, 20)])
    gpu = _run(make_temporal(name, **params), logits.cuda(), frames.cuda(), [(0, 8), (8, 20)])
    assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
    # the small frames for the flow are area-averaged on the GPU: a rounding step may differ
    close = (gpu[0].cpu() - cpu[0]).abs() < 1e-3
    assert close.float().mean() > 0.99
    assert gpu[2] == cpu[2]


@pytest.fixture(scope="module")
def quality():
    """Mean IoU / flicker / lag of none, ema and flow over three small oracle clips."""
    clips = [make_clip(k, length=32, size=(96, 128), seed=0) for k in ("moving", "turning", "cut")]
    oracle = OracleSegmenter(clips, size=128, seed=0)
    out = {}
    for name in ("none", "ema", "flow"):
        scores = []
        for c, clip in enumerate(clips):
            logits = run_smoother(make_temporal(name), oracle, clip, batch_size=8)
            scores.append(score((logits[:, 0] > 0).numpy(), oracle.truth(c), clip.cuts))
        out[name] = {k: float(np.mean([getattr(s, k) for s in scores])) for k in ("iou", "flicker", "lag")}
    return out


class TestQuality:
    """The issue's targets, on a small oracle benchmark (three clips, 32 frames, side 128).

    ``benchmarks/temporal_quality.py`` runs the full-size version; the numbers here
    are the same kind, with margins (the measured values are in the comments).
    """

    def test_flow_cuts_flicker_by_60_percent(self, quality):
        # measured: none 1.06 %, flow 0.33 % (-68 %)
        assert quality["flow"]["flicker"] <= 0.4 * quality["none"]["flicker"]

    def test_flow_keeps_iou(self, quality):
        # measured: none 87.9, flow 94.1
        assert quality["flow"]["iou"] >= quality["none"]["iou"] - 1.0

    def test_flow_does_not_trail(self, quality):
        # measured: flow 0.15 frames, ema 0.56, none -0.02
        assert quality["flow"]["lag"] <= 0.5
        assert abs(quality["none"]["lag"]) <= 0.1  # the estimator reads ~0 on unsmoothed masks
        assert quality["ema"]["lag"] >= quality["flow"]["lag"] + 0.2
