"""benchmark.bench's helpers: the old-path power grid it writes reads back as the same grid on the per-run path, and
FLOPs are counted on the path a run trained on."""

from __future__ import annotations

import tomllib
from pathlib import Path

from benchmark.bench import _flops_per_sample, cpu_name, write_grid
from benchmark.experiment.power_study import DEFAULT_GRIDS, load_grid
from benchmark.methods.configurations import load_configurations


def test_the_old_path_grid_written_by_the_bench_is_the_default_grid_on_the_per_run_path(tmp_path: Path) -> None:
    declared = tomllib.loads(DEFAULT_GRIDS.read_text(encoding="utf-8"))["grids"]["default"]
    old = {**declared, "replicates": 2, "settings": {**declared["settings"], "engine": {"path": "per-run"}},
           "description": 'a "quoted" description'}
    grid = load_grid("default", write_grid(tmp_path / "grids.toml", "default", old))
    default = load_grid("default")
    assert grid.settings["engine"] == {"path": "per-run"} and default.settings["engine"] == {"path": "stacked"}
    assert grid.replicates == 2 and grid.description == 'a "quoted" description'
    assert grid.model_dump(exclude={"settings", "replicates", "description"}) == default.model_dump(
        exclude={"settings", "replicates", "description"})


def test_the_bench_names_the_cpu() -> None:
    assert cpu_name().strip()


def test_the_stacked_path_is_counted_without_the_taps_that_only_read_padding() -> None:
    configuration = load_configurations()["plain-ct-kd"]
    dense = _flops_per_sample(configuration, 16)
    stacked = _flops_per_sample(configuration, 16, stacked=True, teacher_stacked=True)
    assert stacked["train"] < dense["train"] and stacked["teacher_train"] < dense["teacher_train"]
    assert (stacked["forward"], stacked["teacher_forward"]) == (dense["forward"], dense["teacher_forward"])


def test_without_padding_only_taps_the_stacked_path_counts_the_dense_arithmetic() -> None:
    configuration = load_configurations()["plain-ct-kd"]
    assert _flops_per_sample(configuration, 64, stacked=True, teacher_stacked=True) == \
        _flops_per_sample(configuration, 64)
