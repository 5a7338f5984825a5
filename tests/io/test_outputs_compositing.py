"""Compositing-grade outputs, verified end to end through ``process_video``.

Every output format is written from synthesized sources (odd size, 30000/1001 with a
start offset, variable frame rate, AAC audio, rotation, limited and full range), then
read back with PyAV and with the system ``ffprobe`` (skipped with a reason when missing):
frame count, each frame's timestamp, size, pixel format, colour tags, and the mask / alpha
values against a reference mask computed from the same decoded frames.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streammask import MaskPipeline, ParameterError, process_video, read_batches
from streammask.io.writers import FORMATS

from conftest import encode_frames
from sources import COLOURS, FFMPEG, NTSC, audio_packets, audio_span, ffmpeg_colour_source, make_source

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="ffprobe (system ffmpeg package) is not installed")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (system package) is not installed")
HAS_X265 = "libx265" in av.codecs_available


class RedSegmenter:
    """A deterministic segmenter: the logit is the (resized) red channel, so the mask is known.

    ``(B, 3, H, W)`` uint8 -> ``(B, P, S, S)`` logits ``8 * (red / 255 - 0.5)``.
    """

    device = torch.device("cpu")
    size = 352

    def segment(self, frames, prompts, *, preprocess="pil", size=None):
        s = size or self.size
        red = frames[:, :1].float() / 255
        red = torch.nn.functional.interpolate(red, size=(s, s), mode="bilinear", align_corners=False)
        return (8 * (red - 0.5)).expand(-1, len(prompts), -1, -1).contiguous()


SEG = RedSegmenter()


def source_truth(path: Path):
    """The decoded frames, their pts and time base, and the reference soft mask (float in [0, 1])."""
    batches = list(read_batches(path, batch_size=64))
    frames = np.concatenate([b.frames for b in batches])
    pts = [p for b in batches for p in b.pts]
    mask = MaskPipeline(SEG, prompt="red").process(frames)["soft"].mask[:, 0].numpy()
    return frames, pts, batches[0].time_base, mask


def run(src, out, **kw):
    kw.setdefault("outputs", ["mask", "heatmap", "matte"])
    return process_video(src, prompt="red", out_dir=out, segmenter=SEG, batch_size=4, progress=False, **kw)


def decode(path: Path, fmt: str, codec: str | None = None):
    """PyAV read-back: ``(images, pts, time_base, stream info dict)``; ``codec`` forces a decoder."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {"pix_fmt": s.codec_context.format.name if s.codec_context.format else None,
                "codec": s.codec_context.name, "audio": len(c.streams.audio)}
        if codec:
            ctx = av.codec.CodecContext.create(codec, "r")
            frames = [f for p in c.demux(s) for f in (ctx.decode(p) if p.size else ctx.decode(None))]
        else:
            frames = list(c.decode(s))
        tb = s.time_base
        info["decoded_pix_fmt"] = frames[0].format.name if frames else None
    return [f.to_ndarray(format=fmt) for f in frames], [f.pts for f in frames], tb, info


