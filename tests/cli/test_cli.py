from pathlib import Path

import av
import pytest

from streammask.cli import main
from streammask.pipeline.settings import load_pipeline
from streammask import PipelineFileError

PIPELINES = sorted((Path(__file__).parents[2] / "pipelines").glob("*.toml"))


def test_run_exits_zero_with_progress_bar(synthetic_clip, tmp_path, tiny_model_dir, capsys):
    code = main(["run", str(synthetic_clip), "--prompt", "person", "--model", str(tiny_model_dir), "--device", "cpu",
                 "-o", str(tmp_path / "out"), "--batch-size", "4", "--variant", "soft", "--variant", "essentials",
                 "--essentials-dilate", "-2", "--outputs", "mask,matte", "--matte-format", "png"])
    captured = capsys.readouterr()
    assert code == 0
    assert "12/12" in captured.err and "frame/s" in captured.err  # tqdm progress bar
    assert "frames/s end to end" in captured.out  # summary
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["synthetic.essentials.mask.mp4", "synthetic.essentials.matte", "synthetic.soft.mask.mp4",
                     "synthetic.soft.matte"]
    assert len(list((tmp_path / "out" / "synthetic.soft.matte").glob("*.png"))) == 12


def test_run_with_pipeline_file(synthetic_clip, tmp_path, tiny_model_dir):
    code = main(["run", str(synthetic_clip), "--pipeline", str(PIPELINES[0]), "--model", str(tiny_model_dir),
                 "--device", "cpu", "-o", str(tmp_path), "-q", "--outputs", "mask"])
    assert code == 0
    out = list(tmp_path.glob("*.mask.mp4"))
    assert len(out) == 1
    with av.open(str(out[0])) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_shipped_pipelines_load(path):
    settings = load_pipeline(path)
    assert settings["prompt"] and list(settings["variants"]) == [path.stem]


def test_unknown_pipeline_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('prompt = "x"\nbatchsize = 4\n')
    with pytest.raises(PipelineFileError, match=r"bad\.toml.*batchsize"):
        load_pipeline(bad)
    bad.write_text('prompt = "x"\nvariants = ["mixlab"]\n[mixlab]\nblurr = 1\n')
    with pytest.raises(PipelineFileError, match="blurr"):
        load_pipeline(bad)


@pytest.mark.parametrize("args,text", [
    (["--mixlab-blur", "99", "--variant", "mixlab"], "--mixlab-blur='99'"),
    (["--batch-size", "-1"], "--batch-size='-1'"),
    (["--variant", "nope"], "nope"),
    (["--prompt", ""], "--prompt"),
])
def test_bad_flags_exit_nonzero_with_one_line(synthetic_clip, tiny_model_dir, capsys, args, text):
    argv = ["run", str(synthetic_clip), "--model", str(tiny_model_dir)] + (["--prompt", "x"] if "--prompt" not in args else []) + args
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streammask: error:") and text in err and "\n" not in err


def test_missing_input(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.mp4"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_probe(capsys):
    assert main(["probe", str(Path(__file__).parents[1] / "data" / "carphone_pristine.mp4")]) == 0
    assert "30000/1001" in capsys.readouterr().out


def test_temporal_flags(synthetic_clip, tmp_path, tiny_model_dir):
    code = main(["run", str(synthetic_clip), "--prompt", "person", "--model", str(tiny_model_dir), "-o", str(tmp_path),
                 "-q", "--outputs", "mask", "--temporal", "flow", "--flow-strength", "0.6", "--cut-threshold", "0.2"])
    assert code == 0 and len(list(tmp_path.glob("*.mask.mp4"))) == 1
