"""The gate-chance study's trainings (issue 26, item 5): null synthetic cohorts, on each a sweep of m cells of one
candidate beside a control, on the k-fold regime (the seed authors' gate) and the Monte Carlo resamples (section 8);
benchmark.evidence.gate_chance reads how often either rule passes at least one cell by chance."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from benchmark.config import Settings, read_toml, validation_problems
from benchmark.data.synthetic import SyntheticSpec
from benchmark.errors import ConfigError
from benchmark.experiment.matrix import Block, Profile, Variant
from benchmark.experiment.power_study import CohortSize
from benchmark.experiment.store import RunRecord
from benchmark.experiment.synthetic_studies import SyntheticCohort, run_synthetic_studies, synthetic_study_settings
from benchmark.methods.configurations import Configuration, load_configurations
from benchmark.methods.registry import OBJECTIVES
from benchmark.schemas import RegimeName

DEFAULT_GATE_CHANCE_GRIDS = Path(__file__).parent.parent / "configs" / "gate_chance.toml"
GATE_REGIMES = (RegimeName.PAIRED_KFOLD, RegimeName.PAIRED_MONTE_CARLO)


class GateChanceGrid(BaseModel):
    """A declared gate-chance study (benchmark/configs/gate_chance.toml): null cohorts, swept cells, m values."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    cohort: CohortSize
    replicates: int = Field(ge=1, description="null cohorts, seeds seed + 0 .. replicates - 1")
    candidate: str = Field(description="the swept configuration (one declared objective term)")
    control: str = "student-only"
    sweep: dict[str, list[Any]] = Field(min_length=1, description="term parameter -> values, crossed in the order "
                                                                  "written (first key outermost)")
    m: list[int] = Field(min_length=1, description="family sizes: the first m cells in declared order")
    resamples: int = Field(ge=2, description="R of section 8's Monte Carlo resamples")
    val_patients: int = Field(default=5, ge=2, description="k of the Monte Carlo resamples")
    kfold_folds: int = Field(default=5, ge=2)
    kfold_seeds: list[int] = Field(default_factory=lambda: [3000, 3001, 3002], min_length=1)
    generator: dict[str, Any] = Field(default_factory=dict, description="SyntheticSpec fields (mode is null)")
    settings: dict[str, Any] = Field(default_factory=dict, description="overrides of the run settings")
    training: dict[str, Any] = Field(default_factory=dict, description="overrides of every student's training")
    teacher_training: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0

    @field_validator("sweep")
    @classmethod
    def _values_to_sweep(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [key for key, values in sweep.items() if not values]
        if empty:
            raise ValueError(f"no values for {', '.join(empty)}")
        return sweep

    @field_validator("m")
    @classmethod
    def _family_sizes(cls, m: list[int], info: ValidationInfo) -> list[int]:
        if sorted(set(m)) != m:
            raise ValueError(f"{m} is not strictly increasing")
        sweep = info.data.get("sweep")
        if sweep is not None:
            cells = math.prod(len(values) for values in sweep.values())
            bad = [size for size in m if not 1 <= size <= cells]
            if bad:
                raise ValueError(f"{bad} outside 1 .. {cells} (the sweep's cells)")
        return m


@dataclass(frozen=True)
class Cell:
    """One swept cell: its configuration name and the term parameters it sets."""

    name: str
    params: dict[str, Any]


def sweep_cells(grid: GateChanceGrid) -> list[Cell]:
    """The grid's cells in declared order (the sweep's keys crossed, first key outermost)."""
    keys = list(grid.sweep)
    return [Cell(f"{grid.candidate}@" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in zip(keys, values, strict=True)),
                 dict(zip(keys, values, strict=True)))
            for values in itertools.product(*grid.sweep.values())]


def _check_cells(grid: GateChanceGrid, configurations: dict[str, Configuration], source: Path) -> None:
    """ConfigError naming the file and key when the candidate, control or a swept parameter is not usable."""
    where = f"{source}: gate-chance grid {grid.name!r}"
    for key in ("candidate", "control"):
        name = getattr(grid, key)
        if name not in configurations:
            raise ConfigError(f"{where}: {key}: unknown configuration {name!r} (declared: {', '.join(configurations)})")
    terms = configurations[grid.candidate].loss.terms
    if len(terms) != 1:
        raise ConfigError(f"{where}: candidate: {grid.candidate!r} declares {len(terms)} objective terms; the sweep "
                          "sets the parameters of exactly one")
    model = getattr(OBJECTIVES.get(terms[0].objective), "Params", None)
    for cell in sweep_cells(grid):
        if isinstance(model, type) and issubclass(model, BaseModel):
            try:
                model.model_validate({**terms[0].params, **cell.params})
            except ValidationError as exc:
                raise ConfigError(f"{where}: sweep: {validation_problems(exc)}") from exc