def ffprobe(path: Path) -> dict:
    """ffprobe's view of the first video stream and its frames."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,profile,codec_tag_string,pix_fmt,width,height,color_range,color_space,color_transfer,"
         "color_primaries,r_frame_rate,time_base:frame=pts,best_effort_timestamp_time,pts_time",
         "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    return {"stream": data["streams"][0], "frames": data.get("frames", [])}


def ffprobe_audio(path: Path) -> list[dict]:
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "a", "-show_entries",
                          "stream=codec_name,duration,sample_rate,start_time", "-count_packets", "-show_entries",
                          "stream=nb_read_packets", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout).get("streams", [])


def seconds(pts, tb):
    return [float(p * tb) for p in pts]


# --------------------------------------------------------------------------------------
# every format: count, timestamps, size, pixel format, tags, values
# --------------------------------------------------------------------------------------
# (kind, format, read-back pix fmt, value tolerance in 8-bit levels on 99 % of the pixels
# (lossy codecs: 95 % and a PSNR >= 40 dB), exact size?)
LOSSY = {"mp4", "h265", "webm"}
CASES = [
    ("mask", "mp4", "gray", 3, False),
    ("mask", "h265", "gray", 3, False),
    ("mask", "ffv1", "gray", 1, True),
    ("mask", "png", None, 1, True),
    ("mask", "png16", None, 1, True),
    ("mask", "tiff16", None, 1, True),
    ("heatmap", "mp4", "rgb24", None, False),
    ("heatmap", "h265", "rgb24", None, False),
    ("matte", "prores", "rgba64le", 1, True),
    ("matte", "webm", "rgba", 4, False),
    ("matte", "png", None, 1, True),
    ("matte", "png16", None, 1, True),
    ("matte", "tiff16", None, 1, True),
    ("matte", "exr", None, 1, True),
]
ODD = (175, 143)


@pytest.fixture(scope="module")
def odd_offset_source(tmp_path_factory):
    """175x143, 30000/1001, first pts 3003 (a start offset of 0.1 s)."""
    path = make_source(tmp_path_factory.mktemp("src") / "odd.mp4", size=ODD, pts=[3003 + i * 1001 for i in range(8)])
    return path, source_truth(path)


def _sequence(folder: Path):
    import cv2

    meta = json.loads((folder / "sequence.json").read_text())
    rows = [line.split(",") for line in (folder / "frames.csv").read_text().splitlines()[1:]]
    if meta["pattern"].endswith(".exr"):  # half floats, read with the OpenEXR library
        return [_read_exr(folder / r[1]) for r in rows], [int(r[2]) for r in rows], meta
    imgs = [cv2.imread(str(folder / r[1]), cv2.IMREAD_UNCHANGED) for r in rows]
    imgs = [i if i.ndim == 2 else cv2.cvtColor(i, cv2.COLOR_BGRA2RGBA if i.shape[-1] == 4 else cv2.COLOR_BGR2RGB)
            for i in imgs]
    return imgs, [int(r[2]) for r in rows], meta


def _read_exr(path: Path) -> np.ndarray:
    """An OpenEXR file's pixels as float32 ``(H, W, C)`` (R G B A, R G B) or ``(H, W)`` (Y)."""
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        ch = {name: c.pixels.astype(np.float32) for name, c in f.channels().items()}
    if set(ch) == {"Y"}:
        return ch["Y"]
    return np.stack([ch[c] for c in "RGBA" if c in ch], axis=-1)


