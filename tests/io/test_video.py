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


# --------------------------------------------------------------------------------------
# probe: colour and timing facts
# --------------------------------------------------------------------------------------
def _pyav_tagged_source(path, *, pix_fmt="yuv420p10le", color_range=1, colorspace=9, primaries=9, trc=16):
    """A 10-bit H.264 clip whose codec context carries explicit colour tags (default: BT.2020 PQ, limited)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, pix_fmt
        cc = s.codec_context
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = color_range, colorspace, primaries, trc
        encode_frames(c, s, [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)], range(3), reformat=pix_fmt)
    return path


def _ffmpeg_tagged(rng, matrix):
    def make(tmp_path):
        from sources import COLOURS, FFMPEG, ffmpeg_colour_source

        if FFMPEG is None:
            pytest.skip("ffmpeg (system package) is not installed")
        return ffmpeg_colour_source(tmp_path / f"{rng}_{matrix}.mp4", rng, matrix, COLOURS)
    return make


def _vfr_mp4(tmp_path):
    from sources import make_source

    return make_source(tmp_path / "vfr.mp4", pts=[0, 1001, 2002, 4004, 5005, 8008, 9009])


# source -> (colorspace, color_range, primaries, transfer, bits, variable frame rate)
PROBE_FACTS = [
    ("ffmpeg bt709 limited", _ffmpeg_tagged("tv", "bt709"), ("bt709", "limited", "bt709", "bt709", 8, False)),
    ("ffmpeg bt601 full", _ffmpeg_tagged("pc", "bt601"), ("smpte170m", "full", "smpte170m", "smpte170m", 8, False)),
    ("pyav 10-bit bt2020 pq", lambda tmp: _pyav_tagged_source(tmp / "pq.mp4"),
     ("bt2020nc", "limited", "bt2020", "smpte2084", 10, False)),
    ("pyav full range bt470bg", lambda tmp: _pyav_tagged_source(tmp / "pal.mkv", pix_fmt="yuv420p", color_range=2,
                                                                colorspace=5, primaries=5, trc=13),
     ("bt470bg", "full", "bt470bg", "iec61966-2-1", 8, False)),
    ("untagged carphone", lambda tmp: CARPHONE, (None, None, None, None, 8, False)),
    ("29.97 in ms (mkv)", lambda tmp: write_synthetic_clip(tmp / "ntsc.mkv", frames=30),
     (None, None, None, None, 8, False)),
    ("variable rate mp4", _vfr_mp4, (None, None, None, None, 8, True)),
    ("constant pts step mkv", lambda tmp: write_synthetic_clip(tmp / "cfr.mkv", frames=8, pts_step=40),
     (None, None, None, None, 8, False)),
]


@pytest.mark.parametrize("make,expected", [p[1:] for p in PROBE_FACTS], ids=[p[0] for p in PROBE_FACTS])
def test_probe_colour_and_timing_facts(tmp_path, make, expected):
    info = probe(make(tmp_path))
    got = (info.colorspace, info.color_range, info.color_primaries, info.color_transfer, info.bits_per_component,
           info.variable_frame_rate)
    assert got == expected
    text = info.describe()
    assert ("variable frame rate" if expected[5] else "constant frame rate") in text
    assert f"bit depth:   {expected[4]} bits per component" in text
    for name in expected[:4]:
        assert (name or "unspecified") in text


def test_probe_colour_names_match_ffprobe(tmp_path):
    import json
    import shutil
    import subprocess

    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe (system ffmpeg package) is not installed")
    for path in (_pyav_tagged_source(tmp_path / "pq.mp4"),
                 _pyav_tagged_source(tmp_path / "pal.mkv", pix_fmt="yuv420p", color_range=2, colorspace=5,
                                     primaries=5, trc=13)):
        out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "stream=color_space,color_range,color_primaries,color_transfer", "-of", "json",
                              str(path)], capture_output=True, text=True, check=True).stdout
        ref = json.loads(out)["streams"][0]
        info = probe(path)
        assert (info.colorspace, info.color_primaries, info.color_transfer) == (
            ref["color_space"], ref["color_primaries"], ref["color_transfer"])
        assert info.color_range == {"tv": "limited", "pc": "full"}[ref["color_range"]]


def test_probe_describes_what_an_untagged_source_is_decoded_as():
    text = probe(CARPHONE).describe()  # 176x144, untagged
    assert "matrix:      unspecified (decoded as bt601)" in text
    assert "range:       unspecified (decoded as limited)" in text


def test_probe_does_not_decode_the_whole_file(monkeypatch):
    decoded = []
    real = av.video.stream.VideoStream.decode

    def counting(self, *a, **kw):
        out = real(self, *a, **kw)
        decoded.append(len(out))
        return out

    monkeypatch.setattr(av.video.stream.VideoStream, "decode", counting)
    probe(CARPHONE)  # 120 frames
    assert 1 <= sum(decoded) <= 2, decoded


def test_probe_command_prints_colour_and_timing(tmp_path, capsys):
    from streammask.cli import main

    path = _pyav_tagged_source(tmp_path / "pq.mp4")
    assert main(["probe", str(path)]) == 0
    out = capsys.readouterr().out
    for line in ("timing:      constant frame rate", "bit depth:   10 bits per component", "matrix:      bt2020nc",
                 "range:       limited", "primaries:   bt2020", "transfer:    smpte2084"):
        assert line in out, out
