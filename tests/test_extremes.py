"""Extreme input (issue 9): 1x1 frames in every output format, 8K frames in bounded memory with an adapted batch
size, files whose first packets are damaged, and one clear line for every kind of file that is not a video."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streammask import probe, process_video, read_batches
from streammask.cli import main
from streammask.errors import InvalidVideoError
from streammask.pipeline.preflight import fit_batch_to_memory, queue_slots
from streammask.io.video import PROBE_MAX_DAMAGED_PACKETS

from conftest import encode_frames, write_mjpeg_avi
from peak_rss import PEAK_RSS
from test_reliability import damage

REPO = Path(__file__).resolve().parents[1]


def _decoded(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, or of a PNG sequence folder (sorted), as arrays."""
    import av
    import cv2

    if path.is_dir():
        return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(path.glob("*.png"))]
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _write_1x1(path: Path, frames: int = 3) -> Path:
    """A 1x1 FFV1 clip (H.264 cannot even hold one) whose single pixel brightens frame by frame."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=Fraction(30000, 1001))
        s.width, s.height, s.pix_fmt = 1, 1, "yuv444p"
        encode_frames(c, s, [np.full((1, 1, 3), 40 + 80 * i, np.uint8) for i in range(frames)], range(frames))
    return path


@pytest.mark.parametrize("mask_format,matte_format", [("mp4", "prores"), ("ffv1", "webm"), ("png", "png")])
def test_1x1_input_every_output_format(tmp_path, tiny_model, mask_format, matte_format):
    src = _write_1x1(tmp_path / "dot.mkv")
    info = probe(src)
    assert (info.width, info.height) == (1, 1)
    out = tmp_path / "out"
    s = process_video(src, prompt="x", out_dir=out, segmenter=tiny_model, progress=False, mask_format=mask_format,
                      matte_format=matte_format)
    assert s.frames == 3 and set(s.outputs) == {"soft.mask", "soft.heatmap", "soft.matte"}
    for key, path in s.outputs.items():
        frames = _decoded(path)
        assert len(frames) == 3, (key, path)
        h, w = frames[0].shape[:2]
        # 4:2:0 formats (H.264, VP9) pad to 2x2 by repeating the pixel; ProRes, FFV1 and PNG keep 1x1
        padded = path.suffix in (".mp4", ".webm")
        assert (h, w) == ((2, 2) if padded else (1, 1)), (key, h, w)
        if padded:
            assert all(np.ptp(f.reshape(-1, f.shape[-1]), axis=0).max() <= 2 for f in frames), key
    # the matte's colour is the source pixel
    matte = _decoded(s.outputs["soft.matte"])
    src_px = [f[0, 0, :3].astype(int) for f in _decoded(src)]
    got = [f[0, 0, :3].astype(int) if matte_format != "png" else f[0, 0, [2, 1, 0]].astype(int) for f in matte]
    assert all(np.abs(a - b).max() <= 6 for a, b in zip(src_px, got)), (src_px, got)


def test_batch_and_queue_fit_the_byte_budget():
    assert fit_batch_to_memory(8, width=1920, height=1080, max_batch_mb=256) == 8
    assert fit_batch_to_memory(8, width=3840, height=2160, max_batch_mb=256) == 8  # 25 MB frames
    assert fit_batch_to_memory(8, width=3840, height=2160, max_batch_mb=100) == 4
    assert fit_batch_to_memory(8, width=7680, height=4320, max_batch_mb=256) == 2
    assert fit_batch_to_memory(8, width=7680, height=4320, max_batch_mb=1) == 1  # never 0
    frame8k = 7680 * 4320 * 3
    assert queue_slots(4, 2 * frame8k, max_batch_mb=256) == 1
    assert queue_slots(4, 8 * 1920 * 1080 * 3, max_batch_mb=256) == 4


def test_8k_run_sizes_its_batch_and_queues_by_the_budget(tmp_path, monkeypatch, tiny_model):
    """The wiring, without 8K pixels: a small clip that probes as 7680x4320 is read in batches of 2 (256 MB budget),
    the decode queue holds 1 batch, each encoder queue as many as fit in the budget (mask 4 of 63 MB, heatmap 1,
    matte 1)."""
    import dataclasses

    import streammask.pipeline.outputs as outputs_module
    import streammask.pipeline.run as pipeline_module

    clip = write_mjpeg_avi(tmp_path / "clip.avi", frames=2)
    real_probe = pipeline_module.probe
    monkeypatch.setattr(pipeline_module, "probe",
                        lambda path: dataclasses.replace(real_probe(path), width=7680, height=4320))
    seen: dict = {"sinks": {}}

    class Stop(Exception):
        pass

    def read_batches(path, *, batch_size, **kwargs):
        seen["batch_size"] = batch_size
        raise Stop
        yield  # a generator, like the real one

    real_prefetch, real_sink = pipeline_module.prefetch, outputs_module.SinkThread

    def prefetch(it, *, maxsize, **kwargs):
        seen["decode_slots"] = maxsize
        return real_prefetch(it, maxsize=maxsize, **kwargs)

    def sink(fn, *, maxsize, name, **kwargs):
        seen["sinks"][name] = maxsize
        return real_sink(fn, maxsize=maxsize, name=name, **kwargs)

    monkeypatch.setattr(pipeline_module, "read_batches", read_batches)
    monkeypatch.setattr(pipeline_module, "prefetch", prefetch)
    monkeypatch.setattr(outputs_module, "SinkThread", sink)
    out = tmp_path / "out"
    with pytest.raises(Stop):
        process_video(clip, prompt="x", out_dir=out, segmenter=tiny_model, progress=False, mask_format="png",
                      matte_format="png", queue_size=4, batch_size=8)
    assert seen["batch_size"] == 2 and seen["decode_slots"] == 1
    assert seen["sinks"] == {"encode soft.mask": 4, "encode soft.heatmap": 1, "encode soft.matte": 1}
    assert not out.exists()  # nothing written, and the folder the run created is removed


_RUN_8K = PEAK_RSS + r"""
import json, logging, sys
import streammask
logging.basicConfig(level=logging.WARNING, format="LOG %(message)s")
src, out, model, budget = sys.argv[1:5]
seg = streammask.load_clipseg(model, device="cpu")
base = peak_rss_mb()
s = streammask.process_video(src, prompt="person", out_dir=out, segmenter=seg, outputs=["mask"], mask_format="ffv1",
                             progress=False, max_batch_mb=float(budget), batch_size=8)