@pytest.mark.parametrize("kind,fmt,read_fmt,tol,exact_size", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_format_keeps_count_timing_size_and_values(odd_offset_source, tmp_path, kind, fmt, read_fmt, tol,
                                                         exact_size):
    if FORMATS[kind][fmt].codec == "libx265" and not HAS_X265:
        pytest.skip("libx265 is not in this PyAV build")
    src, (frames, src_pts, src_tb, ref) = odd_offset_source
    w, h = ODD
    summary = run(src, tmp_path, outputs=[kind], **{f"{kind}_format": fmt})
    path = summary.outputs[f"soft.{kind}"]
    spec = FORMATS[kind][fmt]
    bits = spec.bits
    if spec.suffix == "":  # image sequence: exact pts in frames.csv, exact rate in sequence.json
        imgs, pts, meta = _sequence(path)
        assert pts == src_pts
        assert meta["frame_rate"] == "30000/1001" and meta["time_base"] == str(src_tb) and meta["frames"] == 8
        assert meta["bits"] == bits
        assert all(i.dtype == (np.float32 if spec.is_float else np.uint16 if bits == 16 else np.uint8) for i in imgs)
        values = [i if kind == "mask" else i[..., 3] for i in imgs]
    else:
        imgs, pts, tb, info = decode(path, read_fmt, codec="libvpx-vp9" if fmt == "webm" else None)
        # what the decoder gives: FFmpeg decodes ProRes 4444 at 12 bits (yuva444p12le) from our 10-bit pixels
        # (16-bit alpha); VP9 alpha needs the libvpx decoder
        want_pix = "yuva444p" if spec.codec == "prores_ks" else spec.pix_fmt
        assert info["decoded_pix_fmt"].startswith(want_pix), info
        exact_time = spec.suffix in (".mp4", ".mov")  # Matroska/WebM store milliseconds
        if exact_time:
            assert tb == src_tb and pts == src_pts
        assert seconds(pts, tb) == pytest.approx(seconds(src_pts, src_tb), abs=1e-9 if exact_time else 5.01e-4)
        values = [i[..., 3] if kind == "matte" else i for i in imgs]
        if read_fmt == "rgba64le":
            bits = 16
    assert len(imgs) == len(frames) == 8
    # size: exact, or padded by one row/column (4:2:0 needs even sizes)
    want = (h, w) if exact_size else (h + 1, w + 1)
    assert imgs[0].shape[:2] == want
    if tol is None:  # heatmap: jet colours over the frame, checked through the mask elsewhere
        return
    scale = 1.0 if spec.is_float else 65535 if bits == 16 else 255
    for v, m in zip(values, ref):
        got = v[:h, :w].astype(np.float64) * (255 / scale)
        err = np.abs(got - m * 255)
        share = 0.95 if fmt in LOSSY else 0.99
        assert (err <= tol).mean() >= share and err.mean() < tol, f"{kind}/{fmt}: mean error {err.mean():.2f}"
        if fmt in LOSSY:
            assert psnr(got, m * 255) >= 40
        if fmt in ("png16", "tiff16", "exr") or (kind == "matte" and fmt == "prores"):
            # 16-bit formats carry more than 256 levels of the soft mask (no 8-bit banding)
            assert len(np.unique(v)) > 256 or len(np.unique(np.rint(m * 255))) < 64


@needs_ffprobe
@pytest.mark.parametrize("kind,fmt", [(c[0], c[1]) for c in CASES if FORMATS[c[0]][c[1]].suffix],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES if FORMATS[c[0]][c[1]].suffix])
def test_ffprobe_sees_count_timing_pixel_format_and_tags(odd_offset_source, tmp_path, kind, fmt):
    spec = FORMATS[kind][fmt]
    if spec.codec == "libx265" and not HAS_X265:
        pytest.skip("libx265 is not in this PyAV build")
    src, (frames, src_pts, src_tb, _) = odd_offset_source
    path = run(src, tmp_path, outputs=[kind], **{f"{kind}_format": fmt}).outputs[f"soft.{kind}"]
    probe = ffprobe(path)
    st = probe["stream"]
    assert len(probe["frames"]) == 8
    times = [float(f.get("pts_time") or f["best_effort_timestamp_time"]) for f in probe["frames"]]
    exact = spec.suffix in (".mp4", ".mov")
    assert times == pytest.approx(seconds(src_pts, src_tb), abs=1e-6 if exact else 5.01e-4)
    assert Fraction(st["r_frame_rate"]) == NTSC
    if fmt == "webm":
        # FFmpeg's native vp9 decoder (ffprobe's) reports no alpha; the alpha is in BlockAdditional
        assert st["pix_fmt"] == "yuv420p"
    elif spec.codec == "prores_ks":  # FFmpeg's ProRes decoder works at 12 bits
        assert st["pix_fmt"].startswith("yuva444p") and st["profile"] == "4444"
    else:
        assert st["pix_fmt"] == spec.pix_fmt
    if spec.is_yuv:
        assert (st.get("color_range"), st.get("color_space"), st.get("color_primaries"), st.get("color_transfer")) == \
            ("tv", "bt709", "bt709", "bt709")
    if spec.codec_tag:
        assert st["codec_tag_string"] == spec.codec_tag
    if spec.suffix in (".mp4", ".mov"):  # +faststart: the index (moov) before the media data
        data = path.read_bytes()
        assert data.find(b"moov") < data.find(b"mdat")
    if spec.codec == "prores_ks":
        assert st["codec_name"] == "prores" and (st["width"], st["height"]) == ODD


