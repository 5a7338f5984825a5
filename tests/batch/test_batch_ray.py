"""The Ray engine on a local cluster started here (CPU only, tiny random model): same outputs as the local engine."""

from __future__ import annotations

import builtins
import json
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from streammask import InvalidVideoError, run_batch
from streammask.batch import DONE_NAME, REPORT_NAME
from streammask.batch.ray import RayNotInstalledError, is_retryable

from conftest import write_gop_clip, write_synthetic_clip
from ray_crash_hook import CRASH_DIR_ENV, arm

try:
    import ray
except ImportError:  # the engine is an optional extra
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'streammask[ray]')")
KW = dict(prompt="person", outputs=["mask", "matte"], mask_format="ffv1", matte_format="prores", batch_size=4, device="cpu",
          progress=False)


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory) -> Path:
    """Where a test arms a worker crash (:mod:`ray_crash_hook`)."""
    return tmp_path_factory.mktemp("ray-crash")


@pytest.fixture(scope="module")
def ray_cluster(crash_dir):
    if ray is None:
        pytest.skip("ray is not installed (pip install 'streammask[ray]')")
    tests = Path(__file__).resolve().parents[1]
    root = str(tests.parent)  # the workers import this checkout of streammask (and the crash hook from tests/)
    path = os.pathsep.join([root, str(tests), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                       CRASH_DIR_ENV: str(crash_dir)},
                          "worker_process_setup_hook": "ray_crash_hook.install"})
    yield ray
    ray.shutdown()


def _decode(path: Path, fmt: str):
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format=fmt)) for f in c.decode(video=0)]
    return [p for p, _ in frames], np.stack([a for _, a in frames])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same_outputs(a: Path, b: Path, name: str) -> None:
    for suffix, fmt in ((".soft.mask.mkv", "gray"), (".soft.matte.mov", "rgba64le")):
        pts_a, x = _decode(a / f"{name}{suffix}", fmt)
        pts_b, y = _decode(b / f"{name}{suffix}", fmt)
        assert pts_a == pts_b
        np.testing.assert_array_equal(x, y)


@needs_ray
def test_ray_batch_equals_local_and_resumes(ray_cluster, tmp_path, tiny_model, tiny_model_dir):
    clips = tmp_path / "clips"
    (clips / "a").mkdir(parents=True)
    write_synthetic_clip(clips / "a" / "one.mp4", frames=6)
    write_synthetic_clip(clips / "two.mp4", frames=9)
    (clips / "bad.mp4").write_bytes(os.urandom(3000))
    local = run_batch([clips], out_dir=tmp_path / "local", segmenter=tiny_model, model=tiny_model_dir, **KW)
    rep = run_batch([clips], out_dir=tmp_path / "ray", engine="ray", actors=2, model=tiny_model_dir,
                    **KW)
    by_name = {Path(r.path).name: r for r in rep.results}
    assert {n: r.status for n, r in by_name.items()} == {"one.mp4": "ok", "two.mp4": "ok", "bad.mp4": "failed"}
    assert by_name["bad.mp4"].error.startswith("InvalidVideoError: ") and rep.exit_code == 1
    assert (by_name["one.mp4"].frames, by_name["two.mp4"].frames) == (6, 9)
    rows = _rows(tmp_path / "ray" / REPORT_NAME)
    assert sorted(Path(r["path"]).name + ":" + r["status"] for r in rows) == ["bad.mp4:failed", "one.mp4:ok",
                                                                             "two.mp4:ok"]
    # same layout and the same outputs as the local engine
    _same_outputs(tmp_path / "local" / "a" / "one", tmp_path / "ray" / "a" / "one", "one")
    _same_outputs(tmp_path / "local" / "two", tmp_path / "ray" / "two", "two")
    assert (tmp_path / "ray" / "two" / DONE_NAME).is_file() and not (tmp_path / "ray" / "bad" / DONE_NAME).exists()
    # resume across engines: the local engine skips what Ray finished and retries only the broken clip
    again = run_batch([clips], out_dir=tmp_path / "ray", segmenter=tiny_model, model=tiny_model_dir, **KW)
    assert sorted(Path(r.path).name + ":" + r.status for r in again.results) == [
        "bad.mp4:failed", "one.mp4:skipped", "two.mp4:skipped"]


