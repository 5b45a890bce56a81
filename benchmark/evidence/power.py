"""Protocol power: how often the Monte Carlo protocol detects a planted transfer effect, and how often a null one.

For every cell of a grid (cohort size x number of resamples R x mode) and every replicate seed, a
synthetic cohort (benchmark.data.synthetic) is written in the collection's layout and the protocol's
Monte Carlo regime is run on it with the real loader, splits, engine and runner (one executor for
the whole study). H1's Monte Carlo rule, MC-confirmed(plain-ct-kd > student-only), is then applied
to the first R resamples (resample r is the same whatever R, so one store serves every R). The
detection rate in `planted` mode is the power, in `null` mode the false-positive rate; each comes
with an exact (Clopper-Pearson) 95% binomial interval. The minimum decisive experiment is the
smallest cohort (then fewest resamples) whose power is at least 0.8 while its false-positive rate
is at most 0.05 (point estimates, intervals reported beside them), or the statement that none on
the grid reaches it. H2's rule (plain-ct-kd > same-modality-kd) is reported alongside.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.stats import binomtest

from benchmark.atomic import write_atomically
from benchmark.config import Settings, load_settings, read_toml, validation_problems
from benchmark.data.pipeline import image_cache, prepare_data
from benchmark.data.synthetic import SyntheticSpec, write_synthetic_cohort
from benchmark.errors import ConfigError, RunError
from benchmark.evidence.rules import MONTE_CARLO, PowerGrounding, monte_carlo_comparison
from benchmark.experiment.matrix import Block, Profile, expand_profile
from benchmark.experiment.runner import Batch, execute_batches, make_executor, open_store, preflight, store_manifest
from benchmark.experiment.store import ResultsStore, RunRecord, code_version, now
from benchmark.experiment.worker import WorkerContext
from benchmark.methods.configurations import load_configurations, merge_overrides

DEFAULT_GRIDS = Path(__file__).parent.parent / "configs" / "power.toml"
Mode = Literal["planted", "null"]
TARGET_POWER = 0.8
MAX_FALSE_POSITIVE_RATE = 0.05


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


class ReplicateOutcome(BaseModel):
    """One replicate of one cell: whether H1 (and H2) was MC-confirmed, with its numbers."""

    mode: Mode
    paired_patients: int
    negative_patients: int
    resamples: int
    replicate: int
    seed: int
    h1_confirmed: bool
    h1_mean_d_balanced_accuracy: float | None
    h1_p_value: float | None
    h2_confirmed: bool
    store: str


class Rate(BaseModel):
    """A detection rate with its exact binomial 95% interval."""

    detections: int
    replicates: int
    rate: float
    low: float
    high: float

    @classmethod
    def of(cls, detections: int, replicates: int) -> Rate:
        """Clopper-Pearson interval of detections / replicates."""
        interval = binomtest(detections, replicates).proportion_ci(confidence_level=0.95, method="exact")
        return cls(detections=detections, replicates=replicates, rate=detections / replicates,
                   low=float(interval.low), high=float(interval.high))


class PowerCell(BaseModel):
    """One (cohort size, R) cell: power and false-positive rate of H1, and the same for H2."""

    paired_patients: int
    negative_patients: int
    resamples: int
    h1_power: Rate | None
    h1_false_positive_rate: Rate | None
    h2_power: Rate | None
    h2_false_positive_rate: Rate | None


class PowerResult(BaseModel):
    """A finished power study and the minimum decisive experiment it implies."""

    grid: PowerGrid
    generator: SyntheticSpec
    cells: list[PowerCell]
    replicates: list[ReplicateOutcome]
    minimum_decisive: PowerCell | None
    statement: str
    seconds: float
    code_version: str
    created_at: str


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
    overrides = merge_overrides(grid.settings, {"splits": {"monte_carlo_resamples": max(grid.resamples),
                                                           "monte_carlo_val_patients": grid.val_patients},
                                                "test_sets": {"held_out": False}})
    return Settings.model_validate(merge_overrides(load_settings().model_dump(), overrides))


def _profile(grid: PowerGrid) -> Profile:
    return Profile(name=f"power-{grid.name}", description=grid.description, training=grid.training,
                   teacher_training=grid.teacher_training,
                   blocks=[Block(name="power", purpose="H1 and H2 on the Monte Carlo resamples",
                                 configurations=["student-only", "plain-ct-kd", "same-modality-kd"],
                                 regimes=["paired-monte-carlo"])])


def _seed(grid: PowerGrid, cohort_index: int, replicate: int) -> int:
    """The same seed for both modes, so planted and null cohorts share their latent states."""
    return grid.seed + 1000 * cohort_index + replicate


def run_power(grid: PowerGrid, out: Path, *, workers: int = 1, threads: int | None = None, executor: str = "local",
              device: str = "cpu", progress: bool = True) -> PowerResult:
    """Generate every replicate cohort, run the protocol on all of them, and tabulate power and false positives."""
    start = time.perf_counter()
    workers, threads = preflight(out, workers, threads, device)
    settings = study_settings(grid)
    profile = _profile(grid)
    configurations = load_configurations()
    base = SyntheticSpec.model_validate(grid.generator)
    version = code_version()
    cache = image_cache(settings, out / "cache")
    # each cohort's (mode, spec, replicate, store, position of each run id), in declaration order once sorted
    planned: dict[tuple[int, int, int], tuple[Mode, SyntheticSpec, int, Path, dict[str, int]]] = {}
    started: list[Path] = []

    def cohorts() -> Iterator[Batch]:
        """Write and prepare each replicate cohort as the runner asks for more work (largest cohorts of a replicate
        first, so the study ends on small jobs), and yield its remaining runs."""
        by_size = sorted(enumerate(grid.cohorts), key=lambda item: -item[1].paired_patients)
        for replicate in range(grid.replicates):
            for index, size in by_size:
                for mode_index, mode in enumerate(grid.modes):
                    spec = base.model_copy(update={"mode": mode, "paired_patients": size.paired_patients,
                                                   "negative_fraction": size.negative_fraction,
                                                   "seed": _seed(grid, index, replicate)})
                    name = f"{mode}-n{size.paired_patients}-f{size.negative_fraction:g}-r{replicate}"
                    data = out / "cohorts" / name
                    if not (data / "metadata.csv").is_file():
                        write_synthetic_cohort(data, spec)
                    prepared = prepare_data(data, settings, cache)
                    specs = expand_profile(profile, configurations, prepared.regimes)
                    manifest = store_manifest(profile, settings, prepared, specs, version)
                    opened = open_store(out / "stores" / name, manifest, specs)
                    planned[(index, replicate, mode_index)] = (mode, spec, replicate, opened.store.root,
                                                               {s.run_id: i for i, s in enumerate(specs)})
                    if opened.todo:
                        context = WorkerContext(data_root=str(data), settings=settings, cache_root=str(out / "cache"),
                                                teacher_root=str(out / "teachers"), device=device, threads=threads,
                                                code_version=version, data=manifest.data)
                        started.append(opened.store.root)
                        yield Batch(context, opened.store, opened.todo)

    pool = make_executor(executor, workers, threads, device)
    computed: dict[Path, list[RunRecord]] = {}
    try:
        failures = execute_batches(cohorts(), pool, label=f"power {grid.name}", progress=progress,
                                   on_record=lambda number, record: computed.setdefault(
                                       started[number], []).append(record)).failures
    finally:
        pool.shutdown()
    if failures:
        run_id, why = next(iter(failures.items()))
        raise RunError(f"{len(failures)} power run(s) failed, e.g. {run_id}: {why}")

    outcomes = []
    for _, (mode, spec, replicate, root, order) in sorted(planned.items()):
        # the records just computed, as stored (in declaration order); a store (partly) finished earlier is read back
        fresh = computed.get(root, [])
        records = sorted(fresh, key=lambda r: order[r.spec.run_id]) if len(fresh) == len(order) else \
            ResultsStore(root).load_all()
        for resamples in grid.resamples:
            subset = [r for r in records if r.spec.regime == MONTE_CARLO and r.spec.split.index < resamples]
            h1 = monte_carlo_comparison(subset, "plain-ct-kd", "student-only")
            h2 = monte_carlo_comparison(subset, "plain-ct-kd", "same-modality-kd")
            outcomes.append(ReplicateOutcome(
                mode=mode, paired_patients=spec.paired_patients, negative_patients=spec.negative_patients,
                resamples=resamples, replicate=replicate, seed=spec.seed, h1_confirmed=h1.confirmed,
                h1_mean_d_balanced_accuracy=h1.mean_d_balanced_accuracy, h1_p_value=h1.p_value,
                h2_confirmed=h2.confirmed, store=str(root)))
    cells = _cells(outcomes)
    decisive, statement = minimum_decisive_experiment(cells)
    return PowerResult(grid=grid, generator=base, cells=cells, replicates=outcomes, minimum_decisive=decisive,
                       statement=statement, seconds=time.perf_counter() - start, code_version=version,
                       created_at=now())


def _rate(outcomes: list[ReplicateOutcome], mode: Mode, attribute: str) -> Rate | None:
    chosen = [o for o in outcomes if o.mode == mode]
    return Rate.of(sum(getattr(o, attribute) for o in chosen), len(chosen)) if chosen else None


def _cells(outcomes: list[ReplicateOutcome]) -> list[PowerCell]:
    keys = sorted({(o.paired_patients, o.negative_patients, o.resamples) for o in outcomes})
    cells = []
    for patients, negatives, resamples in keys:
        group = [o for o in outcomes if (o.paired_patients, o.negative_patients, o.resamples) ==
                 (patients, negatives, resamples)]
        cells.append(PowerCell(
            paired_patients=patients, negative_patients=negatives, resamples=resamples,
            h1_power=_rate(group, "planted", "h1_confirmed"),
            h1_false_positive_rate=_rate(group, "null", "h1_confirmed"),
            h2_power=_rate(group, "planted", "h2_confirmed"),
            h2_false_positive_rate=_rate(group, "null", "h2_confirmed")))
    return cells


def minimum_decisive_experiment(cells: list[PowerCell]) -> tuple[PowerCell | None, str]:
    """The smallest cohort, then fewest resamples, with H1 power >= 0.8 and false-positive rate <= 0.05."""
    for cell in sorted(cells, key=lambda c: (c.paired_patients, c.resamples)):
        power, false_positive = cell.h1_power, cell.h1_false_positive_rate
        if power and false_positive and power.rate >= TARGET_POWER and false_positive.rate <= MAX_FALSE_POSITIVE_RATE:
            return cell, (
                f"{cell.paired_patients} paired patients ({cell.negative_patients} negative) with R = "
                f"{cell.resamples} Monte Carlo resamples detect the planted effect in {power.detections}/"
                f"{power.replicates} replicates (power {power.rate:.2f}, 95% CI {power.low:.2f}-{power.high:.2f}) "
                f"while confirming H1 in {false_positive.detections}/{false_positive.replicates} null replicates "
                f"(false-positive rate {false_positive.rate:.2f}, 95% CI {false_positive.low:.2f}-"
                f"{false_positive.high:.2f}).{_precision_caveat(power, false_positive)}")
    return None, (f"No cohort on this grid reaches power >= {TARGET_POWER} with a false-positive rate <= "
                  f"{MAX_FALSE_POSITIVE_RATE}: a decisive experiment needs more paired patients than the grid "
                  "holds (its resample counts are design choices for a new cohort; more resamples of the same "
                  "patients do not add independent evidence).")


def _precision_caveat(power: Rate, false_positive: Rate) -> str:
    """Say when the replicates are too few for the intervals themselves to clear the thresholds."""
    if power.low >= TARGET_POWER and false_positive.high <= MAX_FALSE_POSITIVE_RATE:
        return ""
    return (f" These are point estimates from {power.replicates} planted and {false_positive.replicates} null "
            f"replicates: the intervals do not yet exclude power below {TARGET_POWER} or a false-positive rate "
            f"above {MAX_FALSE_POSITIVE_RATE}; raise the grid's replicates for a confirmatory answer.")


def write_power(result: PowerResult, path: Path) -> Path:
    """Write a power study's result as JSON."""
    write_atomically(path, result.model_dump_json(indent=1).encode("utf-8"))
    return path


def read_power(path: Path) -> PowerResult:
    """Read a power study's result."""
    return PowerResult.model_validate_json(path.read_bytes())


def power_grounding(result: PowerResult) -> PowerGrounding:
    """What the power study says a decisive experiment needs, for the evidence's statements in patients."""
    decisive = result.minimum_decisive
    return PowerGrounding(
        source=f"grid {result.grid.name!r}: synthetic planted and null cohorts, {result.grid.replicates} replicates "
               f"per cell, k = {result.grid.val_patients}",
        paired_patients=decisive.paired_patients if decisive else None,
        negative_patients=decisive.negative_patients if decisive else None, statement=result.statement)


def store_power_grounding(root: Path) -> PowerGrounding | None:
    """The power grounding of the power study stored beside a results store (ROOT/power.json), if any."""
    path = root / "power.json"
    return power_grounding(read_power(path)) if path.is_file() else None
