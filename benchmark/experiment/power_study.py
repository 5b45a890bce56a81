"""The power study's trainings (PROTOCOL.md section 11): a synthetic cohort per cell, mode and replicate, each a
study of the Monte Carlo regime stored apart, all on one executor; benchmark.evidence.power reads their verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.config import Settings, read_toml, validation_problems
from benchmark.data.synthetic import SyntheticSpec
from benchmark.errors import ConfigError
from benchmark.experiment.matrix import Block, Profile
from benchmark.experiment.store import RunRecord
from benchmark.experiment.synthetic_studies import SyntheticCohort, run_synthetic_studies, synthetic_study_settings
from benchmark.methods.configurations import load_configurations
from benchmark.schemas import RegimeName

DEFAULT_GRIDS = Path(__file__).parent.parent / "configs" / "power.toml"
Mode = Literal["planted", "null"]


class CohortSize(BaseModel):
    """A synthetic cohort size: paired patients and the share of them that is negative."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paired_patients: int = Field(ge=4)
    negative_fraction: float = Field(default=0.25, gt=0, lt=1)


class PowerGrid(BaseModel):
    """A declared power study (benchmark/configs/power.toml)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    cohorts: list[CohortSize] = Field(min_length=1)
    resamples: list[int] = Field(min_length=1, description="values of R to evaluate (one store holds the largest)")
    val_patients: int = Field(default=5, ge=2, description="k")
    replicates: int = Field(ge=1)
    modes: list[Mode] = Field(default_factory=lambda: ["planted", "null"])
    generator: dict[str, Any] = Field(default_factory=dict, description="SyntheticSpec fields")
    settings: dict[str, Any] = Field(default_factory=dict, description="overrides of the run settings")
    training: dict[str, Any] = Field(default_factory=dict, description="overrides of every student's training")
    teacher_training: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0


def load_grid(name: str, path: Path | str | None = None) -> PowerGrid:
    """The named power grid of the grids file (default: the packaged one)."""
    source = Path(path) if path is not None else DEFAULT_GRIDS
    grids = read_toml(source, "power grids").get("grids", {})
    if name not in grids:
        raise ConfigError(f"{source}: no power grid {name!r}; declared: {', '.join(grids) or 'none'}")
    try:
        grid = PowerGrid.model_validate({"name": name, **grids[name]})
        SyntheticSpec.model_validate(grid.generator)
    except ValidationError as exc:
        raise ConfigError(f"{source}: power grid {name!r}: {validation_problems(exc)}") from exc
    return grid


def study_settings(grid: PowerGrid) -> Settings:
    """The run settings of every study of `grid`: the defaults, the grid's overrides, and R and k of its resamples.
    No held-out test set: the power study measures the Monte Carlo rule itself, on validation sets."""
    return synthetic_study_settings(grid.settings, {"monte_carlo_resamples": max(grid.resamples),
                                                    "monte_carlo_val_patients": grid.val_patients})


def _profile(grid: PowerGrid) -> Profile:
    return Profile(name=f"power-{grid.name}", description=grid.description, training=grid.training,
                   teacher_training=grid.teacher_training,
                   blocks=[Block(name="power", purpose="H1 and H2 on the Monte Carlo resamples",
                                 configurations=["student-only", "plain-ct-kd", "same-modality-kd"],
                                 regimes=[RegimeName.PAIRED_MONTE_CARLO])])


def _seed(grid: PowerGrid, cohort_index: int, replicate: int) -> int:
    """The same seed for both modes, so planted and null cohorts share their latent states."""
    return grid.seed + 1000 * cohort_index + replicate


@dataclass
class ReplicateStore:
    """One replicate cohort's finished store: its mode, generator spec and records in declaration order."""

    mode: Mode
    spec: SyntheticSpec
    replicate: int
    root: Path
    records: list[RunRecord]


def run_power_study(grid: PowerGrid, out: Path, *, workers: int = 1, threads: int | None = None,
                    executor: str = "local", device: str = "cpu", progress: bool = True) -> list[ReplicateStore]:
    """Write every replicate cohort, run the grid's profile on each (one executor for all), and return the stores in
    grid order; RunError when any run failed."""
    base = SyntheticSpec.model_validate(grid.generator)
    # scheduled largest cohorts of a replicate first, so the study ends on small jobs; returned in grid order
    planned: dict[tuple[int, int, int], tuple[Mode, int, SyntheticCohort]] = {}
    by_size = sorted(enumerate(grid.cohorts), key=lambda item: -item[1].paired_patients)
    for replicate in range(grid.replicates):
        for index, size in by_size:
            for mode_index, mode in enumerate(grid.modes):
                spec = base.model_copy(update={"mode": mode, "paired_patients": size.paired_patients,
                                               "negative_fraction": size.negative_fraction,
                                               "seed": _seed(grid, index, replicate)})
                name = f"{mode}-n{size.paired_patients}-f{size.negative_fraction:g}-r{replicate}"
                planned[(index, replicate, mode_index)] = (mode, replicate, SyntheticCohort(name, spec))
    finished = run_synthetic_studies([c for _, _, c in planned.values()], _profile(grid), study_settings(grid),
                                     load_configurations(), out, label=f"power {grid.name}", workers=workers,
                                     threads=threads, executor=executor, device=device, progress=progress)
    stores = []
    for _, (mode, replicate, cohort) in sorted(planned.items()):
        done = finished[cohort.name]
        stores.append(ReplicateStore(mode, cohort.spec, replicate, done.root, done.records))
    return stores