# --------------------------------------------------------------------------------------
# timing: variable frame rate, 30000/1001, start offset
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("label,pts,tb", [
    ("vfr", [0, 33, 50, 100, 101, 180, 200, 290], Fraction(1, 1000)),
    ("ntsc-offset", [90090 + i * 1001 for i in range(8)], Fraction(1, 30000)),
    ("vfr-90k", [0, 3003, 4500, 9000, 15015, 16000, 21000, 27000], Fraction(1, 90000)),
])
def test_timestamps_survive_in_every_container(tmp_path, label, pts, tb):
    src = make_source(tmp_path / f"{label}.mp4", pts=pts, time_base=tb)
    _, src_pts, src_tb, _ = source_truth(src)
    # the MP4 muxer may choose a finer time base for the source (1/1000 -> 1/16000): same instants
    assert seconds(src_pts, src_tb) == pytest.approx(seconds(pts, tb), abs=1e-9)
    pts, tb = src_pts, src_tb
    s = run(src, tmp_path / "out", mask_format="ffv1", matte_format="prores")
    for key in ("soft.mask", "soft.heatmap", "soft.matte"):
        _, got, got_tb, _ = decode(s.outputs[key], "gray")
        mkv = s.outputs[key].suffix == ".mkv"
        assert len(got) == len(pts), key
        assert seconds(got, got_tb) == pytest.approx(seconds(pts, tb), abs=5.01e-4 if mkv else 1e-9), key
        if not mkv:
            assert got == pts and got_tb == tb
    webm = run(src, tmp_path / "webm", outputs=["matte"], matte_format="webm").outputs["soft.matte"]
    _, got, got_tb, _ = decode(webm, "rgba", codec="libvpx-vp9")
    assert seconds(got, got_tb) == pytest.approx(seconds(pts, tb), abs=5.01e-4)


# --------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audio_source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("asrc") / "talk.mp4", pts=[i * 1001 for i in range(15)], audio=True)


def test_audio_is_remuxed_into_heatmap_and_matte(audio_source, tmp_path):
    s = run(audio_source, tmp_path, mask_format="mp4", matte_format="prores")
    codec, first, end, n = audio_span(audio_source)
    assert codec == "aac" and n > 5
    for key in ("soft.heatmap", "soft.matte"):
        got_codec, got_first, got_end, got_n = audio_span(s.outputs[key])
        assert got_codec == "aac", key  # copied, not re-encoded
        assert got_n == n, key
        assert got_first == pytest.approx(first, abs=1e-9) and abs((got_end - got_first) - (end - first)) <= 1024 / 44100
        with av.open(str(audio_source)) as c_src, av.open(str(s.outputs[key])) as c_out:  # the same bytes
            a = [bytes(p) for p in c_src.demux(audio=0) if p.size]
            b = [bytes(p) for p in c_out.demux(audio=0) if p.size]
            assert a == b, key
    assert audio_packets(s.outputs["soft.mask"])[0] is None  # the mask is a picture track only


def test_aac_into_webm_is_transcoded_to_opus_and_said(audio_source, tmp_path, caplog):
    _, first, end, _ = audio_span(audio_source)
    with caplog.at_level("WARNING", logger="streammask"):
        s = run(audio_source, tmp_path, outputs=["matte"], matte_format="webm")
    assert "transcoded to libopus" in caplog.text and "aac" in caplog.text
    codec, got_first, got_end, n = audio_span(s.outputs["soft.matte"])
    assert codec == "opus" and n > 5
    assert abs((got_end - got_first) - (end - first)) <= 960 / 48000 + 1024 / 44100  # within one frame of each
    imgs, _, _, _ = decode(s.outputs["soft.matte"], "rgba", codec="libvpx-vp9")
    assert len(imgs) == 15


def test_pcm_is_copied_into_mov_and_transcoded_to_aac_for_mp4(tmp_path, caplog):
    src = make_source(tmp_path / "pcm.mov", pts=[i * 1001 for i in range(15)], audio=True, audio_codec="pcm_s16le")
    _, first, end, _ = audio_span(src)
    with caplog.at_level("WARNING", logger="streammask"):
        s = run(src, tmp_path / "out", outputs=["heatmap", "matte"], matte_format="prores")
    assert "(pcm_s16le) cannot be stored in .mp4; transcoded to aac" in caplog.text
    assert ".mov" not in caplog.text  # the MOV matte holds PCM as it is
    for key, codec in (("soft.heatmap", "aac"), ("soft.matte", "pcm_s16le")):
        got_codec, got_first, got_end, n = audio_span(s.outputs[key])
        assert got_codec == codec and n > 0, key
        assert abs((got_end - got_first) - (end - first)) <= 2 * 1024 / 44100, key  # AAC: priming + last frame