@needs_ray
def test_ray_segments_equal_one_pass(ray_cluster, tmp_path, tiny_model, tiny_model_dir):
    clip = write_gop_clip(tmp_path / "in" / "long.mp4", frames=40)
    local = run_batch([clip], out_dir=tmp_path / "local", segmenter=tiny_model, model=tiny_model_dir, **KW)
    assert local.results[0].status == "ok"
    # 0.45 s at 29.97 = 13 frames -> 4 segments on the batch grid, 2 actors, 3 warm-up frames
    rep = run_batch([clip], out_dir=tmp_path / "ray", engine="ray", actors=2, model=tiny_model_dir,
                    segment_seconds=0.45, overlap_frames=3, **KW)
    assert [(r.status, r.frames) for r in rep.results] == [("ok", 40)], rep.results[0].error
    _same_outputs(tmp_path / "local" / "long", tmp_path / "ray" / "long", "long")
    assert sorted(p.name for p in (tmp_path / "ray" / "long").iterdir()) == [
        DONE_NAME, "long.soft.mask.mkv", "long.soft.matte.mov"]  # segment folders removed
    # the local engine skips it: the completion record is the same
    assert run_batch([clip], out_dir=tmp_path / "ray", segmenter=tiny_model, model=tiny_model_dir, **KW).results[0].status == "skipped"


def _crash_clips(tmp_path):
    """crash.mp4 (9 frames, the longest: runs first; 3 batches of 4, dies at the 2nd) and fine.mp4 (6 frames)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    return clips, write_synthetic_clip(clips / "crash.mp4", frames=9), write_synthetic_clip(clips / "fine.mp4", frames=6)


def _run_ray_with_crash(crash_dir, crash, clips, out, model_dir, *, max_retries):
    """Run the batch on one Ray actor with ``crash``'s worker armed to die mid-task; check that it did."""
    marker = arm(crash_dir, crash)
    try:
        rep = run_batch([clips], out_dir=out, engine="ray", actors=1, model=model_dir, max_retries=max_retries, **KW)
    finally:
        crashed = not marker.exists()
        marker.unlink(missing_ok=True)
    assert crashed, "the armed worker crash did not happen"
    return rep


@needs_ray
def test_ray_retries_a_task_whose_worker_process_died(ray_cluster, crash_dir, tmp_path, tiny_model, tiny_model_dir):
    clips, crash, _ = _crash_clips(tmp_path)
    local = run_batch([clips], out_dir=tmp_path / "local", segmenter=tiny_model, model=tiny_model_dir, **KW)
    assert [r.status for r in local.results] == ["ok", "ok"]
    rep = _run_ray_with_crash(crash_dir, crash, clips, tmp_path / "ray", tiny_model_dir, max_retries=1)
    assert [(Path(r.path).name, r.status, r.frames, r.error) for r in rep.results] == [
        ("crash.mp4", "ok", 9, None), ("fine.mp4", "ok", 6, None)]
    assert rep.exit_code == 0
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "ray" / REPORT_NAME)}
    assert {n: (r["status"], r["frames"], r["error"]) for n, r in rows.items()} == {
        "crash.mp4": ("ok", 9, None), "fine.mp4": ("ok", 6, None)}
    for name in ("crash", "fine"):  # the retry replaced the dead worker's partial outputs
        _same_outputs(tmp_path / "local" / name, tmp_path / "ray" / name, name)
        assert sorted(p.name for p in (tmp_path / "ray" / name).iterdir()) == [
            DONE_NAME, f"{name}.soft.mask.mkv", f"{name}.soft.matte.mov"]


