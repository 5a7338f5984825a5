"""Local batch engine: folders, manifests, failure isolation, JSONL report, resume."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import av
import pytest

from streammask import PipelineFileError
from streammask.batch.jobs import DONE_NAME, REPORT_NAME, plan_batch
from streammask.cli.batch import add_batch_parser, run_batch_command
from streammask.batch.local import run_batch

from conftest import write_synthetic_clip

FAST = dict(outputs=["mask"], batch_size=4, progress=False)


def _clip(path: Path, frames: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_synthetic_clip(path, frames=frames, size=(64, 48))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture
def clip_folder(tmp_path) -> Path:
    root = tmp_path / "clips"
    _clip(root / "a" / "shot.mp4")
    _clip(root / "b" / "shot.mp4", frames=3)  # same name, other folder
    (root / "b" / "broken.mp4").write_bytes(os.urandom(2000))  # not a video
    (root / "notes.txt").write_text("not a clip")
    return root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streammask")
    add_batch_parser(parser.add_subparsers(dest="command"))
    return parser


def _cli(*argv: str) -> int:
    args = _parser().parse_args(["batch", *argv])
    return run_batch_command(args)


def test_folder_batch_isolates_failure_and_resumes(clip_folder, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out"
    common = [str(clip_folder), "--prompt", "person", "--model", str(tiny_model_dir), "--device", "cpu", "-o", str(out),
              "--outputs", "mask", "--batch-size", "4"]
    assert _cli(*common) == 1
    captured = capsys.readouterr()
    assert "batch" in captured.err and "clip" in captured.err  # the bar over clips
    assert "2 ok, 0 skipped (already done), 1 failed" in captured.out
    rows = _rows(out / REPORT_NAME)
    by_path = {Path(r["path"]).relative_to(clip_folder).as_posix(): r for r in rows}
    assert set(by_path) == {"a/shot.mp4", "b/shot.mp4", "b/broken.mp4"}
    bad = by_path["b/broken.mp4"]
    assert bad["status"] == "failed" and bad["error"].startswith("InvalidVideoError: ") and bad["outputs"] == {}
    for rel, frames in (("a/shot.mp4", 4), ("b/shot.mp4", 3)):
        row = by_path[rel]
        assert row["status"] == "ok" and row["error"] is None and row["frames"] == frames and row["seconds"] > 0
        mask = Path(row["outputs"]["soft.mask"])
        assert mask.parent == out / Path(rel).with_suffix("") and mask.name == "shot.soft.mask.mp4"
        assert _frames(mask) == frames
        assert (mask.parent / DONE_NAME).is_file()
    assert not (out / "b" / "broken" / DONE_NAME).exists()
    # nothing outside the clips' subfolders but the report
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", REPORT_NAME]

    # re-run: the finished clips are skipped, only the broken one is tried again
    mtime = (out / "a" / "shot" / "shot.soft.mask.mp4").stat().st_mtime_ns
    assert _cli(*common, "-q") == 1
    rows = _rows(out / REPORT_NAME)[3:]
    assert {Path(r["path"]).name + ":" + r["status"] for r in rows} == {"shot.mp4:skipped", "broken.mp4:failed"}
    assert [r["frames"] for r in rows if r["status"] == "skipped"] == [4, 3]
    assert (out / "a" / "shot" / "shot.soft.mask.mp4").stat().st_mtime_ns == mtime

    # the broken clip is fixed: only it runs, exit 0
    _clip(clip_folder / "b" / "broken.mp4", frames=2)
    assert _cli(*common, "-q") == 0
    rows = _rows(out / REPORT_NAME)[6:]
    assert sorted(r["status"] for r in rows) == ["ok", "skipped", "skipped"]
    assert _frames(out / "b" / "broken" / "broken.soft.mask.mp4") == 2

    # a changed setting re-processes everything; --force re-does everything
    assert _cli(*common, "-q", "--soft-threshold", "0.2") == 0
    assert [r["status"] for r in _rows(out / REPORT_NAME)[9:]] == ["ok"] * 3
    assert _cli(*common, "-q", "--soft-threshold", "0.2") == 0
    assert [r["status"] for r in _rows(out / REPORT_NAME)[12:]] == ["skipped"] * 3
    assert _cli(*common, "-q", "--soft-threshold", "0.2", "--force") == 0
    assert [r["status"] for r in _rows(out / REPORT_NAME)[15:]] == ["ok"] * 3


def test_changed_input_or_missing_output_reprocesses(tmp_path, tiny_model):
    clip = _clip(tmp_path / "in" / "one.mp4")
    out = tmp_path / "out"
    first = run_batch([clip], out_dir=out, segmenter=tiny_model, prompt="person", **FAST)
    assert [r.status for r in first.results] == ["ok"] and first.exit_code == 0
    assert first.results[0].outputs["soft.mask"].endswith(os.path.join("out", "one", "one.soft.mask.mp4"))
    assert [r.status for r in run_batch([clip], out_dir=out, segmenter=tiny_model, prompt="person", **FAST).results] == ["skipped"]
    _clip(clip, frames=5)  # new content: size / mtime differ
    again = run_batch([clip], out_dir=out, segmenter=tiny_model, prompt="person", **FAST)
    assert [(r.status, r.frames) for r in again.results] == [("ok", 5)]
    (out / "one" / "one.soft.mask.mp4").unlink()  # an output went missing
    assert [r.status for r in run_batch([clip], out_dir=out, segmenter=tiny_model, prompt="person", **FAST).results] == ["ok"]
    # a different prompt, variant set or output kind is a different job
    assert run_batch([clip], out_dir=out, segmenter=tiny_model, prompt="car", **FAST).results[0].status == "ok"
    kw = dict(FAST, outputs=["mask", "matte"], matte_format="png")
    assert run_batch([clip], out_dir=out, segmenter=tiny_model, prompt="car", **kw).results[0].status == "ok"
    assert run_batch([clip], out_dir=out, segmenter=tiny_model, prompt="car", **kw).results[0].status == "skipped"


def test_csv_manifest_with_overrides(tmp_path, tiny_model):
    _clip(tmp_path / "m" / "x" / "a.mp4")
    _clip(tmp_path / "m" / "y" / "a.mp4", frames=3)
    manifest = tmp_path / "m" / "jobs.csv"
    manifest.write_text("path,prompt,variants,outputs\n"
                        "x/a.mp4,sky,,\n"
                        "y/a.mp4,,soft,mask\n"
                        f"{tmp_path / 'm' / 'x' / 'a.mp4'},car,mixlab,mask\n"
                        "gone.mp4,sky,,\n")
    out = tmp_path / "out"
    rep = run_batch([manifest], out_dir=out, segmenter=tiny_model, prompt="person", variants={"mixlab": {"blur": 1.0}},
                    **FAST)
    # the third row names the first clip again with other settings: same subfolder -> reported, not overwritten
    assert [r.status for r in rep.results] == ["ok", "ok", "failed", "failed"]
    assert "already writes there" in rep.results[2].error and rep.exit_code == 1
    assert rep.results[3].error.startswith("SourceNotFoundError: ") and "gone.mp4" in rep.results[3].error
    rec_x = json.loads((out / "x" / "a" / DONE_NAME).read_text())
    rec_y = json.loads((out / "y" / "a" / DONE_NAME).read_text())
    assert rec_x["settings"]["prompt"] == "sky" and list(rec_x["settings"]["variants"]) == ["mixlab"]
    assert rec_x["settings"]["variants"]["mixlab"]["blur"] == 1.0  # run-wide variant params still apply
    assert rec_y["settings"]["prompt"] == "person" and list(rec_y["settings"]["variants"]) == ["soft"]
    assert sorted(p.name for p in (out / "y" / "a").iterdir()) == [DONE_NAME, "a.soft.mask.mp4"]
    assert (out / "x" / "a" / "a.mixlab.mask.mp4").is_file()


def test_jsonl_manifest_prompts_and_subfolder(tmp_path, tiny_model):
    clip = _clip(tmp_path / "v" / "shot.mov")
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(
        json.dumps({"path": "v/shot.mov", "prompt": "person", "out_dir": "person"}) + "\n\n"
        + json.dumps({"path": str(clip), "prompt": "sky", "variants": {"essentials": {"dilate": 1}},
                      "out_dir": "../../sky"}) + "\n")
    out = tmp_path / "out"
    rep = run_batch([manifest], out_dir=out, segmenter=tiny_model, **FAST)
    assert [r.status for r in rep.results] == ["ok", "ok"]
    assert (out / "person" / "shot.soft.mask.mp4").is_file()
    assert (out / "sky" / "shot.essentials.mask.mp4").is_file()  # '..' cannot leave out_dir
    rec = json.loads((out / "sky" / DONE_NAME).read_text())
    assert rec["settings"]["prompt"] == "sky" and rec["settings"]["variants"]["essentials"]["dilate"] == 1
    assert [r.status for r in run_batch([manifest], out_dir=out, segmenter=tiny_model, **FAST).results] == ["skipped"] * 2


@pytest.mark.parametrize("name,text,match", [
    ("bad.csv", "path,prompt,colour\na.mp4,x,red\n", r"bad\.csv.*unknown column 'colour'"),
    ("bad.jsonl", '{"path": "a.mp4", "promt": "x"}\n', r"bad\.jsonl:1.*unknown column 'promt'"),
    ("bad.csv", "prompt\nx\n", r"no 'path' column"),
    ("bad.csv", "path,batch_size\na.mp4,0\n", r"bad\.csv:2.*batch_size"),
    ("bad.csv", "path,model\na.mp4,other\n", r"unknown column 'model'"),  # one model per batch
])
def test_manifest_errors_name_column_and_file(tmp_path, name, text, match):
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(PipelineFileError, match=match):
        plan_batch([manifest])


def test_manifest_error_exits_2_before_any_clip(tmp_path, tiny_model_dir, capsys):
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("path,prompt,colour\na.mp4,x,red\n")
    code = _cli(str(manifest), "--model", str(tiny_model_dir), "-o", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 2 and "colour" in err and "jobs.csv" in err
    assert not (tmp_path / "out").exists()


def test_plan_layout(tmp_path):
    a = _clip(tmp_path / "d1" / "x.mp4", frames=1)
    b = _clip(tmp_path / "d2" / "x.mp4", frames=1)
    (tmp_path / "d1" / ".hidden").mkdir()
    _clip(tmp_path / "d1" / ".hidden" / "y.mp4", frames=1)
    # two files with the same name from two folders: subfolders below their common folder
    assert [i.subdir.as_posix() for i in plan_batch([a, b])] == ["d1/x", "d2/x"]
    # a folder is its own root; hidden folders are skipped; a clip given twice is planned once
    assert [i.subdir.as_posix() for i in plan_batch([tmp_path / "d1", a])] == ["x"]
    assert [i.subdir.as_posix() for i in plan_batch([tmp_path / "d1", tmp_path / "d2"])] == ["d1/x", "d2/x"]
    assert [i.subdir.as_posix() for i in plan_batch([a])] == ["x"]
    # same name, other extension, one folder: the extension stays in the subfolder's name
    c = _clip(tmp_path / "d2" / "x.mov", frames=1)
    assert [i.subdir.as_posix() for i in plan_batch([tmp_path / "d2"])] == ["x_mov", "x_mp4"]
    assert [i.subdir.as_posix() for i in plan_batch([c])] == ["x"]
    with pytest.raises(FileNotFoundError, match="nope"):
        plan_batch([tmp_path / "nope"])


def test_missing_prompt_is_a_usage_error(tmp_path, tiny_model):
    clip = _clip(tmp_path / "c.mp4", frames=1)
    with pytest.raises(ValueError, match="prompt"):
        run_batch([clip], out_dir=tmp_path / "out", segmenter=tiny_model, **FAST)


def test_model_loaded_only_when_needed(tmp_path, tiny_model, tiny_model_dir, monkeypatch):
    import streammask.batch.local

    clip = _clip(tmp_path / "c.mp4", frames=2)
    out = tmp_path / "out"
    kw = dict(FAST, out_dir=out, prompt="person", model=tiny_model_dir)
    assert run_batch([clip], segmenter=tiny_model, **kw).exit_code == 0
    calls = []
    monkeypatch.setattr(streammask.batch.local, "load_from_settings", lambda *a, **k: calls.append(a) or tiny_model)
    # every clip done: the model is not loaded; --batch-size alone does not change the outputs
    assert [r.status for r in run_batch([clip], **dict(kw, batch_size=2)).results] == ["skipped"] and calls == []
    assert [r.status for r in run_batch([clip], force=True, **kw).results] == ["ok"] and len(calls) == 1
    # a model that cannot be loaded stops the batch (it is no single clip's failure)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        run_batch([clip], force=True, **dict(kw, model=tmp_path / "no-model"))
