"""Bench stage of the cohort prepared once: what each worker paid to prepare it again, against loading the driver's.

Measured on the paper profile's cohort and on one cohort of each size of the default power grid, scaled by its count."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from benchmark.bench.common import Measurement, cpu_name


def _best(action: Callable[[], object], repeats: int = 3) -> float:
    """The best wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def _costs(cohort: Path, settings: object, cache_root: Path) -> tuple[float, float, float]:
    """(prepare again with a warm cache, ship once, load the shipment) seconds for one cohort."""
    from benchmark.data.pipeline import image_cache, prepare_data
    from benchmark.experiment.worker import ship_cohort

    cache = image_cache(settings, cache_root)  # type: ignore[arg-type]
    prepared = prepare_data(cohort, settings, cache)  # type: ignore[arg-type]  # warms the cache
    again = _best(lambda: prepare_data(cohort, settings, cache))  # type: ignore[arg-type]
    ship = _best(lambda: ship_cohort(prepared, cache_root / "shipped-again"), repeats=1)
    shipment = ship_cohort(prepared, cache_root)
    return again, ship, _best(shipment.load)


def bench_preparation(data: Path, workdir: Path) -> list[Measurement]:
    """Worker-side cohort preparation per study, before (every worker prepares every cohort it trains on) and now
    (the driver ships it once, each worker loads it), on the paper cohort and the default power grid."""
    from benchmark.config import load_settings
    from benchmark.data.synthetic import SyntheticSpec, write_synthetic_cohort
    from benchmark.experiment.power_study import load_grid, study_settings

    workers = os.cpu_count() or 1
    again, ship, load = _costs(data, load_settings(), workdir / "prep-cache")
    old, new = workers * again, ship + workers * load
    print(f"  paper cohort on {cpu_name()}: prepare again {again:.3f} s, ship {ship:.3f} s, load {load:.3f} s; "
          f"{workers} workers: {old:.2f} s before, {new:.2f} s now ({old / new:.1f}x less)")
    grid = load_grid("default")
    settings = study_settings(grid)
    base = SyntheticSpec.model_validate(grid.generator)
    grid_old = grid_new = 0.0
    for size in grid.cohorts:
        spec = base.model_copy(update={"paired_patients": size.paired_patients,
                                       "negative_fraction": size.negative_fraction})
        cohort = write_synthetic_cohort(workdir / f"prep-n{size.paired_patients}", spec)
        again, ship, load = _costs(cohort, settings, workdir / "prep-power-cache")
        count = grid.replicates * len(grid.modes)
        grid_old += count * workers * again
        grid_new += count * (ship + workers * load)
        print(f"  power grid, {size.paired_patients} paired patients: prepare again {again:.3f} s, ship {ship:.3f} s,"
              f" load {load:.3f} s; x {count} cohorts")
    print(f"  power grid default ({grid.replicates * len(grid.modes) * len(grid.cohorts)} cohorts, {workers} workers):"
          f" {grid_old:.1f} s of worker preparation before, {grid_new:.1f} s now ({grid_old / grid_new:.1f}x less)")
    return [Measurement("paper: workers' cohort preparation now", new, old),
            Measurement("power grid: workers' cohort preparation", grid_new, grid_old)]
