"""Ray worker setup hook for ``tests/batch/test_batch_ray.py``: kill the actor's process mid-task, once.

Installed in every Ray worker by the test module's ``ray.init(runtime_env={"worker_process_setup_hook":
"ray_crash_hook.install"})``. When ``STREAMMASK_TEST_CRASH_DIR`` holds a file ``STEM.crash``, the
first task on a clip named ``STEM.*`` removes the file and ends its process with ``os._exit(1)``
at its second model batch (the first batch's frames have gone to the encoders: partial outputs are
on disk), as a segfault or the kernel's OOM killer would. The retry finds no file and runs through.
"""

from __future__ import annotations

import os
from pathlib import Path

CRASH_DIR_ENV = "STREAMMASK_TEST_CRASH_DIR"


def arm(crash_dir: Path, source: Path) -> Path:
    """Make the next task on ``source`` crash its worker; returns the marker file."""
    marker = Path(crash_dir) / f"{Path(source).stem}.crash"
    marker.write_text("crash once\n")
    return marker


def install() -> None:
    crash_dir = os.environ.get(CRASH_DIR_ENV)
    if not crash_dir:
        return
    from streammask.model import ClipSeg
    from streammask.batch.ray import MaskWorker

    state = {"marker": None, "batches": 0}
    real_run, real_logits = MaskWorker.run, ClipSeg.logits

    def run(self, source, *args, **kwargs):
        state["marker"], state["batches"] = Path(crash_dir) / f"{Path(source).stem}.crash", 0
        return real_run(self, source, *args, **kwargs)

    def logits(self, *args, **kwargs):
        state["batches"] += 1
        if state["batches"] == 2 and state["marker"] is not None:
            try:
                os.remove(state["marker"])  # claim the one crash
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return real_logits(self, *args, **kwargs)

    MaskWorker.run, ClipSeg.logits = run, logits