@needs_ray
def test_ray_without_retries_reports_the_crash_and_goes_on(ray_cluster, crash_dir, tmp_path, tiny_model,
                                                            tiny_model_dir):
    clips, crash, fine = _crash_clips(tmp_path)
    run_batch([fine], out_dir=tmp_path / "local", segmenter=tiny_model, model=tiny_model_dir, **KW)
    rep = _run_ray_with_crash(crash_dir, crash, clips, tmp_path / "ray", tiny_model_dir, max_retries=0)
    by_name = {Path(r.path).name: r for r in rep.results}
    assert {n: r.status for n, r in by_name.items()} == {"crash.mp4": "failed", "fine.mp4": "ok"}
    error = by_name["crash.mp4"].error
    assert "worker process died" in error and "after 1 attempt (max_retries=0)" in error, error
    assert rep.exit_code == 1 and by_name["fine.mp4"].frames == 6
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "ray" / REPORT_NAME)}
    assert (rows["crash.mp4"]["status"], rows["crash.mp4"]["error"]) == ("failed", error)
    assert not (tmp_path / "ray" / "crash" / DONE_NAME).exists()
    assert list((tmp_path / "ray" / "crash").iterdir()) == []  # the dead worker's temporaries are removed
    # the dead actor was replaced: the next clip ran, with the local engine's outputs
    _same_outputs(tmp_path / "local" / "fine", tmp_path / "ray" / "fine", "fine")


def test_ray_missing_is_one_clear_error(tmp_path, tiny_model_dir, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    clip = write_synthetic_clip(tmp_path / "c.mp4", frames=2)
    with pytest.raises(RayNotInstalledError, match=r"pip install 'streammask\[ray\]'"):
        run_batch([clip], out_dir=tmp_path / "out", engine="ray", model=tiny_model_dir, **KW)
    from streammask.cli import main

    code = main(["batch", str(clip), "--prompt", "x", "-o", str(tmp_path / "out2"), "--engine", "ray", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "streammask[ray]" in err[0]


def test_retry_policy():
    assert not is_retryable(InvalidVideoError("corrupt"))  # the input: it would fail again
    assert is_retryable(RuntimeError("CUDA out of memory"))
    assert is_retryable(OSError("disk hiccup"))

    class Wrapped(Exception):  # ray.exceptions.RayTaskError carries the task's exception as .cause
        def __init__(self, cause):
            super().__init__(str(cause))
            self.cause = cause

    assert not is_retryable(Wrapped(InvalidVideoError("x"))) and is_retryable(Wrapped(MemoryError()))


@needs_ray
def test_ray_segment_join_has_the_source_audio_once(ray_cluster, tmp_path, tiny_model, tiny_model_dir):
    from sources import make_source

    (tmp_path / "in").mkdir()
    clip = make_source(tmp_path / "in" / "talk.mp4", pts=[i * 1001 for i in range(24)], audio=True)
    kw = {**KW, "outputs": ["matte"]}
    local = run_batch([clip], out_dir=tmp_path / "local", segmenter=tiny_model, model=tiny_model_dir, **kw)
    rep = run_batch([clip], out_dir=tmp_path / "ray", engine="ray", actors=2, model=tiny_model_dir,
                    segment_seconds=0.3, overlap_frames=2, **kw)
    assert [(r.status, r.frames) for r in rep.results] == [("ok", 24)], rep.results[0].error

    def audio(path):
        with av.open(str(path)) as c:
            return [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.size]

    one, joined = audio(local.results[0].outputs["soft.matte"]), audio(rep.results[0].outputs["soft.matte"])
    assert joined and joined == one  # once, the same packets and timestamps as one pass


def test_actor_loads_the_batch_model_options(tiny_model_dir):
    """The actor class itself (no cluster needed): the batch's dtype and speed options reach its model."""
    from streammask.model import attention_implementation
    from streammask.model.options import model_speed_options
    from streammask.batch.ray import MaskWorker

    base = {"attn_implementation": "eager", "channels_last": False, "compile": False, "unrelated": 1}
    worker = MaskWorker(str(tiny_model_dir), None, "cpu", "int8", model_speed_options(base))
    assert worker.segmenter.quantized == "int8"
    assert attention_implementation(worker.segmenter.model) == "eager"
