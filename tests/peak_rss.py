"""Peak memory of a run in a subprocess of its own, for the flat-memory tests.

The child runs ``code`` (a Python script given ``args`` as ``sys.argv[1:]``) and prints one JSON object as its
last line, usually with ``"peak_rss_mb": peak_rss_mb()``: ``VmHWM`` in ``/proc/self/status``, the peak RSS of that
process image alone. (``ru_maxrss`` would not do: Linux carries it over fork and exec, so a child of a big pytest
process reports at least the parent's peak.) Several children may run side by side, each with its own peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

PEAK_RSS = r'''
def peak_rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 1024
'''
"""Paste at the top of a child's ``code``: defines ``peak_rss_mb()``."""


def start(code: str, *args: Any, **env: str) -> subprocess.Popen:
    """Start ``python -c PEAK_RSS + code args...`` offline (``HF_HUB_OFFLINE``), with ``env`` added."""
    environ = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", **env)
    return subprocess.Popen([sys.executable, "-c", PEAK_RSS + code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)


def result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    """The child's last stdout line as JSON, after checking it exited 0 (its stderr's tail otherwise)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-2000:]
    return json.loads(stdout.strip().splitlines()[-1])
