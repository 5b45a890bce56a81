"""Speed targets, measured: `python -m benchmark.bench --data PATH` prints wall times and ratios to target.

Targets live here, never in timed unit tests; each stage runs the real command line as a user would."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmark.bench.common import Measurement, cpu_name
from benchmark.bench.power import bench_power, write_grid
from benchmark.bench.preparation import bench_preparation
from benchmark.bench.stages import (
    _flops_per_sample,
    bench_cohorts,
    bench_paper,
    bench_smoke,
    bench_training,
    bench_units,
)
from benchmark.data.pipeline import resolve_data_root

__all__ = ["STAGES", "Measurement", "_flops_per_sample", "cpu_name", "main", "write_grid"]

STAGES: dict[str, Callable[[Path, Path], list[Measurement]]] = {
    "cohorts": bench_cohorts, "training": bench_training, "smoke": bench_smoke, "units": bench_units,
    "preparation": bench_preparation, "paper": bench_paper, "power": bench_power}


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages and print one line per measurement; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench", description=__doc__)
    parser.add_argument("--data", help="data root (default: $CTXRAY_DATA)")
    parser.add_argument("--only", choices=sorted(STAGES), action="append", help="run only these stages")
    args = parser.parse_args(argv)
    data = resolve_data_root(args.data)
    print(f"ctxray-bench speed benchmark on {cpu_name()}, {os.cpu_count()} CPU(s), data {data}")
    print(f"{'stage':<40} {'wall s':>8} {'target s':>9} {'ratio':>6}")
    missed = False
    with tempfile.TemporaryDirectory(prefix="ctxray-bench-") as tmp:
        for name in args.only or list(STAGES):
            for m in STAGES[name](data, Path(tmp)):
                missed |= m.ratio > 1
                print(f"{m.stage:<40} {m.seconds:>8.2f} {m.target_seconds:>9.1f} {m.ratio:>6.2f}"
                      f"{'  MISSED' if m.ratio > 1 else ''}")
    return 1 if missed else 0
