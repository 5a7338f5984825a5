"""Where features meet: segment-split runs (process_segments, batch) against one pass, with audio,
background videos, --stride / --skip-static, 16-bit mattes, the automatic batch size, re-runs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streammask import process_video
from streammask.batch.segments import SEGMENTS_DIR, process_segments

from conftest import encode_frames
from sources import audio_span, make_source

NTSC = Fraction(30000, 1001)
FRAMES = 24
RANGES = [(0, 8), (8, 16), (16, 24)]


def _kw(model, **extra):
    return dict(prompt="person", segmenter=model, progress=False, **extra)


def _decode(path: Path, fmt: str = "rgb24") -> tuple[list[int], np.ndarray]:
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format=fmt)) for f in c.decode(video=0)]
    return [p for p, _ in frames], np.stack([a for _, a in frames])


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> Path:
    """24 frames of 30000/1001 with a keyframe every 8 frames and an AAC tone as long as the video."""
    return make_source(tmp_path_factory.mktemp("talk") / "talk.mp4", pts=[i * 1001 for i in range(FRAMES)], audio=True)


# -- 1. segments x audio ---------------------------------------------------------------------------------------------

def test_segment_join_has_the_source_audio_once_like_one_pass(talk, tiny_model, tmp_path):
    one = process_video(talk, out_dir=tmp_path / "one", outputs=["heatmap", "matte"], **_kw(tiny_model, batch_size=4))
    seg = process_segments(talk, RANGES, out_dir=tmp_path / "seg", outputs=["heatmap", "matte"],
                           **_kw(tiny_model, batch_size=4))
    _, src_first, src_end, src_n = audio_span(talk)
    for key in ("soft.heatmap", "soft.matte"):
        _, first, end, n = audio_span(seg.outputs[key])
        _, one_first, one_end, one_n = audio_span(one.outputs[key])
        assert n == one_n == src_n, key  # once, not once per segment
        assert abs(first - one_first) < 1e-3 and abs(end - one_end) < 1024 / 44100, key
        with av.open(str(one.outputs[key])) as a, av.open(str(seg.outputs[key])) as b:  # the same bytes, the same times
            pa = [(p.pts, bytes(p)) for p in a.demux(audio=0) if p.size]
            pb = [(p.pts, bytes(p)) for p in b.demux(audio=0) if p.size]
        assert pa == pb, key
        assert _decode(seg.outputs[key])[0] == _decode(one.outputs[key])[0]


# -- 2. segments x matte_style=background with a background video --------------------------------------------------

def _sequence_frames(folder: Path) -> np.ndarray:
    import cv2

    files = sorted(folder.glob("*.png"))
    return np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files])


def test_background_video_is_at_the_clips_frame_in_every_segment(talk, tiny_model, tmp_path):
    bg = make_source(tmp_path / "bg.mp4", pts=[i * 1001 for i in range(10)])  # shorter than the clip: it loops
    kw = _kw(tiny_model, batch_size=4, outputs=["matte"], matte_format="png", matte_style="background", background=bg)
    one = _sequence_frames(process_video(talk, out_dir=tmp_path / "one", **kw).outputs["soft.matte"])
    seg = _sequence_frames(process_segments(talk, RANGES, out_dir=tmp_path / "seg", **kw).outputs["soft.matte"])
    assert one.shape == seg.shape == (FRAMES, 48, 64, 3)
    np.testing.assert_array_equal(seg, one)


def test_background_take_by_index_equals_playing_it_in_order(tmp_path):
    from streammask.io.matte import Background

    bg = make_source(tmp_path / "bg.mp4", pts=[i * 1001 for i in range(10)])
    in_order = Background(bg, width=32, height=24).take(25)  # plays 10 frames, then starts again
    by_index = Background(bg, width=32, height=24)
    got = np.concatenate([by_index.take(3, indices=[17, 18, 19]), by_index.take(2, indices=[3, 4]),
                          by_index.take(3, indices=[9, 10, 11])])
    np.testing.assert_array_equal(got, in_order[[17, 18, 19, 3, 4, 9, 10, 11]])
    np.testing.assert_array_equal(in_order[10:20], in_order[:10])


# -- 3. segments x --stride / --skip-static ---------------------------------------------------------------------------

ODD = [(0, 7), (7, 15), (15, 24)]  # not multiples of the stride: the phase must be handed over


@pytest.mark.parametrize("reduce", [
    {"stride": 2},
    {"stride": 3},
    {"skip_static": True, "static_psnr": 20.0},  # the moving square is "static" at 20 dB part of the time
    {"stride": 2, "skip_static": True, "static_psnr": 20.0},
], ids=["stride2", "stride3", "skip-static", "stride2+skip-static"])
def test_reduced_work_segments_equal_one_pass(talk, tiny_model, tmp_path, reduce):
    kw = _kw(tiny_model, batch_size=1, outputs=["mask"], mask_format="png", **reduce)
    one = process_video(talk, out_dir=tmp_path / "one", **kw)
    seg = process_segments(talk, ODD, out_dir=tmp_path / "seg", **kw)
    a, b = _sequence_frames(one.outputs["soft.mask"]), _sequence_frames(seg.outputs["soft.mask"])
    assert a.shape == b.shape == (FRAMES, 48, 64)
    assert one.model_frames < FRAMES  # the reduction really skipped frames
    assert seg.model_frames == one.model_frames  # handed over: no warm-up, the same key frames
    np.testing.assert_array_equal(b, a)


def test_reducer_state_round_trip_continues_the_stream():
    import torch

    from streammask.temporal.keyframes import WorkReducer

    frames = torch.from_numpy(np.stack([np.roll(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3), i, 1)
                                        for i in range(9)])).permute(0, 3, 1, 2).contiguous()

    def infer(f):
        return {("pil", 8): f.float().mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, 8, 8) / 255}

    whole = WorkReducer(stride=3).logits(frames, infer)[("pil", 8)]
    first = WorkReducer(stride=3)
    head = first.logits(frames[:4], infer)[("pil", 8)]
    second = WorkReducer(stride=3)
    second.load_state_dict(first.state_dict())
    tail = second.logits(frames[4:], infer)[("pil", 8)]
    torch.testing.assert_close(torch.cat([head, tail]), whole, rtol=0, atol=0)
    assert second.counts["model"] == 1  # frame 6 only: the phase went on from frame 3


# -- 4. segments x 16-bit mattes of a 10-bit source ----------------------------------------------------------------

def _deep_source(path: Path, n: int = 12, w: int = 64, h: int = 48) -> Path:
    """ProRes 422 HQ (yuv422p10le): a fine 16-bit gradient that shifts every frame."""
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        s = c.add_stream("prores_ks", rate=NTSC)
        s.width, s.height, s.pix_fmt = w, h, "yuv422p10le"
        s.options = {"profile": "3"}
        images = []
        for i in range(n):
            ramp = (((xx + yy * w) * 7 + i * 3001) % 65536).astype(np.uint16)
            images.append(np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 20000 + 1000 * i)], -1))
        encode_frames(c, s, images, range(n), format="rgb48le", reformat="yuv422p10le")
    return path


def test_deep_mattes_of_segments_equal_one_pass(tiny_model, tmp_path):
    from streammask.io.video import read_batches

    src = _deep_source(tmp_path / "deep.mov")
    source16 = np.concatenate([b.frames16 for b in read_batches(src, batch_size=4, deep=True)])
    ranges = [(0, 4), (4, 8), (8, 12)]
    for fmt in ("png16", "prores"):
        kw = _kw(tiny_model, batch_size=4, outputs=["matte"], matte_format=fmt)
        one = process_video(src, out_dir=tmp_path / f"one-{fmt}", **kw).outputs["soft.matte"]
        seg = process_segments(src, ranges, out_dir=tmp_path / f"seg-{fmt}", **kw).outputs["soft.matte"]
        if fmt == "png16":
            a, b = _sequence_frames(one), _sequence_frames(seg)
            assert b.dtype == np.uint16 and b.shape == (12, 48, 64, 4)
            # the segments' RGB is the source's 16-bit RGB itself (cv2 reads BGRA), frame for frame
            np.testing.assert_array_equal(b[..., 2::-1], source16)
        else:
            a, b = _decode(one, "rgba64le")[1], _decode(seg, "rgba64le")[1]
        np.testing.assert_array_equal(b, a)


# -- 5. segments x automatic batch size ---------------------------------------------------------------------------

def test_segments_with_the_automatic_batch_size_equal_one_pass(talk, tiny_model, tmp_path):
    from streammask.batch import run_batch

    kw = _kw(tiny_model, outputs=["mask"], mask_format="png")  # batch_size=None: automatic (1 on a CPU)
    one = process_video(talk, out_dir=tmp_path / "one", **kw)
    assert one.batch_size == 1
    seg = process_segments(talk, ODD, out_dir=tmp_path / "seg", **kw)
    expected = _sequence_frames(one.outputs["soft.mask"])
    np.testing.assert_array_equal(_sequence_frames(seg.outputs["soft.mask"]), expected)
    rep = run_batch([talk], out_dir=tmp_path / "batch", segment_seconds=0.3, overlap_frames=3, **kw)
    (clip,) = rep.results
    assert clip.status == "ok", clip.error
    np.testing.assert_array_equal(_sequence_frames(Path(clip.outputs["soft.mask"])), expected)


# -- 7. batch re-runs of a segment-split clip -------------------------------------------------------------------

def test_batch_rerun_of_a_segment_split_clip_with_changed_settings_replaces_its_outputs(talk, tiny_model, tmp_path):
    from streammask.batch import run_batch

    kw = _kw(tiny_model, outputs=["mask", "heatmap"], mask_format="png", segment_seconds=0.3, overlap_frames=3)
    first = run_batch([talk], out_dir=tmp_path / "b", variants={"soft": {"threshold": 0.9}}, **kw).results[0]
    first_mask = _sequence_frames(Path(first.outputs["soft.mask"]))
    again = run_batch([talk], out_dir=tmp_path / "b", variants={"soft": {"threshold": 0.1}}, **kw).results[0]
    assert first.status == again.status == "ok", (first.error, again.error)
    assert first.outputs == again.outputs
    clip_dir = Path(again.out_dir)
    assert not (clip_dir / SEGMENTS_DIR).exists()  # no segment folder left behind
    assert not [p for p in clip_dir.rglob(".*partial*")]  # no temporaries
    fresh = process_video(talk, out_dir=tmp_path / "fresh", variants={"soft": {"threshold": 0.1}},
                          **_kw(tiny_model, outputs=["mask", "heatmap"], mask_format="png"))
    got = _sequence_frames(Path(again.outputs["soft.mask"]))
    assert not np.array_equal(got, first_mask)  # the settings change shows in the mask
    np.testing.assert_array_equal(got, _sequence_frames(fresh.outputs["soft.mask"]))
    assert len(list(Path(again.outputs["soft.mask"]).glob("*.png"))) == FRAMES  # the old images were replaced
    assert _decode(Path(again.outputs["soft.heatmap"]))[0] == _decode(fresh.outputs["soft.heatmap"])[0]


def test_process_segments_refuses_existing_outputs_like_run(talk, tiny_model, tmp_path):
    from streammask.errors import OutputExistsError

    kw = _kw(tiny_model, outputs=["mask"], mask_format="png")
    first = process_segments(talk, RANGES, out_dir=tmp_path / "o", **kw)
    before = sorted(p.name for p in first.outputs["soft.mask"].iterdir())
    with pytest.raises(OutputExistsError, match="overwrite"):
        process_segments(talk, RANGES, out_dir=tmp_path / "o", **kw)
    assert sorted(p.name for p in first.outputs["soft.mask"].iterdir()) == before
    assert not (tmp_path / "o" / SEGMENTS_DIR).exists()
    again = process_segments(talk, RANGES, out_dir=tmp_path / "o", overwrite=True, **kw)
    assert sorted(p.name for p in again.outputs["soft.mask"].iterdir()) == before


# -- 6. preview --record x overwrite / output template ------------------------------------------------------------

def test_preview_record_refuses_existing_recordings_like_run(tmp_path):
    from streammask.errors import OutputExistsError
    from streammask.preview import PreviewSession

    from conftest import write_synthetic_clip
    from preview_driver import BrightnessOracle

    clip = write_synthetic_clip(tmp_path / "cam.mp4", frames=6)
    rec = tmp_path / "rec"
    kw = dict(prompt="x", segmenter=BrightnessOracle(), no_window=True, record=str(rec), outputs=["mask", "matte"],
              mask_format="png")
    first = PreviewSession(clip, **kw).run().recordings
    assert sorted(Path(p).name for p in first.values()) == ["cam.soft.mask", "cam.soft.matte.mov"]
    stamp = {p: p.stat().st_mtime_ns for p in rec.rglob("*")}
    with pytest.raises(OutputExistsError, match="overwrite"):
        PreviewSession(clip, **kw)  # before any work: nothing opened, nothing replaced
    assert {p: p.stat().st_mtime_ns for p in rec.rglob("*")} == stamp
    again = PreviewSession(clip, overwrite=True, **kw).run().recordings
    assert again == first and len(list(Path(again["soft.mask"]).glob("*.png"))) == 6
    named = PreviewSession(clip, output_template="{variant}-{kind}", **kw).run().recordings
    assert sorted(Path(p).name for p in named.values()) == ["soft-mask", "soft-matte.mov"]


def test_preview_command_second_record_is_one_line_and_status_2(tmp_path, tiny_model_dir, capsys):
    from streammask.cli import main

    from conftest import write_synthetic_clip

    clip = write_synthetic_clip(tmp_path / "cam.mp4", frames=4)
    argv = ["preview", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "--device", "cpu", "--no-window",
            "--record", str(tmp_path / "rec"), "--outputs", "mask", "-q"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0], err
    assert main(argv + ["--overwrite", "--output-template", "{stem}-{kind}", "--attn-implementation", "eager"]) == 0
    assert (tmp_path / "rec" / "cam-mask.mp4").is_file()


def test_batch_segments_with_max_frames_cut_the_audio_like_one_pass(talk, tiny_model, tmp_path):
    from streammask.batch import run_batch

    kw = _kw(tiny_model, outputs=["heatmap"], max_frames=14)
    one = process_video(talk, out_dir=tmp_path / "one", **kw).outputs["soft.heatmap"]
    (clip,) = run_batch([talk], out_dir=tmp_path / "batch", segment_seconds=0.2, overlap_frames=2, **kw).results
    assert clip.status == "ok", clip.error
    seg = Path(clip.outputs["soft.heatmap"])
    assert len(_decode(seg)[0]) == 14
    _, first, end, n = audio_span(seg)
    _, one_first, one_end, one_n = audio_span(one)
    assert n == one_n and abs(first - one_first) < 1e-3 and abs(end - one_end) < 1024 / 44100
    assert end < audio_span(talk)[2] - 0.2  # cut near the video's end, not the whole track