@needs_ffprobe
def test_ffprobe_sees_the_audio(audio_source, tmp_path):
    s = run(audio_source, tmp_path, outputs=["heatmap"])
    src = ffprobe_audio(audio_source)
    out = ffprobe_audio(s.outputs["soft.heatmap"])
    assert len(out) == 1 and out[0]["codec_name"] == "aac"
    assert int(out[0]["nb_read_packets"]) == int(src[0]["nb_read_packets"]) > 0
    assert abs(float(out[0]["duration"]) - float(src[0]["duration"])) <= 1024 / 44100


def test_no_audio_drops_it_and_max_frames_cuts_it(audio_source, tmp_path):
    s = run(audio_source, tmp_path / "none", audio=False)
    for key in ("soft.heatmap", "soft.matte"):
        assert audio_packets(s.outputs[key])[0] is None
    cut = run(audio_source, tmp_path / "cut", outputs=["heatmap"], max_frames=6).outputs["soft.heatmap"]
    _, first, end, _ = audio_span(cut)
    _, src_first, src_end, _ = audio_span(audio_source)
    assert first == pytest.approx(src_first) and src_end > 0.45
    assert 6 * 1001 / 30000 - 1024 / 44100 <= end <= 6 * 1001 / 30000 + 1024 / 44100  # ends with the video


# --------------------------------------------------------------------------------------
# rotation, colour
# --------------------------------------------------------------------------------------
def test_rotated_source_is_upright_in_every_output(tmp_path):
    src = make_source(tmp_path / "phone.mp4", size=(64, 48), rotation=90)
    frames, _, _, ref = source_truth(src)
    assert frames.shape[1:3] == (64, 48)  # upright: portrait
    s = run(src, tmp_path / "out", mask_format="ffv1", matte_format="prores")
    for key in s.outputs:
        with av.open(str(s.outputs[key])) as c:
            st = c.streams.video[0]
            assert (st.codec_context.width, st.codec_context.height) == (48, 64), key
            f = next(c.decode(st))
            assert not (getattr(f, "rotation", 0) or 0), f"{key} carries a rotation on top of rotated pixels"
    masks, _, _, _ = decode(s.outputs["soft.mask"], "gray")
    assert np.abs(masks[0].astype(float) - ref[0] * 255).mean() < 1


@needs_ffmpeg
@pytest.mark.parametrize("rng,matrix", [("tv", "bt709"), ("pc", "bt709"), ("tv", "bt601"), ("pc", "bt601")])
def test_decoding_honours_matrix_and_range_and_outputs_are_tagged_to_match(tmp_path, rng, matrix):
    src = ffmpeg_colour_source(tmp_path / f"{rng}_{matrix}.mp4", rng, matrix, COLOURS)
    frames, _, _, _ = source_truth(src)
    decoded = frames[0, 16, 8::16].astype(int)
    assert np.abs(decoded - COLOURS).max() <= 3, decoded.tolist()
    # the heatmap with a transparent colormap is the frame; the matte's RGB is the frame:
    # decoded by the ffmpeg CLI (which honours the output's tags) they give the colours back
    s = run(src, tmp_path / "out", outputs=["heatmap", "matte"], heatmap_alpha=0.0)
    for key, pix, tol in (("soft.heatmap", "rgb24", 4), ("soft.matte", "rgba", 3)):
        raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(s.outputs[key]), "-frames:v", "1", "-f", "rawvideo",
                              "-pix_fmt", pix, "-"], capture_output=True, check=True).stdout
        img = np.frombuffer(raw, np.uint8).reshape(32, 96, len(pix) - 2 if pix == "rgb24" else 4)
        got = img[16, 8::16, :3].astype(int)
        assert np.abs(got - COLOURS).max() <= tol, (key, got.tolist())


