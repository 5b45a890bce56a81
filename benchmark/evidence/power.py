"""Protocol power (PROTOCOL.md section 11): how often H1's Monte Carlo rule confirms a planted effect, and a null one.

Rates carry exact (Clopper-Pearson) intervals; the minimum decisive experiment is the smallest cohort reaching both."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from scipy.stats import binomtest

from benchmark.atomic import write_atomically
from benchmark.data.synthetic import SyntheticSpec
from benchmark.evidence.rules import MONTE_CARLO, PowerGrounding, monte_carlo_comparison
from benchmark.experiment.power_study import Mode, PowerGrid, ReplicateStore
from benchmark.experiment.store import code_version, now

TARGET_POWER = 0.8
MAX_FALSE_POSITIVE_RATE = 0.05


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


def tabulate_power(grid: PowerGrid, stores: list[ReplicateStore], seconds: float) -> PowerResult:
    """H1's (and H2's) Monte Carlo verdict on the first R resamples of every replicate store, tabulated into power
    and false-positive rates per cell, and the minimum decisive experiment they imply."""
    outcomes = []
    for store in stores:
        for resamples in grid.resamples:
            subset = [r for r in store.records if r.spec.regime == MONTE_CARLO and r.spec.split.index < resamples]
            h1 = monte_carlo_comparison(subset, "plain-ct-kd", "student-only")
            h2 = monte_carlo_comparison(subset, "plain-ct-kd", "same-modality-kd")
            outcomes.append(ReplicateOutcome(
                mode=store.mode, paired_patients=store.spec.paired_patients,
                negative_patients=store.spec.negative_patients, resamples=resamples, replicate=store.replicate,
                seed=store.spec.seed, h1_confirmed=h1.confirmed,
                h1_mean_d_balanced_accuracy=h1.mean_d_balanced_accuracy, h1_p_value=h1.p_value,
                h2_confirmed=h2.confirmed, store=str(store.root)))
    cells = _cells(outcomes)
    decisive, statement = minimum_decisive_experiment(cells)
    return PowerResult(grid=grid, generator=SyntheticSpec.model_validate(grid.generator), cells=cells,
                       replicates=outcomes, minimum_decisive=decisive, statement=statement, seconds=seconds,
                       code_version=code_version(), created_at=now())


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
