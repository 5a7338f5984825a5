"""Throughput benchmark: seed-style per-frame loop vs streammask end to end vs model only.

A thin wrapper over :func:`streammask.bench.run_benchmark` (the same as ``streammask bench``):
same clip, same model architecture, same device, one run; prints a markdown table and, with
``--json PATH``, writes the full result (fps, per-stage seconds, peak RSS, device, versions).

Without --model it builds the full-size rd64-refined architecture with random
weights (real weights give the same speed). Example::

    python benchmarks/bench.py examples/carphone.mp4 --frames 48 --batch-size 8 --json bench.json
"""

from __future__ import annotations

import sys

from streammask.cli.bench import build_bench_parser, run_bench_command


def main(argv=None) -> int:
    return run_bench_command(build_bench_parser(prog="benchmarks/bench.py").parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