print(json.dumps({"frames": s.frames, "batch_size": s.batch_size, "base_mb": base, "peak_mb": peak_rss_mb()}))
"""


def _write_8k(path: Path, frames: int = 3) -> Path:
    import av

    w, h = 7680, 4320
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuvj420p"
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = (np.arange(w, dtype=np.uint32) * 255 // w).astype(np.uint8)[None, :]
        img[..., 2] = (np.arange(h, dtype=np.uint32) * 255 // h).astype(np.uint8)[:, None]

        def images():  # one 95 MB frame at a time
            for i in range(frames):
                f = img.copy()
                f[1000:2000, 1000 + 500 * i:2000 + 500 * i] = 255
                yield f

        encode_frames(c, s, images(), range(frames))
    return path


def test_8k_memory_bounded_and_batch_adapts(tmp_path, tiny_model_dir):
    """2 frames of 7680x4320 (95 MB each as RGB) in a subprocess: a 100 MB budget shrinks the batch to 1 frame
    (with a logged note) and the run's own memory (peak RSS above the loaded model) stays within a fixed number of
    frame-sized buffers: decode, the device copy, the float mask, the encoder, one bounded queue slot each.

    With only 2 frames an unadapted run (one batch of 2) holds about as many frames in flight as the pipelined
    1-frame batches do, so the two are not compared here; the batch and queue sizing is checked by
    test_batch_and_queue_fit_the_byte_budget and the flat-with-length property by test_memory / test_long_run."""
    import av

    src = _write_8k(tmp_path / "8k.avi", frames=2)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _RUN_8K, str(src), str(out), str(tiny_model_dir), "100"],
                       capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["frames"] == 2 and res["batch_size"] == 1
    assert "batch size 8 reduced to 1" in r.stderr and "7680x4320" in r.stderr, r.stderr
    frame_mb = 7680 * 4320 * 3 / 2**20
    used = res["peak_mb"] - res["base_mb"]
    print(f"8K, batch 1: peak RSS {used:.0f} MB above the loaded model ({used / frame_mb:.1f} RGB frames of "
          f"{frame_mb:.0f} MB)")
    # measured 8-21 frames' worth on a 2-core machine depending on how the stages overlap (FFV1's encoder buffers
    # are large at 8K); without the budget a batch of 8 frames would hold 8 of each of these buffers
    assert used < 32 * frame_mb, used
    with av.open(str(out / "8k.soft.mask.mkv")) as c:
        st = c.streams.video[0]
        assert (st.codec_context.width, st.codec_context.height) == (7680, 4320)
        assert sum(1 for p in c.demux(st) if p.size) == 2


# ---- probe: damaged first packets, and what is not a video -----------------------------------------------------------

def test_probe_skips_damaged_leading_packets(tmp_path, tiny_model):
    clean = write_mjpeg_avi(tmp_path / "clean.avi", frames=10)
    bad_pts = damage(clean, tmp_path / "bad.avi", [0, 1])
    info = probe(tmp_path / "bad.avi")
    assert (info.width, info.height) == (64, 48) and info.codec == "mjpeg"
    stats: dict = {}
    pts = [p for b in read_batches(tmp_path / "bad.avi", stats=stats) for p in b.pts]
    assert stats["damaged_packets"] == 2 and len(pts) == 8 and not set(pts) & set(bad_pts)
    s = process_video(tmp_path / "bad.avi", prompt="x", out_dir=tmp_path / "out", segmenter=tiny_model,
                      outputs=["mask"], progress=False)
    assert s.frames == 8 and s.damaged_packets == 2


def test_probe_gives_up_after_a_bound(tmp_path):
    n = PROBE_MAX_DAMAGED_PACKETS + 3
    clean = write_mjpeg_avi(tmp_path / "clean.avi", frames=n + 2, size=(16, 16))
    damage(clean, tmp_path / "bad.avi", list(range(n)))
    with pytest.raises(InvalidVideoError, match=f"first {PROBE_MAX_DAMAGED_PACKETS + 1} packets are damaged"):
        probe(tmp_path / "bad.avi")


def _zero_frames(path: Path, codec: str = "mjpeg", pix_fmt: str = "yuvj420p") -> Path:
    """A file with a video stream header and no frame (default: an MJPEG AVI)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 16, 16, pix_fmt
        c.start_encoding()
    return path


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        encode_frames(c, s, [f])
    return path