@needs_ffmpeg
@pytest.mark.parametrize("size,matrix", [((1280, 720), "bt709"), ((96, 32), "bt601")])
def test_untagged_sources_hd_as_bt709_sd_as_bt601(tmp_path, size, matrix):
    import cv2

    w, h = size
    img = np.repeat(COLOURS, w // len(COLOURS), 0)[None].repeat(h, 0)
    png = tmp_path / "c.png"
    cv2.imwrite(str(png), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    src = tmp_path / "untagged.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(png), "-frames:v", "1", "-vf",
                    f"scale=out_color_matrix={matrix}:out_range=tv", "-c:v", "libx264", "-pix_fmt", "yuv444p",
                    str(src)], check=True)
    with av.open(str(src)) as c:
        assert next(c.decode(video=0)).colorspace == 2  # unspecified
    frame = next(read_batches(src, batch_size=1)).frames[0]
    step = w // len(COLOURS)
    got = frame[h // 2, step // 2::step][:len(COLOURS)].astype(int)
    assert np.abs(got - COLOURS).max() <= 3, got.tolist()


# --------------------------------------------------------------------------------------
# matte styles and compositing
# --------------------------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    d = tmp_path_factory.mktemp("plate")
    src = make_source(d / "plate.mp4", size=ODD)
    import cv2

    yy, xx = np.mgrid[0:ODD[1], 0:ODD[0]]
    bg = np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
    cv2.imwrite(str(d / "bg.png"), cv2.cvtColor(bg, cv2.COLOR_RGB2BGR))
    return src, source_truth(src), d / "bg.png", bg


def _composite(fg, a, bg):
    return np.rint(fg.astype(np.float64) * a[..., None] + bg.astype(np.float64) * (1 - a[..., None]))


@pytest.mark.parametrize("fmt,min_psnr", [("png", 45), ("png16", 45), ("prores", 38), ("webm", 28)])
def test_straight_matte_recombines_over_a_known_background(plate, tmp_path, fmt, min_psnr):
    src, (frames, _, _, ref), _, bg = plate
    h, w = ref.shape[1:]
    path = run(src, tmp_path, outputs=["matte"], matte_format=fmt).outputs["soft.matte"]
    if FORMATS["matte"][fmt].suffix:
        imgs, _, _, _ = decode(path, "rgba64le" if fmt == "prores" else "rgba",
                               codec="libvpx-vp9" if fmt == "webm" else None)
    else:
        imgs = _sequence(path)[0]
    for img, f, m in zip(imgs, frames, ref):
        img = img[:h, :w].astype(np.float64) / (65535 if img.dtype == np.uint16 else 255)
        got = _composite(img[..., :3] * 255, img[..., 3], bg)
        want = _composite(f, m, bg)
        assert psnr(got, want) >= min_psnr, fmt


def test_premultiplied_solid_background_and_alpha_styles(plate, tmp_path):
    src, (frames, _, _, ref), bg_path, bg = plate
    straight = _sequence(run(src, tmp_path / "s", outputs=["matte"], matte_format="png").outputs["soft.matte"])[0]
    premul = _sequence(run(src, tmp_path / "p", outputs=["matte"], matte_format="png",
                           matte_style="premultiplied").outputs["soft.matte"])[0]
    solid = _sequence(run(src, tmp_path / "g", outputs=["matte"], matte_format="png", matte_style="solid",
                          matte_color="#00ff00").outputs["soft.matte"])[0]
    over = _sequence(run(src, tmp_path / "b", outputs=["matte"], matte_format="png", matte_style="background",
                         background=bg_path).outputs["soft.matte"])[0]
    luma = _sequence(run(src, tmp_path / "a", outputs=["matte"], matte_format="png16",
                         matte_style="alpha").outputs["soft.matte"])[0]
    green = np.broadcast_to(np.array([0, 255, 0], np.uint8), bg.shape)
    for i, (f, m) in enumerate(zip(frames, ref)):
        a = straight[i][..., 3] / 255
        assert premul[i].shape[-1] == 4 and np.array_equal(premul[i][..., 3], straight[i][..., 3])
        # premultiplied + background * (1 - alpha) == straight composite
        assert psnr(premul[i][..., :3] + bg * (1 - a[..., None]), _composite(straight[i][..., :3], a, bg)) >= 48
        assert solid[i].shape[-1] == 3 and psnr(solid[i], _composite(f, m, green)) >= 45
        assert over[i].shape[-1] == 3 and psnr(over[i], _composite(f, m, bg)) >= 45
        assert luma[i].ndim == 2 and luma[i].dtype == np.uint16
        assert np.abs(luma[i] / 65535 - m).max() <= 1 / 65535 + 1e-6


def test_video_background_and_opaque_prores(plate, tmp_path):
    src, (frames, _, _, ref), _, _ = plate
    bg_video = make_source(tmp_path / "bgclip.mp4", size=(90, 60), pts=[0, 1001, 2002])  # shorter: loops
    bg_frames = next(read_batches(bg_video, batch_size=3)).frames
    import cv2

    s = run(src, tmp_path / "o", outputs=["matte"], matte_format="prores", matte_style="background",
            background=bg_video)
    imgs, pts, _, info = decode(s.outputs["soft.matte"], "rgb24")
    assert info["decoded_pix_fmt"].startswith("yuv444p") and len(imgs) == 8  # no alpha plane
    for i, (img, f, m) in enumerate(zip(imgs, frames, ref)):
        bg = cv2.resize(bg_frames[i % 3], ODD, interpolation=cv2.INTER_LINEAR)
        assert psnr(img, _composite(f, m, bg)) >= 38


@pytest.mark.parametrize("kw,match", [
    ({"matte_style": "chroma"}, "matte_style='chroma'"),
    ({"matte_color": "green"}, "matte_color='green'"),
    ({"matte_color": "#12345"}, "matte_color='#12345'"),
    ({"matte_style": "background"}, "background=None"),
    ({"matte_style": "background", "background": "/nonexistent/bg.png"}, "background='/nonexistent/bg.png'"),
    ({"audio": "maybe"}, "audio='maybe'"),
    ({"matte_format": "gif"}, "matte_format='gif'"),
])
def test_bad_output_settings_name_the_parameter(plate, tmp_path, kw, match):
    with pytest.raises(ParameterError, match=match):
        run(plate[0], tmp_path, **kw)
    assert not any(tmp_path.iterdir())


def test_cli_flags_exist():
    from streammask.cli import build_parser

    args = build_parser().parse_args(["run", "x.mp4", "--prompt", "p", "--no-audio", "--matte-style", "solid",
                                      "--matte-color", "#0000ff", "--matte-format", "png16", "--background", "bg.png"])
    assert (args.audio, args.matte_style, args.matte_color, args.matte_format, args.background) == \
        (False, "solid", "#0000ff", "png16", "bg.png")


# --------------------------------------------------------------------------------------
# 10-bit sources
# --------------------------------------------------------------------------------------
def _ten_bit_source(path: Path, w=320, h=64, n=3) -> Path:
    """ProRes 422 HQ (yuv422p10le) of a fine 16-bit gradient: more than 256 levels per channel."""
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = ((xx + yy * w) / (w * h - 1) * 65535).astype(np.uint16)
    img = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 30000)], -1)
    with av.open(str(path), "w") as c:
        s = c.add_stream("prores_ks", rate=NTSC)
        s.width, s.height, s.pix_fmt = w, h, "yuv422p10le"
        s.options = {"profile": "3"}
        encode_frames(c, s, [img] * n, range(n), format="rgb48le", reformat="yuv422p10le")
    return path


