"""Faults (issue 9): a real disk-full on a small tmpfs, and a stage crashing mid-run (the decode thread, a variant's
post-processing, an encoder thread). Each run stops within a second or two, removes its temporaries, leaves nothing
under a final name, hands the caller the original exception type, and the CLI's exit status says what happened."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import streammask.pipeline.run as pipeline_module
from streammask import process_video
from streammask.cli import main
from streammask.errors import OutputError
from streammask.variants import get_variant
from streammask.io.writers import VideoWriter

from conftest import mounted_tmpfs, write_synthetic_clip

REPO = Path(__file__).resolve().parents[1]
STOP_WITHIN_S = 2.0


class Boom(RuntimeError):
    """The injected fault."""


@pytest.fixture(scope="module")
def clip_48(tmp_path_factory) -> Path:
    return write_synthetic_clip(tmp_path_factory.mktemp("faults") / "clip.mp4", frames=48, size=(64, 48))


def _crash_decode(monkeypatch, after: int, fired: dict) -> None:
    real = pipeline_module.read_batches

    def read_batches(*args, **kwargs):
        n = 0
        for batch in real(*args, **kwargs):
            if n >= after:
                fired["t"] = time.monotonic()
                raise Boom(f"decoder died after {n} frames")
            n += len(batch)
            yield batch

    monkeypatch.setattr(pipeline_module, "read_batches", read_batches)


def _crash_postprocess(monkeypatch, after: int, fired: dict) -> None:
    cls = type(get_variant("soft"))
    real = cls.postprocess
    calls = {"n": 0}

    def postprocess(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            fired["t"] = time.monotonic()
            raise Boom(f"post-processing died at batch {calls['n']}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "postprocess", postprocess)


def _crash_encoder(monkeypatch, after: int, fired: dict) -> None:
    real = VideoWriter.write
    calls = {"n": 0}

    def write(self, frames, pts):
        if self.path.name.endswith(".matte.mov"):
            calls["n"] += 1
            if calls["n"] > after:
                fired["t"] = time.monotonic()
                raise Boom(f"encoder died at batch {calls['n']}")
        return real(self, frames, pts)

    monkeypatch.setattr(VideoWriter, "write", write)


CRASHES = [("decode thread", _crash_decode, 16), ("variant post-process", _crash_postprocess, 3),
           ("encoder thread", _crash_encoder, 3)]


@pytest.mark.parametrize("stage,inject,after", CRASHES)
def test_stage_crash_mid_run_stops_fast_and_cleans_up(tmp_path, monkeypatch, tiny_model, clip_48, stage, inject,
                                                      after):
    fired: dict = {}
    inject(monkeypatch, after, fired)
    out = tmp_path / "out"
    with pytest.raises(Boom):
        try:
            process_video(clip_48, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["mask", "heatmap", "matte"],
                          progress=False, batch_size=4)
        finally:
            stopped = time.monotonic() - fired["t"] if "t" in fired else None
    assert stopped is not None, f"{stage}: the fault never fired"
    print(f"{stage}: stopped {stopped:.3f} s after the fault")
    assert stopped < STOP_WITHIN_S, (stage, stopped)
    assert not out.exists() or list(out.iterdir()) == [], (stage, sorted(p.name for p in out.iterdir()))


@pytest.mark.parametrize("stage,inject,after", CRASHES)
def test_stage_crash_cli_exit_1_one_line(tmp_path, monkeypatch, capsys, tiny_model_dir, clip_48, stage, inject,
                                         after):
    inject(monkeypatch, after, {})
    out = tmp_path / "out"
    rc = main(["run", str(clip_48), "--prompt", "x", "--model", str(tiny_model_dir), "--device", "cpu",
               "--batch-size", "4", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1, (stage, err)
    assert len(lines) == 1 and lines[0].startswith("streammask: failed: Boom:") and "removed" in lines[0], lines
    assert "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_stage_crash_keep_partial_finalizes(tmp_path, monkeypatch, tiny_model, clip_48):
    import av

    _crash_postprocess(monkeypatch, 3, {})
    out = tmp_path / "out"
    with pytest.raises(Boom):
        process_video(clip_48, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["mask", "matte"],
                      progress=False, batch_size=4, keep_partial=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["clip.soft.mask.mp4", "clip.soft.matte.mov"]
    for n in names:
        with av.open(str(out / n)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 12  # the 3 batches before the fault


# ---- a real disk-full: a small tmpfs --------------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "size=192k") as mnt:
        yield mnt


@pytest.fixture(scope="module")
def clip_300(tmp_path_factory) -> Path:
    return write_synthetic_clip(tmp_path_factory.mktemp("enospc") / "big.mp4", frames=300, size=(64, 48))


@pytest.mark.parametrize("formats", [
    ["--outputs", "mask,matte"],  # H.264 + ProRes 4444
    ["--outputs", "mask,matte", "--mask-format", "png", "--matte-format", "png"],  # PNG sequences
])
def test_disk_full_on_a_real_tmpfs(small_tmpfs, capfd, tiny_model_dir, clip_300, formats):
    out = small_tmpfs / "out"
    rc = main(["run", str(clip_300), "--prompt", "x", "--model", str(tiny_model_dir), "--device", "cpu",
               "-o", str(out), "-q", *formats])
    err = capfd.readouterr().err  # file-descriptor level: a C library writing to stderr would show here
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("streammask: error:"), lines
    assert "No space left on device" in lines[0], lines
    assert "Traceback" not in err
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == [], "a partial output was left behind"


def test_disk_full_api_raises_output_error(small_tmpfs, tiny_model, clip_300):
    out = small_tmpfs / "out"
    with pytest.raises(OutputError, match="No space left on device") as info:
        process_video(clip_300, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["matte"], progress=False)
    assert isinstance(info.value, OSError)
    assert not out.exists() or list(out.iterdir()) == []
