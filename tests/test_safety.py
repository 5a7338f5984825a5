"""Output safety (issue 9): the input is never replaced, existing outputs need --overwrite, unwritable folders,
output name templates stay inside the output folder, paths are taken literally, CLIP's prompt-token limit."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from streammask import MaskPipeline, process_video, run_batch
from streammask.cli import main
from streammask.errors import OutputError, OutputExistsError, ParameterError
from streammask.pipeline.preflight import plan_outputs, render_output_name

from conftest import mounted_tmpfs, write_synthetic_clip


class CountingSegmenter:
    """Wraps a segmenter and counts model calls (proves a refusal happened before any work)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def segment(self, *args, **kwargs):
        self.calls += 1
        return self.inner.segment(*args, **kwargs)


def _cli(argv, capsys) -> tuple[int, list[str]]:
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("streammask")]
    return rc, lines


# ---- the input is never an output ---------------------------------------------------------------------------------

def _symlink_output(tmp, clip):
    out = tmp / "out"
    out.mkdir()
    (out / "clip.soft.mask.mp4").symlink_to(clip)
    return clip, out, []


def _hardlink_output(tmp, clip):
    out = tmp / "out"
    out.mkdir()
    os.link(clip, out / "clip.soft.mask.mp4")
    return clip, out, []


def _template_names_the_input(tmp, clip):
    return clip, tmp, ["--output-template", "{stem}"]  # mask -> tmp/clip.mp4, the input itself


def _input_inside_png_sequence(tmp, clip):
    seq = tmp / "out" / "clip.soft.mask"
    seq.mkdir(parents=True)
    return clip.rename(seq / "clip.mp4"), tmp / "out", ["--mask-format", "png"]


@pytest.mark.parametrize("case,setup", [
    ("output is a symlink to the input", _symlink_output),
    ("output is a hard link to the input", _hardlink_output),
    ("template renders the input's own name", _template_names_the_input),
    ("input inside the PNG-sequence folder that would be replaced", _input_inside_png_sequence),
])
def test_output_that_would_replace_the_input_is_refused_even_with_overwrite(tmp_path, capsys, tiny_model_dir,
                                                                            case, setup):
    src, out, extra = setup(tmp_path, write_synthetic_clip(tmp_path / "clip.mp4", frames=2))
    before = src.read_bytes()
    argv = ["run", str(src), "--prompt", "x", "--model", str(tiny_model_dir), "--outputs", "mask", "-o", str(out),
            "-q", "--overwrite", *extra]
    rc, lines = _cli(argv, capsys)
    assert rc == 2 and len(lines) == 1, (case, lines)
    assert "replace" in lines[0] and "input" in lines[0], (case, lines)
    assert src.read_bytes() == before, case


def test_plan_refuses_the_input_via_api_with_its_type(tmp_path, tiny_model):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(OutputError, match="would replace the input"):
        process_video(clip, prompt="x", out_dir=tmp_path, segmenter=tiny_model, outputs=["mask"], progress=False,
                      output_template="{stem}", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


# ---- existing outputs ---------------------------------------------------------------------------------------------

def test_existing_outputs_are_refused_before_any_work_unless_overwrite(tmp_path, tiny_model):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=4)
    out = tmp_path / "out"
    process_video(clip, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["mask", "matte"], progress=False)
    mask = out / "clip.soft.mask.mp4"
    stamp = mask.stat().st_mtime_ns
    seg = CountingSegmenter(tiny_model)
    with pytest.raises(OutputExistsError) as info:
        process_video(clip, prompt="x", out_dir=out, segmenter=seg, outputs=["mask", "matte"], progress=False)
    msg = str(info.value)
    assert "clip.soft.mask.mp4" in msg and "--overwrite" in msg and "1 more" in msg, msg
    assert isinstance(info.value, FileExistsError)
    assert seg.calls == 0 and mask.stat().st_mtime_ns == stamp
    s = process_video(clip, prompt="x", out_dir=out, segmenter=seg, outputs=["mask", "matte"], progress=False,
                      overwrite=True)
    assert seg.calls > 0 and s.frames == 4 and mask.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in out.iterdir()) == ["clip.soft.mask.mp4", "clip.soft.matte.mov"]