def test_ten_bit_source_does_not_band_in_prores_matte(tmp_path):
    src = _ten_bit_source(tmp_path / "deep.mov")
    batch = next(read_batches(src, batch_size=3, deep=True))
    assert batch.frames16 is not None and batch.frames16.dtype == np.uint16
    assert next(read_batches(make_source(tmp_path / "eight.mp4"), deep=True)).frames16 is None  # 8-bit source
    s = run(src, tmp_path / "out", outputs=["matte"], matte_format="prores")
    imgs, _, _, _ = decode(s.outputs["soft.matte"], "rgba64le")
    # the matte's RGB is the source's within 10-bit precision (one 10-bit level = 64 in 16 bits);
    # through 8-bit RGB the mean error is ~216 (measured), an 8-bit level being 257
    err = np.abs(imgs[0][..., :3].astype(int) - batch.frames16[0].astype(int))
    assert err.mean() < 65535 / 1023
    png = run(src, tmp_path / "png16", outputs=["matte"], matte_format="png16").outputs["soft.matte"]
    rgb16 = _sequence(png)[0][0][..., :3]
    assert np.array_equal(rgb16, batch.frames16[0])  # lossless: the decoded 16-bit RGB itself
    assert len(np.unique(rgb16[..., 1])) > 256  # more levels than 8 bits hold


STYLE_CHANNELS = {"straight": 4, "premultiplied": 4, "solid": 3, "background": 3, "alpha": 1}