def load_gate_chance_grid(name: str, path: Path | str | None = None) -> GateChanceGrid:
    """The named gate-chance grid of the grids file (default: the packaged one), checked against the configurations."""
    source = Path(path) if path is not None else DEFAULT_GATE_CHANCE_GRIDS
    grids = read_toml(source, "gate-chance grids").get("grids", {})
    if name not in grids:
        raise ConfigError(f"{source}: no gate-chance grid {name!r}; declared: {', '.join(grids) or 'none'}")
    try:
        grid = GateChanceGrid.model_validate({"name": name, **grids[name]})
        SyntheticSpec.model_validate(grid.generator)
        settings = study_settings(grid)
    except ValidationError as exc:
        raise ConfigError(f"{source}: gate-chance grid {name!r}: {validation_problems(exc)}") from exc
    if settings.gate.regime not in GATE_REGIMES:
        raise ConfigError(f"{source}: gate-chance grid {name!r}: settings.gate.regime: {settings.gate.regime!r} is "
                          f"not run here (one of {', '.join(GATE_REGIMES)})")
    _check_cells(grid, load_configurations(), source)
    return grid


def study_settings(grid: GateChanceGrid) -> Settings:
    """The run settings of every cohort of `grid`: the defaults, its overrides, its R, k, folds and fold seeds, and no
    held-out test set (the rules are measured on validation sets)."""
    return synthetic_study_settings(grid.settings, {
        "monte_carlo_resamples": grid.resamples, "monte_carlo_val_patients": grid.val_patients,
        "kfold_folds": grid.kfold_folds, "kfold_seeds": grid.kfold_seeds})


def _candidate_overrides(configuration: Configuration, params: dict[str, Any]) -> dict[str, Any]:
    term = configuration.loss.terms[0]
    swept = term.model_copy(update={"params": {**term.params, **params}})
    return {"loss": {"terms": [swept.model_dump()]}}


def gate_chance_profile(grid: GateChanceGrid, configurations: dict[str, Configuration]) -> Profile:
    """The control and every cell, on the k-fold regime and the Monte Carlo resamples."""
    candidate = configurations[grid.candidate]
    variants = [Variant(name=c.name, base=grid.candidate, overrides=_candidate_overrides(candidate, c.params))
                for c in sweep_cells(grid)]
    return Profile(name=f"gate-chance-{grid.name}", description=grid.description, training=grid.training,
                   teacher_training=grid.teacher_training,
                   blocks=[Block(name="gate-chance", purpose="every cell against the control, gate and section 8",
                                 configurations=[grid.control], variants=variants, regimes=list(GATE_REGIMES))])


@dataclass
class NullStore:
    """One null cohort's finished store: its replicate number, generator spec and records in declaration order."""

    replicate: int
    spec: SyntheticSpec
    root: Path
    records: list[RunRecord]


def null_cohorts(grid: GateChanceGrid) -> list[SyntheticCohort]:
    """The grid's null cohorts, one per replicate (seed = grid seed + replicate)."""
    base = SyntheticSpec.model_validate(grid.generator)
    size = grid.cohort
    return [SyntheticCohort(f"null-n{size.paired_patients}-f{size.negative_fraction:g}-r{replicate}",
                            base.model_copy(update={"mode": "null", "paired_patients": size.paired_patients,
                                                    "negative_fraction": size.negative_fraction,
                                                    "seed": grid.seed + replicate}))
            for replicate in range(grid.replicates)]


def run_gate_chance_study(grid: GateChanceGrid, out: Path, *, workers: int = 1, threads: int | None = None,
                          executor: str = "local", device: str = "cpu", progress: bool = True) -> list[NullStore]:
    """Write every null cohort, run the control and every cell on each (one executor for all), and return the
    stores in replicate order; RunError when any run failed."""
    configurations = load_configurations()
    cohorts = null_cohorts(grid)
    finished = run_synthetic_studies(cohorts, gate_chance_profile(grid, configurations), study_settings(grid),
                                     configurations, out, label=f"gate-chance {grid.name}", workers=workers,
                                     threads=threads, executor=executor, device=device, progress=progress)
    return [NullStore(replicate, cohort.spec, finished[cohort.name].root, finished[cohort.name].records)
            for replicate, cohort in enumerate(cohorts)]
