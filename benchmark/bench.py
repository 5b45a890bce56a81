"""Speed targets, measured: `python -m benchmark.bench --data PATH` prints wall times and ratios to target.

Targets live here, never in timed unit tests. Each stage runs the real command line in a fresh
process, so interpreter start-up and imports count as a user would feel them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmark.pipeline import resolve_data_root


@dataclass(frozen=True)
class Measurement:
    """One timed stage and the target it is held to."""

    stage: str
    seconds: float
    target_seconds: float

    @property
    def ratio(self) -> float:
        """Measured time over target: below 1 meets the target."""
        return self.seconds / self.target_seconds


def _time_cli(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmark.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def bench_cohorts(data: Path, workdir: Path) -> list[Measurement]:
    """`ctxray-bench cohorts` with an empty image cache (first run), then with the cache warm."""
    env = {**os.environ, "CTXRAY_CACHE": str(workdir / "cache")}
    args = ["cohorts", "--data", str(data)]
    cold = _time_cli(args, env)
    warm = min(_time_cli(args, env) for _ in range(3))
    return [Measurement("cohorts, first run (empty cache)", cold, 60.0),
            Measurement("cohorts, warm cache (best of 3)", warm, 5.0)]


STAGES: dict[str, Callable[[Path, Path], list[Measurement]]] = {"cohorts": bench_cohorts}


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages and print one line per measurement; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench", description=__doc__)
    parser.add_argument("--data", help="data root (default: $CTXRAY_DATA)")
    parser.add_argument("--only", choices=sorted(STAGES), action="append", help="run only these stages")
    args = parser.parse_args(argv)
    data = resolve_data_root(args.data)
    print(f"ctxray-bench speed benchmark on {os.cpu_count()} CPU(s), data {data}")
    print(f"{'stage':<40} {'wall s':>8} {'target s':>9} {'ratio':>6}")
    missed = False
    with tempfile.TemporaryDirectory(prefix="ctxray-bench-") as tmp:
        for name in args.only or list(STAGES):
            for m in STAGES[name](data, Path(tmp)):
                missed |= m.ratio > 1
                print(f"{m.stage:<40} {m.seconds:>8.2f} {m.target_seconds:>9.1f} {m.ratio:>6.2f}"
                      f"{'  MISSED' if m.ratio > 1 else ''}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