def test_existing_output_cli_one_line_and_overwrite_flag(tmp_path, capsys, tiny_model_dir):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    argv = ["run", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "--outputs", "mask",
            "--mask-format", "png", "-o", str(out), "-q"]
    assert _cli(argv, capsys)[0] == 0
    rc, lines = _cli(argv, capsys)
    assert rc == 2 and len(lines) == 1 and "clip.soft.mask" in lines[0] and "--overwrite" in lines[0], lines
    assert _cli(argv + ["--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.soft.mask"]
    assert len(list((out / "clip.soft.mask").glob("*.png"))) == 2


def test_existing_output_of_the_other_kind_is_refused_with_overwrite(tmp_path, tiny_model):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    (out / "clip.soft.mask.mp4").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="exists as a folder"):
        process_video(clip, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["mask"], progress=False,
                      overwrite=True)


def test_batch_owns_its_folders_and_reprocesses_into_them(tmp_path, tiny_model):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_synthetic_clip(clips / "a.mp4", frames=2)
    out = tmp_path / "out"
    first = run_batch([clips], out_dir=out, segmenter=tiny_model, progress=False, prompt="x", outputs=["mask"])
    assert [r.status for r in first.results] == ["ok"]
    again = run_batch([clips], out_dir=out, segmenter=tiny_model, progress=False, prompt="x", outputs=["mask"],
                      force=True)
    assert [r.status for r in again.results] == ["ok"], again.results
    changed = run_batch([clips], out_dir=out, segmenter=tiny_model, progress=False, prompt="y", outputs=["mask"])
    assert [r.status for r in changed.results] == ["ok"], changed.results


# ---- unwritable output folder -------------------------------------------------------------------------------------

def _can_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
        (folder / ".probe").unlink()
        return True
    except OSError:
        return False


def test_output_folder_under_a_regular_file_is_one_line(tmp_path, capsys, tiny_model_dir):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        rc, lines = _cli(["run", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "-o", str(out), "-q"],
                         capsys)
        assert rc == 2 and len(lines) == 1 and str(out) in lines[0] and "output folder" in lines[0], lines


def test_read_only_output_folder_is_one_line(tmp_path, capsys, tiny_model_dir):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if _can_write(ro):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod does not stop writes; "
                        "test_read_only_mount_is_one_line covers a truly read-only folder")
        rc, lines = _cli(["run", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "-o", str(ro), "-q"],
                         capsys)
        assert rc == 2 and len(lines) == 1 and str(ro) in lines[0] and "not writable" in lines[0], lines
    finally:
        ro.chmod(0o755)


def test_read_only_mount_is_one_line(tmp_path, capsys, tiny_model_dir):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    with mounted_tmpfs(tmp_path / "rofs", "ro,size=64k", what="a read-only tmpfs") as mnt:
        rc, lines = _cli(["run", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "-o", str(mnt), "-q"],
                         capsys)
        assert rc == 2 and len(lines) == 1 and str(mnt) in lines[0] and "not writable" in lines[0], lines
        rc, lines = _cli(["run", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "-o", str(mnt / "sub"),
                          "-q"], capsys)
        assert rc == 2 and len(lines) == 1 and str(mnt / "sub") in lines[0], lines


# ---- output name templates ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("template,needle", [
    ("../{stem}.{variant}.{kind}", "path separator"),
    ("/tmp/{stem}.{variant}.{kind}", "path separator"),
    ("{stem}/{variant}.{kind}", "path separator"),
    ("{stem}\\{variant}.{kind}", "path separator"),
    ("..", "'..'"),
    ("", "''"),
    ("{stem}.{variant}", "own name"),  # mask and heatmap are both .mp4
    ("{stem}.{nope}", "{nope}"),
    ("{stem!r}.{variant}.{kind}", "only fields"),
    ("{stem:>9}.{variant}.{kind}", "only fields"),
    ("{stem", "format string"),
])
def test_bad_output_templates_are_refused(tmp_path, tiny_model, template, needle):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    with pytest.raises(ParameterError) as info:
        process_video(clip, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["mask", "heatmap"],
                      progress=False, output_template=template)
    assert info.value.name == "output_template" and needle in str(info.value), str(info.value)
    assert not out.exists()
    assert not (tmp_path / "clip.soft.mask.mp4").exists()


def test_output_template_names_the_files(tmp_path, tiny_model, capsys, tiny_model_dir):
    clip = write_synthetic_clip(tmp_path / "a..b.mp4", frames=2)  # '..' inside a name is an ordinary name
    out = tmp_path / "out"
    s = process_video(clip, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["mask", "matte"], progress=False,
                      output_template="{kind}_{variant}_{stem}", mask_format="png")
    assert sorted(p.name for p in out.iterdir()) == ["mask_soft_a..b", "matte_soft_a..b.mov"]
    assert s.outputs["soft.matte"] == out / "matte_soft_a..b.mov"
    rc, lines = _cli(["run", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "-o", str(out), "-q",
                      "--outputs", "mask", "--output-template", "../{stem}.{variant}.{kind}"], capsys)
    assert rc == 2 and len(lines) == 1 and "output_template" in lines[0], lines


