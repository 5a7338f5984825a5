"""Shared fixtures: a tiny random-weight CLIPSeg saved with save_pretrained, test clips."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from streammask.model.threads import torch_threads  # noqa: E402  (after the environment: the hub reads it on import)

DATA = Path(__file__).parent / "data"
CARPHONE = DATA / "carphone_pristine.mp4"  # 176x144, 120 frames at 30000/1001 (copied from shared/media)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs_cuda: no CUDA device on this machine")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight CLIPSeg (352x352 input, 16x16 patches, tiny widths) + tokenizer on disk."""
    from streammask.testing import save_random_clipseg

    return save_random_clipseg(tmp_path_factory.mktemp("clipseg") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny model loaded through the same code path as ``--model PATH``."""
    from streammask import load_clipseg

    return load_clipseg(tiny_model_dir, device="cpu")


@pytest.fixture
def one_thread():
    """The test runs with one torch thread. The tiny SAM 3 is hundreds of small ops per frame: on the shared 2-core
    machine, two threads spend most of their time waiting for each other (measured: 87 s vs 5 s for the same test),
    one thread does not."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory) -> Path:
    """A random-weight SAM 3 video model (tiny widths, 112x112 input, 32x32 mask logits) + tokenizer on disk."""
    from streammask.testing import save_random_sam3_video

    with torch_threads(1):
        return save_random_sam3_video(tmp_path_factory.mktemp("sam3") / "tiny", image_size=112)


@pytest.fixture(scope="session")
def tiny_sam3(tiny_sam3_dir):
    """The tiny SAM 3 loaded through the same code path as ``--model PATH`` (at most 4 objects at once)."""
    from streammask.model.sam3 import load_sam3

    return load_sam3(tiny_sam3_dir, device="cpu", sam3_max_objects=4)


@pytest.fixture
def carphone(tmp_path) -> Path:
    dst = tmp_path / "carphone.mp4"
    shutil.copy(CARPHONE, dst)
    return dst


GOP_RATE = Fraction(30000, 1001)


def encode_frames(container, stream, frames, pts=None, time_base=None, *, format: str = "rgb24",
                  reformat: str | None = None) -> None:
    """Encode ``frames`` into ``stream``, mux every packet into ``container`` and flush the encoder.

    Args:
        frames: arrays, each (H, W, 3) of ``format`` (uint8 ``rgb24`` or uint16 ``rgb48le``), or ``av`` frames
            (video or audio), encoded as they are.
        pts: one pts per frame; ``None`` keeps the frames' own.
        time_base: set on every frame when given.
        format: the pixel format of the arrays.
        reformat: the pixel format the arrays are converted to before encoding (e.g. ``yuv422p10le``).
    """
    import av

    for frame, p in zip(frames, itertools.repeat(None) if pts is None else pts):
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(frame, format=format)
            if reformat is not None:
                frame = frame.reformat(format=reformat)
        if p is not None:
            frame.pts = p
        if time_base is not None:
            frame.time_base = time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_synthetic_clip(path: Path, *, frames: int = 12, size=(64, 48), rate=Fraction(30000, 1001),
                         codec: str = "libx264", pts_step: int | None = None) -> Path:
    """A moving bright square on a gradient; returns ``path``."""
    import av

    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        tb = Fraction(1, rate.numerator) if pts_step is None else Fraction(1, 1000)
        s.time_base = tb
        s.codec_context.time_base = tb
        step = rate.denominator if pts_step is None else pts_step
        yy, xx = np.mgrid[0:h, 0:w]

        def images():
            for i in range(frames):
                img = np.zeros((h, w, 3), np.uint8)
                img[..., 0] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
                img[..., 2] = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
                x0 = 4 + 2 * i
                img[10:26, x0:x0 + 16] = 255
                yield img

        encode_frames(c, s, images(), [i * step for i in range(frames)], tb)
    return path


def write_gop_clip(path: Path, *, frames: int = 40, gop: int = 8, size=(96, 64), time_base=None) -> Path:
    """Moving shapes with a keyframe every ``gop`` frames and B-frames, so a segment really seeks."""
    import av

    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    tb = time_base or Fraction(1, GOP_RATE.numerator)
    step = int(round(1 / GOP_RATE / tb))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=GOP_RATE)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.time_base = tb
        s.codec_context.time_base = tb
        s.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "2"}
        yy, xx = np.mgrid[0:h, 0:w]
        imgs = []
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (xx * 255 // (w - 1)).astype(np.uint8)
            img[..., 1] = ((xx + yy + 7 * i) % 64 * 4).astype(np.uint8)
            img[10 + i % 20:40 + i % 20, 5 + i:35 + i] = 255
            imgs.append(img)
        encode_frames(c, s, imgs, [i * step for i in range(frames)], tb)
    return path


def write_mjpeg_avi(path: Path, frames: int = 20, size=(64, 48)) -> Path:
    """MJPEG in AVI: each packet is one JPEG, so a damaged packet makes the decoder raise."""
    import av

    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuvj420p"
        images = (np.random.RandomState(i).randint(0, 255, (h, w, 3), np.uint8) for i in range(frames))
        encode_frames(c, s, images, range(frames))
    return path


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, options: str, *, what: str = "a tmpfs"):
    """Mount a tmpfs with ``options`` (e.g. ``"ro,size=64k"``) on the new folder ``mnt`` for the ``with`` block and
    lazily unmount it after; skips the test where there is no ``mount`` or no right to mount (``what`` names the
    mount in the skip reason)."""
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount {what} here (needs root and mount rights; CI may not allow it): "
                    f"{r.stderr.strip() or 'mount failed'}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def synthetic_clip(tmp_path) -> Path:
    return write_synthetic_clip(tmp_path / "synthetic.mp4")