@pytest.mark.parametrize("style", list(STYLE_CHANNELS))
@pytest.mark.parametrize("fmt", list(FORMATS["matte"]))
def test_every_style_in_every_matte_format_at_an_odd_size(plate, tmp_path, style, fmt):
    src, (frames, src_pts, _, ref), bg_path, bg = plate
    kw = {"background": bg_path} if style == "background" else {}
    path = run(src, tmp_path, outputs=["matte"], matte_format=fmt, matte_style=style, max_frames=3,
               **kw).outputs["soft.matte"]
    spec = FORMATS["matte"][fmt]
    channels = STYLE_CHANNELS[style]
    h, w = ref.shape[1:]
    if spec.suffix == "":
        imgs, pts, meta = _sequence(path)
        assert (imgs[0].shape[-1] if imgs[0].ndim == 3 else 1) == channels == meta["channels"]
        top = 1.0 if spec.is_float else 65535 if spec.bits == 16 else 255
        got = imgs[0].astype(np.float64) / top * 255
    else:
        read = {4: "rgba", 3: "rgb24", 1: "gray"}[channels]
        imgs, pts, tb, info = decode(path, read, codec="libvpx-vp9" if fmt == "webm" else None)
        assert ("yuva" in info["decoded_pix_fmt"]) == (channels == 4), info
        got = imgs[0][:h, :w].astype(np.float64)
        if fmt == "webm":  # Matroska: milliseconds
            assert seconds(pts, tb) == pytest.approx([p / 30000 for p in src_pts[:3]], abs=5.01e-4)
            pts = src_pts[:3]
    assert pts == src_pts[:3] and len(imgs) == 3
    a = ref[0]
    want = {"straight": lambda: np.dstack([frames[0], a * 255]),
            "premultiplied": lambda: np.dstack([frames[0] * a[..., None], a * 255]),
            "solid": lambda: _composite(frames[0], a, np.array([0, 255, 0])),
            "background": lambda: _composite(frames[0], a, bg),
            "alpha": lambda: a * 255}[style]()
    # VP9 is 4:2:0 and lossy: the background's hard stripes lose chroma detail
    assert psnr(got.reshape(want.shape), want) >= (25 if fmt == "webm" else 36), (style, fmt)


def test_cli_output_flags_end_to_end(audio_source, tmp_path, tiny_model_dir, capsys):
    from streammask.cli import main

    out = tmp_path / "cli"
    code = main(["run", str(audio_source), "--prompt", "person", "--model", str(tiny_model_dir), "--device", "cpu",
                 "-o", str(out), "--outputs", "heatmap,matte", "--no-audio", "--matte-style", "alpha",
                 "--matte-format", "png16", "--max-frames", "4", "-q"])
    assert code == 0
    assert audio_packets(out / "talk.soft.heatmap.mp4")[0] is None
    imgs, pts, meta = _sequence(out / "talk.soft.matte")
    assert len(imgs) == 4 and imgs[0].ndim == 2 and imgs[0].dtype == np.uint16 and meta["channels"] == 1
    code = main(["run", str(audio_source), "--prompt", "person", "--model", str(tiny_model_dir), "-o", str(out),
                 "--matte-style", "solid", "--matte-color", "teal", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "matte_color='teal'" in err[0]


@pytest.mark.parametrize("style", list(STYLE_CHANNELS))
def test_render_matte_array_equals_the_deferred_batch(plate, style):
    _, (frames, _, _, _), _, bg = plate
    pipe = MaskPipeline(SEG, prompt="red")
    x = pipe.to_device(frames[:3])
    res = pipe.process(x)["soft"]
    kw = dict(bits={"matte": 16}, matte_style=style, matte_color=(10, 20, 30), background=np.stack([bg] * 3))
    whole = pipe.render(x, res, ("matte",), host_frames=frames[:3], **kw)["matte"]
    deferred = pipe.render(x, res, ("matte",), host_frames=frames[:3], defer_matte=True, **kw)["matte"]
    assert isinstance(whole, np.ndarray) and whole.dtype == np.uint16
    assert whole.shape[-1] == STYLE_CHANNELS[style] and len(deferred) == 3
    assert np.array_equal(whole, np.stack(list(deferred.frames())))