def test_plan_outputs_stays_in_the_folder():
    planned = plan_outputs("/x/clip.mov", "/o", variants=["soft", "mixlab"], kinds=["mask", "matte"],
                           formats={"mask": "mp4", "heatmap": "mp4", "matte": "prores"})
    assert {str(p) for p in planned.values()} == {"/o/clip.soft.mask.mp4", "/o/clip.soft.matte.mov",
                                                   "/o/clip.mixlab.mask.mp4", "/o/clip.mixlab.matte.mov"}
    for here in (".", "", "./"):  # the current folder
        planned = plan_outputs("clip.mp4", here, variants=["soft"], kinds=["mask"], formats={"mask": "png"})
        assert [str(p) for p in planned.values()] == ["clip.soft.mask"]
    assert render_output_name("{stem}-{kind}", stem="$HOME;rm -rf x", variant="v", kind="mask") == "$HOME;rm -rf x-mask"


# ---- paths are literal --------------------------------------------------------------------------------------------

WEIRD = "$HOME;rm -rf x `id` ~"


def test_paths_with_shell_characters_are_literal(tmp_path, monkeypatch, capsys, tiny_model_dir):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "x"
    victim.mkdir()
    clip = write_synthetic_clip(tmp_path / f"{WEIRD}.mp4", frames=2)
    # CLI flag
    rc, _ = _cli(["run", str(clip), "--prompt", "x", "--model", str(tiny_model_dir), "--outputs", "mask",
                  "-o", f"{WEIRD}/cli", "-q"], capsys)
    assert rc == 0
    assert (tmp_path / WEIRD / "cli" / f"{WEIRD}.soft.mask.mp4").is_file()
    # pipeline file: out_dir and template with $VAR and ~, read literally
    (tmp_path / "p.toml").write_text(f'prompt = "x"\noutputs = ["mask"]\nout_dir = "~/$HOME/pipe"\n'
                                     f'output_template = "$HOME~{{stem}}.{{kind}}"\n', encoding="utf-8")
    rc, _ = _cli(["run", str(clip), "--pipeline", "p.toml", "--model", str(tiny_model_dir), "-q"], capsys)
    assert rc == 0
    assert (tmp_path / "~" / "$HOME" / "pipe" / f"$HOME~{WEIRD}.mask.mp4").is_file()
    # manifest row
    sub = tmp_path / "m"
    sub.mkdir()
    write_synthetic_clip(sub / f"{WEIRD}.mp4", frames=2)
    with open(sub / "jobs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "out_dir"])
        w.writerow([f"{WEIRD}.mp4", "$HOME;rm -rf x"])
    rep = run_batch([sub / "jobs.csv"], out_dir=tmp_path / "bout", model=str(tiny_model_dir), progress=False,
                    prompt="x", outputs=["mask"])
    assert [r.status for r in rep.results] == ["ok"], rep.results
    assert (tmp_path / "bout" / "$HOME;rm -rf x" / f"{WEIRD}.soft.mask.mp4").is_file()
    # nothing was expanded or executed
    assert victim.is_dir() and list(home.iterdir()) == []


def test_model_path_from_a_pipeline_file_is_literal(tmp_path, monkeypatch, capsys, tiny_model_dir):
    home = tmp_path / "home"
    shutil.copytree(tiny_model_dir, home / "clipseg")  # ~/clipseg exists, but "~" is not expanded
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "p.toml").write_text('prompt = "x"\nmodel = "~/clipseg"\n', encoding="utf-8")
    rc, lines = _cli(["run", str(clip), "--pipeline", "p.toml", "-o", "out", "-q"], capsys)
    assert rc == 2 and len(lines) == 1 and "'~/clipseg'" in lines[0] and "no such model directory" in lines[0], lines


# ---- prompts: CLIP's 77-token limit -------------------------------------------------------------------------------

def test_prompt_token_limit_on_the_tiny_tokenizer(tiny_model):
    assert tiny_model.max_prompt_tokens == 77
    ok = "x" * 75  # character-level tokenizer: 75 tokens + start + end = 77
    assert len(tiny_model.tokenizer(ok)["input_ids"]) == 77
    tiny_model.check_prompts([ok])
    with pytest.raises(ParameterError) as info:
        tiny_model.check_prompts([ok + "x"])
    msg = str(info.value)
    assert info.value.name == "prompt" and "78 tokens" in msg and "at most 77" in msg, msg
    with pytest.raises(ParameterError, match="78 tokens"):  # not transformers' ValueError from deep inside
        tiny_model.text_embeddings([ok + "x"])


