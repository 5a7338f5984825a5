"""Fuzz (issue 9): mutated versions of small real clips never hang, never raise anything but a
StreamMaskError, and never leave a half-written output.

Corpus: the bundled carphone clip cut to 6 frames (MP4, and MPEG-TS) plus synthetic clips written
here with PyAV (H.264 MP4, MJPEG AVI). Mutations: bit flips, truncations, spliced headers (the head
of one file on the body of another) and overwritten byte runs. The seed and the case count are
fixed below; a failing case prints its id so it can be replayed.
"""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path

import pytest

from streammask import process_video
from streammask.cli import main
from streammask.errors import StreamMaskError

from conftest import CARPHONE, encode_frames, write_mjpeg_avi, write_synthetic_clip

SEED = 20261122
N_API_CASES = 300  # through streammask.process_video
N_CLI_CASES = 20  # through the CLI's main()
CASE_TIMEOUT_S = 30.0
MUTATIONS = ("bitflip", "truncate", "splice", "overwrite")


def _cut(src: Path, dst: Path, frames: int) -> Path:
    """Re-encode the first ``frames`` frames of ``src`` (keeps size, rate and time base)."""
    import av

    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        ist = ic.streams.video[0]
        ost = oc.add_stream("libx264", rate=ist.average_rate)
        ost.width, ost.height, ost.pix_fmt = ist.codec_context.width, ist.codec_context.height, "yuv420p"
        ost.time_base = ist.time_base
        ost.codec_context.time_base = ist.time_base

        def decoded():
            for frame in itertools.islice(ic.decode(ist), frames):
                frame.pict_type = 0  # NONE: the encoder picks the frame types, not the source's
                yield frame

        encode_frames(oc, ost, decoded())  # the decoded frames keep their pts
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[bytes]:
    d = tmp_path_factory.mktemp("fuzz-seeds")
    seeds = [
        _cut(CARPHONE, d / "carphone6.mp4", 6),
        _cut(CARPHONE, d / "carphone6.ts", 6),
        write_synthetic_clip(d / "synthetic.mp4", frames=6),
        write_mjpeg_avi(d / "mjpeg.avi", frames=6, size=(48, 32)),
    ]
    return [p.read_bytes() for p in seeds]


def mutate(corpus: list[bytes], rng: random.Random) -> tuple[str, bytes]:
    i = rng.randrange(len(corpus))
    data = bytearray(corpus[i])
    kind = rng.choice(MUTATIONS)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 64)):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[: rng.randrange(1, len(data))]
    elif kind == "splice":
        other = corpus[rng.randrange(len(corpus))]
        head = rng.randrange(8, min(len(data), 4096))
        data = data[:head] + other[rng.randrange(len(other) // 2):]
    else:
        start = rng.randrange(len(data))
        run = rng.randint(1, 2048)
        data[start:start + run] = bytes([rng.randrange(256)]) * len(data[start:start + run])
    return f"seed{i}-{kind}", bytes(data)


def _run_with_timeout(fn, timeout: float):
    """Run ``fn()`` in a daemon thread; returns ``(finished, result, exception)``."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("result"), box.get("exc")


def _check_outputs(out: Path, failed: bool, case: str) -> None:
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [n for n in names if ".partial" in n], (case, names)
    if failed:
        assert names == [], (case, names)


def _cases(tmp_path: Path, corpus, seed: int, count: int, label: str):
    """Yield ``(case, src, out)``: each mutated clip written to its own file, with its output folder."""
    rng = random.Random(seed)
    for n in range(count):
        name, data = mutate(corpus, rng)
        src = tmp_path / f"case{n}.mp4"
        src.write_bytes(data)
        yield f"{label} {n} ({name})", src, tmp_path / f"out{n}"


def test_fuzz_process_video(tmp_path, corpus, tiny_model):
    outcomes = {"ok": 0, "error": 0, "ok with damaged packets": 0}
    for case, src, out in _cases(tmp_path, corpus, SEED, N_API_CASES, "case"):
        finished, result, exc = _run_with_timeout(
            lambda: process_video(src, prompt="x", out_dir=out, segmenter=tiny_model, outputs=["mask"],
                                  progress=False, batch_size=4),
            CASE_TIMEOUT_S)
        assert finished, f"{case}: hung for more than {CASE_TIMEOUT_S} s"
        if exc is not None and not isinstance(exc, StreamMaskError):
            raise AssertionError(f"{case}: uncaught {type(exc).__name__}: {exc}") from exc
        _check_outputs(out, exc is not None, case)
        if exc is None:
            assert result.frames > 0 and (out / f"{src.stem}.soft.mask.mp4").exists(), case
        outcomes["error" if exc is not None else "ok"] += 1
        if exc is None and result.damaged_packets:
            outcomes["ok with damaged packets"] += 1
    # the corpus must exercise both paths
    print("fuzz outcomes:", outcomes)
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes


def test_fuzz_cli(tmp_path, corpus, tiny_model_dir, capsys):
    for case, src, out in _cases(tmp_path, corpus, SEED + 1, N_CLI_CASES, "cli case"):
        argv = ["run", str(src), "--prompt", "x", "--model", str(tiny_model_dir), "--device", "cpu",
                "--outputs", "mask", "-o", str(out), "-q"]
        finished, rc, exc = _run_with_timeout(lambda: main(argv), CASE_TIMEOUT_S)
        assert finished, f"{case}: hung"
        assert exc is None, f"{case}: uncaught {type(exc).__name__}: {exc}"
        err = capsys.readouterr().err
        assert rc in (0, 2), (case, rc, err)
        if rc == 2:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("streammask: error:"), (case, err)
        _check_outputs(out, rc != 0, case)