def _image(path: Path) -> Path:
    import cv2

    ok, data = cv2.imencode(".png", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _text(path: Path) -> Path:
    path.write_text("hello, not a video\n")
    return path


def _all_damaged(path: Path) -> Path:
    clean = write_mjpeg_avi(path.with_name("clean.avi"), frames=4)
    damage(clean, path, [0, 1, 2, 3])
    return path


@pytest.mark.parametrize("case,make,name,needle", [
    ("zero video frames (avi)", _zero_frames, "zero.avi", "no decodable video frames"),
    ("zero video frames (mkv)", lambda p: _zero_frames(p, "ffv1", "yuv420p"), "zero.mkv",
     "ends before its first frame"),
    ("audio only", _audio_only, "sound.wav", "no video stream (it holds audio only)"),
    ("still image", _image, "picture.png", "still image"),
    ("still image named .mp4", _image, "picture.mp4", "still image"),
    ("text file", _text, "notes.mp4", "not a readable video"),
    ("every packet damaged", _all_damaged, "bad.avi", "4 damaged packets"),
])
def test_not_a_video_is_one_line_for_probe_and_run(tmp_path, capsys, tiny_model_dir, case, make, name, needle):
    src = make(tmp_path / name)
    for argv in (["probe", str(src)],
                 ["run", str(src), "--prompt", "x", "--model", str(tiny_model_dir), "-o", str(tmp_path / "out"), "-q"]):
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, (case, argv[0], err)
        assert lines[0].startswith("streammask: error:") and needle in lines[0] and name in lines[0], (case, lines)
    out = tmp_path / "out"
    assert not out.exists(), case  # refused before the output folder is made
