"""The model's CPU threads: fixed, or tuned while the clip runs (streammask.model.threads)."""

import pytest
import torch

from streammask import process_video
from streammask.model.threads import ThreadTuner, available_cores


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _run(tuner, cost, batches, clock=None, step=1.0):
    used = []
    for _ in range(batches):
        n = tuner.before_batch()
        used.append(n)
        tuner.after_batch(cost(n), frames=2)
        if clock is not None:
            clock.now += step
    return used


def test_fixed_count_is_set_once_and_kept():
    calls = []
    tuner = ThreadTuner(3, set_threads=calls.append)
    assert _run(tuner, lambda n: 1.0, 5) == [3] * 5 and calls == [3]
    assert tuner.describe() == "model threads: 3 (fixed)"


def test_tuner_keeps_the_fastest_count_and_measures_the_candidates_in_turn():
    calls = []
    # quiet machine: 2 threads nearly twice as fast as 1
    tuner = ThreadTuner(None, candidates=(1, 2), trials=3, warmup=1, revisit=1e9, set_threads=calls.append)
    used = _run(tuner, lambda n: {1: 1.0, 2: 0.55}[n], 12)
    # warm-up with one thread, then the candidates take turns; 1 thread (1.8x slower) is dropped after one pass
    assert used[:5] == [1, 1, 2, 2, 2]
    assert used[5:] == [2] * 7 and tuner.chosen == 2
    # busy machine: more threads oversubscribe the cores and spin
    tuner = ThreadTuner(None, candidates=(1, 2), trials=3, warmup=1, revisit=1e9, set_threads=lambda n: None)
    used = _run(tuner, lambda n: {1: 1.0, 2: 4.0}[n], 12)
    assert used.count(2) == 1 and tuner.chosen == 1  # the oversubscribed count cost one batch
    assert "1 (the fastest of [1, 2]" in tuner.describe()


def test_tuner_follows_a_change_of_load():
    clock = Clock()
    load = {"busy": False}

    def cost(n):
        return {1: 1.0, 2: 4.0}[n] if load["busy"] else {1: 1.0, 2: 0.5}[n]

    tuner = ThreadTuner(None, candidates=(1, 2), trials=1, warmup=0, revisit=10.0, set_threads=lambda n: None,
                        clock=clock)
    _run(tuner, cost, 5, clock)
    assert tuner.chosen == 2
    load["busy"] = True
    used = _run(tuner, cost, 20, clock)
    assert tuner.chosen == 1 and used[-10:].count(1) >= 9  # a round of measurements every 10 s costs one batch


def test_tuner_median_ignores_one_slow_batch():
    tuner = ThreadTuner(None, candidates=(1, 2), trials=3, warmup=0, drop=100.0, revisit=1e9,
                        set_threads=lambda n: None)
    costs = iter([1.0, 0.6, 1.0, 9.0, 1.0, 0.6])  # one outlier batch with 2 threads
    _run(tuner, lambda n: next(costs), 6)
    assert tuner.chosen == 2


def test_restore_puts_back_the_callers_count():
    before = torch.get_num_threads()
    tuner = ThreadTuner(1)
    assert torch.get_num_threads() == 1
    tuner.restore()
    assert torch.get_num_threads() == before


def test_available_cores_is_positive():
    assert available_cores() >= 1


def test_process_video_reports_and_restores_threads(synthetic_clip, tiny_model, tmp_path):
    before = torch.get_num_threads()
    s = process_video(synthetic_clip, prompt="x", out_dir=tmp_path / "a", segmenter=tiny_model, outputs=["mask"],
                      progress=False, threads=1)
    assert s.model_threads == "model threads: 1 (fixed)" and "model threads: 1" in s.describe()
    assert torch.get_num_threads() == before
    s = process_video(synthetic_clip, prompt="x", out_dir=tmp_path / "b", segmenter=tiny_model, outputs=["mask"],
                      progress=False, batch_size=1)
    assert s.model_threads.startswith("model threads:") and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        process_video(synthetic_clip, prompt="x", out_dir=tmp_path / "c", segmenter=tiny_model, threads=0)


def test_threads_flag(tmp_path):
    from streammask.cli import build_parser
    from streammask.cli.common import collect_settings

    settings = collect_settings(build_parser().parse_args(["run", "x.mp4", "--threads", "2"]))
    assert settings["threads"] == 2
    settings = collect_settings(build_parser().parse_args(["run", "x.mp4", "--threads", "auto"]))
    assert settings["threads"] is None
