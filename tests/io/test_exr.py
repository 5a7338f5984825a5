"""OpenEXR mattes: half-float RGBA, premultiplied by default, read back with the OpenEXR library value for value."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from streammask import process_video
from streammask.batch.segments import process_segments
from streammask.io.matte import MatteBatch, resolve_matte_style
from streammask.io.writers import FORMATS, make_writer

from conftest import CARPHONE
from matte_oracle import MatteOracle, load_textures, make_matte_clip, write_lossless

TB = Fraction(1, 30000)


def _read_exr(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with OpenEXR.File(str(path), separate_channels=True) as f:
        return dict(f.header()), {name: ch.pixels.copy() for name, ch in f.channels().items()}


def _rgba(channels: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([channels[c] for c in "RGBA"], axis=-1)


def _expected(rgb: np.ndarray, mask: np.ndarray, premultiplied: bool) -> np.ndarray:
    """The half floats the file must hold, computed here from the definition: colour = code / 255 (or
    / 65535 for uint16), alpha = mask / 65535, times alpha when premultiplied, rounded once to half."""
    top = np.float32(255 if rgb.dtype == np.uint8 else 65535)
    a = mask.astype(np.float32) / np.float32(65535)
    colour = rgb.astype(np.float32) / top
    if premultiplied:
        colour = colour * a
    return np.concatenate([colour, a], axis=-1).astype(np.float16)


def _batch(n=3, h=7, w=11, seed=0, deep=False):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 65536 if deep else 256, (n, h, w, 3)).astype(np.uint16 if deep else np.uint8)
    mask = rng.integers(0, 65536, (n, h, w, 1)).astype(np.uint16)
    mask[:, 0, 0] = 0
    mask[:, 0, 1] = 65535
    return rgb, mask


def _write(tmp_path, batch, *, channels=None, pts=(0, 1001, 2002)):
    n, h, w = batch.mask.shape[:3] if isinstance(batch, MatteBatch) else batch.shape[:3]
    writer = make_writer("matte", "exr", tmp_path / "clip.soft.matte", width=w, height=h, rate=Fraction(30000, 1001),
                         time_base=TB, channels=channels)
    with writer:
        writer.write(batch, list(pts)[:n])
    return writer.path


@pytest.mark.parametrize("style", ["premultiplied", "straight"])
@pytest.mark.parametrize("deep", [False, True])
def test_half_rgba_value_for_value(tmp_path, style, deep):
    rgb, mask = _batch(deep=deep)
    out = _write(tmp_path, MatteBatch(rgb, mask, style=style))
    files = sorted(out.glob("*.exr"))
    assert [f.name for f in files] == [f"clip.soft.matte_{i:06d}.exr" for i in range(3)]
    for i, f in enumerate(files):
        header, channels = _read_exr(f)
        assert sorted(channels) == ["A", "B", "G", "R"]
        assert all(ch.dtype == np.float16 for ch in channels.values())
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        lo, hi = header["dataWindow"]
        assert (int(hi[0]) - int(lo[0]) + 1, int(hi[1]) - int(lo[1]) + 1) == (11, 7)  # exact size
        got = _rgba(channels)
        want = _expected(rgb[i], mask[i], premultiplied=style == "premultiplied")
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))  # bit for bit
    assert got[0, 0, 3] == 0 and got[0, 1, 3] == 1


def test_styles_without_alpha(tmp_path):
    rgb, mask = _batch(n=1)
    gray = _write(tmp_path / "a", MatteBatch(rgb, mask, style="alpha"), channels=1)
    _, channels = _read_exr(next(gray.glob("*.exr")))
    assert sorted(channels) == ["Y"]
    np.testing.assert_array_equal(channels["Y"], (mask[0, ..., 0].astype(np.float32) / 65535).astype(np.float16))
    solid = _write(tmp_path / "s", MatteBatch(rgb, mask, style="solid", color=(0, 255, 0)), channels=3)
    _, channels = _read_exr(next(solid.glob("*.exr")))
    assert sorted(channels) == ["B", "G", "R"]
    a = mask[0].astype(np.float32) / 65535
    want = rgb[0].astype(np.float32) / 255 * a + np.asarray([0, 1, 0], np.float32) * (1 - a)
    np.testing.assert_array_equal(np.stack([channels[c] for c in "RGB"], -1), want.astype(np.float16))


def test_sidecars_as_png_sequences(tmp_path):
    rgb, mask = _batch()
    exr = _write(tmp_path / "exr", MatteBatch(rgb, mask, style="premultiplied"))
    png = make_writer("matte", "png16", tmp_path / "png" / "clip.soft.matte", width=11, height=7,
                      rate=Fraction(30000, 1001), time_base=TB)
    with png:
        png.write(MatteBatch(rgb, mask), [0, 1001, 2002])
    rows_exr = list(csv.reader((exr / "frames.csv").open()))
    rows_png = list(csv.reader((png.path / "frames.csv").open()))
    assert [r[:1] + r[2:] for r in rows_exr] == [r[:1] + r[2:] for r in rows_png]
    assert [r[1].replace(".exr", "") for r in rows_exr[1:]] == [r[1].replace(".png", "") for r in rows_png[1:]]
    meta = json.loads((exr / "sequence.json").read_text())
    meta_png = json.loads((png.path / "sequence.json").read_text())
    assert meta["frame_rate"] == meta_png["frame_rate"] == "30000/1001" and meta["time_base"] == "1/30000"
    assert meta["pattern"] == "clip.soft.matte_%06d.exr" and meta["frames"] == 3
    assert (meta["sample_format"], meta["alpha"], meta["channels"]) == ("half", "premultiplied", 4)


def test_auto_style_is_premultiplied_for_exr_only():
    assert resolve_matte_style("auto", "exr") == "premultiplied"
    assert resolve_matte_style("auto", "prores") == "straight"
    assert resolve_matte_style("straight", "exr") == "straight"
    assert FORMATS["matte"]["exr"].suffix == ""  # a folder per output, like PNG


@pytest.fixture(scope="module")
def oracle_clip(tmp_path_factory):
    clip = make_matte_clip("holes", load_textures([CARPHONE]), length=6, size=(72, 129), seed=1)  # odd width
    return clip, write_lossless(clip.frames, tmp_path_factory.mktemp("exr") / "holes.mkv")


def test_process_video_writes_the_refined_matte_exactly(oracle_clip, tmp_path):
    clip, src = oracle_clip
    kw = dict(prompt="object", segmenter=MatteOracle(clip, size=48), progress=False, outputs=["matte"],
              refine="guided", batch_size=4)
    exr = process_video(src, out_dir=tmp_path / "exr", matte_format="exr", **kw)  # auto: premultiplied
    straight = process_video(src, out_dir=tmp_path / "st", matte_format="exr", matte_style="straight", **kw)
    png = process_video(src, out_dir=tmp_path / "png", matte_format="png16", **kw)  # auto: straight
    pngs = sorted(png.outputs["soft.matte"].glob("*.png"))
    exrs = sorted(exr.outputs["soft.matte"].glob("*.exr"))
    exrs_straight = sorted(straight.outputs["soft.matte"].glob("*.exr"))
    assert len(pngs) == len(exrs) == len(exrs_straight) == 6
    for p, e, s in zip(pngs, exrs, exrs_straight):
        rgba16 = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        rgb8 = (rgba16[..., :3] // 257).astype(np.uint8)  # an 8-bit source: png16 holds code * 257
        mask = rgba16[..., 3:]
        got = _rgba(_read_exr(e)[1])
        assert got.shape == (72, 129, 4)
        np.testing.assert_array_equal(got.view(np.uint16), _expected(rgb8, mask, True).view(np.uint16))
        got = _rgba(_read_exr(s)[1])
        np.testing.assert_array_equal(got.view(np.uint16), _expected(rgb8, mask, False).view(np.uint16))
    assert (exr.outputs["soft.matte"] / "frames.csv").read_text().count("\n") == 7  # header + 6 frames


def test_segments_join_exr_sequences(oracle_clip, tmp_path):
    clip, src = oracle_clip
    kw = dict(prompt="object", segmenter=MatteOracle(clip, size=48), progress=False, outputs=["matte"],
              matte_format="exr", refine="guided", batch_size=2)
    one = process_video(src, out_dir=tmp_path / "one", **kw)
    seg = process_segments(src, [(0, 2), (2, 6)], out_dir=tmp_path / "seg", overlap=0, **kw)
    a = sorted(one.outputs["soft.matte"].glob("*.exr"))
    b = sorted(seg.outputs["soft.matte"].glob("*.exr"))
    assert [f.name for f in a] == [f.name for f in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(_rgba(_read_exr(x)[1]).view(np.uint16), _rgba(_read_exr(y)[1]).view(np.uint16))
    assert (seg.outputs["soft.matte"] / "frames.csv").read_text() == (one.outputs["soft.matte"] / "frames.csv").read_text()
