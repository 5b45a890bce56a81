"""Bench stage of the power study: the default grid on the stacked path beside the old per-run path, and its floor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.bench.common import Measurement, _time_cli, cpu_name, matmul_peak_gflops
from benchmark.bench.stages import matrix_flops
from benchmark.config import TrainingPath

if TYPE_CHECKING:
    from benchmark.evidence.power import PowerResult


def _toml_value(value: object) -> str:
    """A TOML inline value (tables, arrays, strings, numbers, booleans): enough to write a power grid back."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_grid(path: Path, name: str, grid: dict[str, object]) -> Path:
    """Write one power grid as a grids file (`ctxray-bench power --grids`)."""
    lines = [f"[grids.{name}]"] + [f"{key} = {_toml_value(value)}" for key, value in grid.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bench_power(data: Path, workdir: Path, old_replicates: int = 2) -> list[Measurement]:
    """The default power grid as a user runs it (`ctxray-bench power`, stacked path, 30 replicates per cell) against
    its 20-minute target, and beside it the old per-run path on `old_replicates` replicates: runs per second of
    both and their ratio, the issue-15 target being 6x."""
    import tomllib

    from benchmark.evidence.power import read_power
    from benchmark.experiment.power_study import DEFAULT_GRIDS

    declared = tomllib.loads(DEFAULT_GRIDS.read_text(encoding="utf-8"))["grids"]["default"]
    settings = dict(declared.get("settings", {}))
    per_run = {**settings, "engine": {"path": TrainingPath.PER_RUN.value}}
    old = {**declared, "replicates": old_replicates, "settings": per_run,
           "description": f"the default grid on the per-run path, {old_replicates} replicates"}
    grids = write_grid(workdir / "power-old-path.toml", "default", old)
    timings = {}
    for label, args in (("old per-run path", ["--grids", str(grids)]), ("stacked path", [])):
        out = workdir / f"power-{label.split()[0]}"
        wall = _time_cli(["power", "--grid", "default", "--out", str(out), "--quiet", *args], dict(os.environ))
        result = read_power(out / "power.json")
        runs = sum(len(list((store / "runs").glob("*.json"))) for store in (out / "stores").iterdir())
        timings[label] = (wall, runs, result)
        print(f"  {label}: {result.grid.replicates} replicates per cell, {runs} runs in {wall:.1f} s = "
              f"{runs / wall:.2f} runs/s")
    old_wall, old_runs, _ = timings["old per-run path"]
    new_wall, new_runs, result = timings["stacked path"]
    ratio = (new_runs / new_wall) / (old_runs / old_wall)
    print(f"  on {cpu_name()} ({os.cpu_count()} CPUs): the stacked path runs {ratio:.2f}x the old path's runs per "
          f"second (target 6x)")
    print(f"  power grid default: {len(result.replicates)} replicate evaluations; {result.statement}")
    _print_power_floor(workdir / "power-stacked", result, new_wall, new_runs * old_wall / old_runs / 6)
    return [Measurement(f"power study, default grid ({result.grid.replicates} replicates)", new_wall, 1200.0),
            Measurement("power: s per 1000 runs vs old path / 6", 1000 * new_wall / new_runs,
                        1000 * old_wall / old_runs / 6)]


def _print_power_floor(out: Path, result: PowerResult, wall: float, six_times: float) -> None:
    """Print the grid's arithmetic (counted on the path each run trained on) and how long it takes at the fp32 matmul
    peak, beside the measured time and the time 6x the old path's runs per second would allow: how far kernel
    efficiency alone could take the grid on this CPU."""
    from benchmark.experiment.power_study import study_settings
    from benchmark.experiment.store import ResultsStore

    records = [record for store in sorted((out / "stores").iterdir()) for record in ResultsStore(store).load_all()]
    student, teacher = matrix_flops(records, study_settings(result.grid).data.image_size)
    peak = matmul_peak_gflops()
    floor = (student + teacher) / (peak * 1e9)
    replicates = result.grid.replicates
    print(f"  arithmetic: {(student + teacher) / 1e12:.1f} TFLOP ({teacher / 1e12:.1f} teacher training, "
          f"{student / 1e12:.1f} students, teacher passes, evaluation) = {(student + teacher) / replicates / 1e12:.2f} "
          f"TFLOP per replicate")
    print(f"  floor at the fp32 matmul peak ({peak:.0f} GFLOP/s): {floor:.0f} s ({floor / replicates:.1f} s per "
          f"replicate); measured {wall:.0f} s = {wall / floor:.2f} x floor; 6x the old path allows {six_times:.0f} s "
          f"= {six_times / floor:.2f} x floor")
