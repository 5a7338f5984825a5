from fractions import Fraction

import av
import numpy as np
import pytest

from streammask import InvalidVideoError, ParameterError, SourceNotFoundError, probe, read_batches

from conftest import CARPHONE, encode_frames, write_synthetic_clip


def test_probe_carphone_exact_rate():
    info = probe(CARPHONE)
    assert (info.width, info.height) == (176, 144)
    assert info.frame_rate == Fraction(30000, 1001)
    assert info.time_base == Fraction(1, 30000)
    assert info.num_frames == 120
    assert info.rotation == 0 and not info.has_audio
    assert "30000/1001" in info.describe()


def test_read_batches_keeps_source_pts_and_bounds_batches():
    with av.open(str(CARPHONE)) as c:
        expected = [f.pts for f in c.decode(video=0)]
    batches = list(read_batches(CARPHONE, batch_size=16))
    assert [len(b) for b in batches] == [16] * 7 + [8]
    assert [p for b in batches for p in b.pts] == expected
    assert batches[0].frames.shape == (16, 144, 176, 3) and batches[0].frames.dtype == np.uint8
    assert batches[3].start == 48
    assert "FrameBatch(frames=16x144x176x3" in repr(batches[0])


def test_variable_frame_rate_pts_survive(tmp_path):
    path = write_synthetic_clip(tmp_path / "vfr.mkv", frames=6, pts_step=37)
    pts = [p for b in read_batches(path, batch_size=4) for p in b.pts]
    assert pts == [i * 37 for i in range(6)]


def test_max_frames():
    assert sum(len(b) for b in read_batches(CARPHONE, batch_size=7, max_frames=10)) == 10


def test_rotated_source_is_decoded_upright(tmp_path):
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)
        img = np.zeros((32, 64, 3), np.uint8)
        img[:, :16] = 255  # bright band on the left
        encode_frames(c, s, [img] * 3, range(3))
    info = probe(path)
    assert info.rotation in (90, 270) and (info.width, info.height) == (32, 64)
    frames = next(read_batches(path, batch_size=3)).frames
    assert frames.shape == (3, 64, 32, 3)


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,err,msg", [
    (lambda p: p / "missing.mp4", SourceNotFoundError, "does not exist"),
    (lambda p: p, InvalidVideoError, "is a directory"),
    (lambda p: _file(p / "empty.mp4", b""), InvalidVideoError, "empty"),
    (lambda p: _file(p / "notes.mp4", b"hello, not a video"), InvalidVideoError, "not a readable video"),
])
def test_bad_inputs(tmp_path, make, err, msg):
    with pytest.raises(err, match=msg):
        probe(make(tmp_path))


def test_bad_batch_size():
    with pytest.raises(ParameterError, match="batch_size=0"):
        next(read_batches(CARPHONE, batch_size=0))
