"""The power study as `ctxray-bench power` composes it: the trainings (experiment stage), then their tabulation."""

from __future__ import annotations

import time
from pathlib import Path

from benchmark.evidence.power import PowerResult, tabulate_power
from benchmark.experiment.power_study import PowerGrid, run_power_study


def run_power(grid: PowerGrid, out: Path, **options: object) -> PowerResult:
    """Run the power study of `grid` under `out` and tabulate its verdicts."""
    start = time.perf_counter()
    stores = run_power_study(grid, out, **options)  # type: ignore[arg-type]
    return tabulate_power(grid, stores, time.perf_counter() - start)
