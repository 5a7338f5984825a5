"""The work planner: segment ranges, warm-up overlap, longest-first balancing."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from streammask import ParameterError
from streammask.batch.plan import ClipSpec, plan_work, segment_ranges

RATE = Fraction(30000, 1001)


def _optimal_makespan(costs: list[int], workers: int) -> int:
    best = sum(costs)
    for assignment in itertools.product(range(workers), repeat=len(costs)):
        loads = [0] * workers
        for c, w in zip(costs, assignment):
            loads[w] += c
        best = min(best, max(loads))
    return best


def test_small_case_exact_assignment():
    # the classic worst case of LPT on 2 workers: 30, 30, 20, 20, 20 -> {30, 20, 20} = 70 / {30, 20} = 50
    clips = [ClipSpec(n, f, RATE) for n, f in (("a", 20), ("b", 30), ("c", 20), ("d", 30), ("e", 20))]
    plan = plan_work(clips, 2)
    assert [t.clip for t in plan.tasks] == [0, 1, 2, 3, 4] and all(t.segments == 1 for t in plan.tasks)
    assert [[plan.tasks[i].clip for i in w] for w in plan.assignments] == [[1, 0, 4], [3, 2]]
    assert plan.loads == [70, 50] and plan.makespan == 70
    # the optimum is 60 ({30, 30} / {20, 20, 20}): LPT reaches exactly its bound 4/3 - 1/6 = 7/6
    assert _optimal_makespan([20, 30, 20, 30, 20], 2) == 60 and plan.makespan == 60 * 7 / 6
    # 100, 70, 60, 40, 30: LPT is optimal (140 / 160)
    plan = plan_work([ClipSpec(str(f), f, RATE) for f in (40, 100, 30, 70, 60)], 2)
    assert [[plan.tasks[i].frames for i in w] for w in plan.assignments] == [[100, 40], [70, 60, 30]]
    assert plan.makespan == 160 == _optimal_makespan([40, 100, 30, 70, 60], 2)


def test_lpt_bound_on_random_cases():
    rng = random.Random(0)
    for _ in range(40):
        n, m = rng.randint(1, 7), rng.randint(1, 3)
        costs = [rng.randint(1, 300) for _ in range(n)]
        plan = plan_work([ClipSpec(str(i), c, RATE) for i, c in enumerate(costs)], m)
        assert sorted(i for w in plan.assignments for i in w) == list(range(n))  # each task exactly once
        assert sum(plan.loads) == sum(costs)
        opt = _optimal_makespan(costs, m)
        assert opt <= plan.makespan <= (Fraction(4, 3) - Fraction(1, 3 * m)) * opt
        assert plan.makespan >= plan.lower_bound


def test_many_clips_balance_close_to_total_over_workers():
    rng = random.Random(1)
    clips = [ClipSpec(str(i), rng.randint(30, 3000), RATE) for i in range(200)]
    plan = plan_work(clips, 8)
    assert plan.makespan <= 1.01 * plan.lower_bound


@pytest.mark.parametrize("frames, seg, expected", [
    (10, None, [(0, 10)]),
    (10, 10, [(0, 10)]),
    (11, 10, [(0, 6), (6, 11)]),
    (30, 10, [(0, 10), (10, 20), (20, 30)]),
    (31, 10, [(0, 8), (8, 16), (16, 23), (23, 31)]),
    (0, 10, []),
])
def test_segment_ranges(frames, seg, expected):
    assert segment_ranges(frames, seg) == expected


def test_segment_ranges_aligned_to_batches():
    assert segment_ranges(31, 10, align=4) == [(0, 8), (8, 16), (16, 24), (24, 31)]
    assert segment_ranges(120, 40, align=8) == [(0, 40), (40, 80), (80, 120)]
    assert segment_ranges(120, 37, align=8) == [(0, 32), (32, 64), (64, 88), (88, 120)]


def test_segments_with_overlap_and_balance():
    # a 10 s clip at 29.97 (300 frames) in 4 s segments -> 3 segments of 100 frames (120 frames each max)
    clips = [ClipSpec("long", 300, RATE), ClipSpec("short", 50, RATE)]
    plan = plan_work(clips, 2, segment_seconds=4, overlap=8)
    assert plan.segment_frames == 120  # round(4 * 29.97)
    long_tasks = [t for t in plan.tasks if t.clip == 0]
    assert [(t.start, t.end, t.warmup_start) for t in long_tasks] == [(0, 100, 0), (100, 200, 92), (200, 300, 192)]
    assert [t.cost for t in long_tasks] == [100, 108, 108] and all(t.segments == 3 for t in long_tasks)
    short = [t for t in plan.tasks if t.clip == 1]
    assert [(t.start, t.end, t.warmup_start, t.segments) for t in short] == [(0, 50, 0, 1)]
    # LPT: 108 -> w0, 108 -> w1, 100 -> w0 (tie: lowest index), 50 -> w1
    assert plan.loads == [208, 158]
    text = plan.describe()
    assert "clip long: 300 frames (10.01 s), 3 task(s)" in text and "segment 1: frames [100, 200) + 8 warm-up" in text
    assert "worker 0" in text and "worker 1" in text


def test_clip_without_rate_is_not_split():
    plan = plan_work([ClipSpec("x", 1000, None)], 3, segment_seconds=1)
    assert len(plan.tasks) == 1 and plan.loads.count(0) == 2


@pytest.mark.parametrize("kwargs, name", [
    (dict(workers=0), "workers"),
    (dict(workers=1.5), "workers"),
    (dict(workers=1, segment_seconds=0), "segment_seconds"),
    (dict(workers=1, segment_seconds=-2), "segment_seconds"),
    (dict(workers=1, overlap=-1), "overlap_frames"),
])
def test_bad_arguments(kwargs, name):
    workers = kwargs.pop("workers")
    with pytest.raises(ParameterError) as err:
        plan_work([ClipSpec("a", 10, RATE)], workers, **kwargs)
    assert err.value.name == name


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, tiny_model, capsys):
    from conftest import write_gop_clip, write_synthetic_clip
    from streammask import run_batch
    from streammask.cli import main

    clips = tmp_path / "clips"
    write_gop_clip(clips / "long.mp4", frames=40)
    write_synthetic_clip(clips / "short.mp4", frames=6)
    (clips / "bad.mp4").write_bytes(b"\0" * 500)
    out = tmp_path / "out"
    argv = ["batch", str(clips), "--prompt", "person", "-o", str(out), "--outputs", "mask", "--batch-size", "4",
            "--device", "cpu", "--dry-run", "--engine", "ray", "--actors", "2", "--segment-seconds", "0.45",
            "--overlap-frames", "3"]
    assert main(argv) == 1  # a clip that cannot run
    text = capsys.readouterr().out
    assert not out.exists()
    assert "dry run (ray engine): nothing is written" in text
    assert "plan: 2 clips, 5 tasks on 2 worker(s), segments of 13 frames with 3 warm-up frames" in text
    assert "long.mp4: 40 frames (1.33 s), 4 task(s)" in text and "segment 1: frames [12, 20) + 3 warm-up" in text
    assert "short.mp4: 6 frames (0.20 s), 1 task(s)" in text and "worker 1:" in text
    assert "cannot run" in text and "bad.mp4" in text
    # after the short clip is done, the dry run lists it as skipped and plans only the rest
    run_batch([clips / "short.mp4"], out_dir=out, segmenter=tiny_model, prompt="person", outputs=["mask"],
              batch_size=4, device="cpu", progress=False)
    assert main(argv[:1] + [str(clips / "short.mp4"), str(clips / "long.mp4")] + argv[2:]) == 0
    text = capsys.readouterr().out
    assert "plan: 1 clips, 4 tasks" in text and "1 clip(s) already done (skipped)" in text