@pytest.mark.parametrize("case,kwargs,label", [
    ("one long prompt", dict(prompt="y" * 200), "prompt"),
    ("long piece of a|b", dict(prompt="person|" + "y" * 90), "prompt"),
    ("mixlab sends a|b whole", dict(prompt="a" * 50 + "|" + "b" * 50, variants=["mixlab"]), "prompt"),
    ("masquerade negative prompt", dict(prompt="x", variants={"masquerade": {"negative_prompt": "n" * 90}}),
     "masquerade.negative_prompt"),
])
def test_over_long_prompt_is_refused_before_outputs(tmp_path, tiny_model, case, kwargs, label):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    seg = CountingSegmenter(tiny_model)
    with pytest.raises(ParameterError) as info:
        process_video(clip, out_dir=out, segmenter=seg, outputs=["mask"], progress=False, **kwargs)
    assert info.value.name == label and "tokens" in str(info.value), (case, str(info.value))
    assert seg.calls == 0
    assert not out.exists() or list(out.iterdir()) == []
    # the split prompt of soft: each piece fits
    if case == "mixlab sends a|b whole":
        s = process_video(clip, out_dir=out, segmenter=tiny_model, outputs=["mask"], progress=False,
                          prompt=kwargs["prompt"], variants=["soft"])
        assert s.frames == 2


def test_over_long_prompt_cli_one_line(tmp_path, capsys, tiny_model_dir):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    rc, lines = _cli(["run", str(clip), "--prompt", "z" * 120, "--model", str(tiny_model_dir), "-o",
                      str(tmp_path / "out"), "-q"], capsys)
    assert rc == 2 and len(lines) == 1 and "122 tokens" in lines[0] and "77" in lines[0], lines
    assert not (tmp_path / "out").exists()  # the refused run removed the folder it had created


def test_over_long_prompt_check_silences_transformers_warning(tiny_model):
    """The refusal is the only message: transformers' own 'Token indices sequence length ...' is not logged."""
    import logging

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    from transformers.utils import logging as hf_logging

    handler = Collect(level=logging.WARNING)
    hf_logger = logging.getLogger("transformers")  # transformers' loggers do not propagate to the root
    hf_logger.addHandler(handler)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # transformers' default (the test session may have lowered it)
    try:
        tiny_model.tokenizer.deprecation_warnings.clear()  # the warning fires once per tokenizer
        with pytest.raises(ParameterError, match="tokens"):
            tiny_model.check_prompts(["z" * 120])
        assert not [m for m in seen if "Token indices" in m]
        tiny_model.tokenizer("z" * 120)  # the check is what silences it: a plain call warns
        assert [m for m in seen if "Token indices" in m]
    finally:
        hf_logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)


@pytest.mark.parametrize("prompt", ["|", " | ", "||"])
def test_prompt_of_separators_only_is_a_parameter_error(tmp_path, capsys, prompt):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    rc, lines = _cli(["run", str(clip), "--prompt", prompt, "-o", str(tmp_path / "out"), "-q"], capsys)
    assert rc == 2 and len(lines) == 1 and "--prompt" in lines[0] and "non-empty" in lines[0], lines
    assert not (tmp_path / "out").exists()
    with pytest.raises(ParameterError) as info:
        MaskPipeline(object(), prompt=prompt)
    assert info.value.name == "prompt"


def test_comfy_video_node_rerun_replaces_its_outputs(tmp_path, tiny_model_dir):
    from streammask.comfy import StreamMaskLoadCLIPSeg, StreamMaskVideo
    from test_comfy import call_node

    (handle,) = call_node(StreamMaskLoadCLIPSeg, model_path=str(tiny_model_dir), device="cpu")
    clip = write_synthetic_clip(tmp_path / "clip.mp4", frames=3)
    out = tmp_path / "out"
    for prompt in ("car", "person"):  # a re-run with a new prompt writes the same names
        mask, _, _ = call_node(StreamMaskVideo, clipseg=handle, video_path=str(clip), prompt=prompt, variant="soft",
                               outputs="mask", out_dir=str(out), progress=False)["result"][:3]
        assert Path(mask) == out / "clip.soft.mask.mp4" and Path(mask).is_file()


def test_output_into_the_current_folder(tmp_path, monkeypatch, capsys, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    write_synthetic_clip(tmp_path / "clip.mp4", frames=2)
    rc, lines = _cli(["run", "clip.mp4", "--prompt", "x", "--model", str(tiny_model_dir), "--outputs", "mask",
                      "-o", ".", "-q"], capsys)
    assert rc == 0, lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip.soft.mask.mp4"]
