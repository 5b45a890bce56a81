"""benchmark.bench's helpers: the old-path power grid it writes reads back as the same grid on the per-run path."""

from __future__ import annotations

import tomllib
from pathlib import Path

from benchmark.bench import cpu_name, write_grid
from benchmark.evidence.power import DEFAULT_GRIDS, load_grid


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
