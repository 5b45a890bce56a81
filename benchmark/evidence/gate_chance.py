"""How often a sweep passes by chance (issue 26, item 5): on null cohorts, the share with at least one gate pass among
the first m cells of a sweep, beside the share with at least one section 8 pass with Holm across those m cells.

Rates carry exact (Clopper-Pearson) intervals. The cells of one cohort share its patients, folds and resamples, so
their verdicts are correlated, as in a real sweep: the independence curve 1 - (1 - p)^m is a reference, not a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from benchmark.atomic import write_atomically
from benchmark.config import GateSettings
from benchmark.data.synthetic import SyntheticSpec
from benchmark.evidence.gate import gate_rule, gate_verdict
from benchmark.evidence.power import Rate
from benchmark.evidence.results import ALPHA, GateOutcome, Status
from benchmark.evidence.rules import MC_RULE, MONTE_CARLO, monte_carlo_comparison
from benchmark.evidence.statistics import holm_adjusted
from benchmark.experiment.gate_chance_study import GateChanceGrid, NullStore, study_settings, sweep_cells
from benchmark.experiment.store import code_version, now

PACKAGED_GATE_CHANCE = Path(__file__).parent.parent / "configs" / "gate_chance_measured.json"
GATE_CHANCE_FILE = "gate_chance.json"
HOLM_RULE = (f"a cell passes section 8 with Holm iff its comparison with the control is MC-confirmed ({MC_RULE}: none "
             f"of its resamples missing a run, undefined or degenerate) and its sign-flip p, Holm-adjusted across "
             f"the m cells of the family (a cell without a p counts as p = 1), is <= {ALPHA}")


class CellOutcome(BaseModel):
    """One cell of one null cohort: the gate's verdict on k-fold and section 8's comparison on the resamples."""

    cell: str
    params: dict[str, Any]
    gate: GateOutcome
    gate_mean_d_balanced_accuracy: float | None
    gate_lower: float | None
    gate_units: int
    section8_confirmed: bool = Field(description="MC-confirmed, unadjusted (the Holm family of one)")
    section8_p_value: float | None
    section8_mean_d_balanced_accuracy: float | None
    section8_mean_d_macro_f1: float | None
    section8_degenerate: bool


class CohortOutcome(BaseModel):
    """Every cell's verdicts on one null cohort."""

    replicate: int
    seed: int
    paired_patients: int
    negative_patients: int
    store: str
    cells: list[CellOutcome]


class FamilyRate(BaseModel):
    """Over the null cohorts, for the family of the first m cells: the share with at least one false pass."""

    m: int
    cells: list[str] = Field(description="the first m cells, in declared order")
    gate_any: Rate = Field(description="cohorts where the gate passes at least one of the m cells")
    section8_holm_any: Rate = Field(description="cohorts where at least one of the m cells passes section 8 with "
                                                "Holm across the m cells")
    section8_unadjusted_any: Rate = Field(description="the same without Holm (shown, never the rule)")
    gate_independent: float = Field(description="1 - (1 - p)^m, p the mean per-cell gate rate of the m cells")
    section8_independent: float = Field(description="the same for section 8's per-cell rate (unadjusted)")


class CellRate(BaseModel):
    """One cell's false-pass rate over the null cohorts, by each rule alone."""

    cell: str
    params: dict[str, Any]
    gate: Rate
    section8: Rate


class Margins(BaseModel):
    """How near the rules came to a false pass, over every cell of every null cohort."""

    pairs: int = Field(description="cell-cohort pairs")
    gate_mean_difference: float | None = Field(description="mean of the gate's mean dBA (cell - control) over pairs")
    gate_sd_difference: float | None
    gate_reaching_threshold: int = Field(description="pairs whose mean dBA reaches the gate's least difference")
    gate_lower_above_zero: int = Field(description="pairs whose bootstrap lower bound is > 0")
    smallest_section8_p: float | None = Field(description="the smallest raw sign-flip p of any pair")
    holm_threshold: float = Field(description="the raw p the smallest of m must reach under Holm: alpha / m, largest m")


class GateChanceResult(BaseModel):
    """A finished gate-chance study: per-m family rates, per-cell rates, every cohort's verdicts, and where from."""

    grid: GateChanceGrid
    generator: SyntheticSpec
    gate: GateSettings
    gate_rule: str
    section8_rule: str
    cells: list[str] = Field(description="every cell, in declared order: the first m of them form family m")
    distinct_cells: int = Field(description="cells whose numbers differ on some cohort: cells with the same numbers "
                                            "on every cohort (e.g. a tau no teacher output reaches) count once")
    design: str
    families: list[FamilyRate]
    per_cell: list[CellRate]
    margins: Margins
    cohorts: list[CohortOutcome]
    statement: str
    seconds: float
    machine: str
    code_version: str
    created_at: str


def cohort_outcome(store: NullStore, grid: GateChanceGrid, gate: GateSettings) -> CohortOutcome:
    """Every cell of `grid` against its control on one null cohort's store: gate (its regime) and section 8 (MC)."""
    outcomes = []
    for cell in sweep_cells(grid):
        mc = monte_carlo_comparison(store.records, cell.name, grid.control, MONTE_CARLO)
        status = Status.SUPPORTED if mc.confirmed else Status.NOT_SUPPORTED
        verdict = gate_verdict(store.records, f"{cell.name} vs {grid.control}", cell.name, grid.control, status, gate)
        outcomes.append(CellOutcome(
            cell=cell.name, params=cell.params, gate=verdict.outcome,
            gate_mean_d_balanced_accuracy=verdict.mean_d_balanced_accuracy, gate_lower=verdict.lower,
            gate_units=verdict.units, section8_confirmed=mc.confirmed, section8_p_value=mc.p_value,
            section8_mean_d_balanced_accuracy=mc.mean_d_balanced_accuracy,
            section8_mean_d_macro_f1=mc.mean_d_macro_f1, section8_degenerate=mc.degenerate))
    return CohortOutcome(replicate=store.replicate, seed=store.spec.seed, paired_patients=store.spec.paired_patients,
                         negative_patients=store.spec.negative_patients, store=str(store.root), cells=outcomes)


def holm_passes(cells: Sequence[CellOutcome]) -> list[bool]:
    """Which cells of one family pass section 8 with Holm across the family."""
    adjusted = holm_adjusted([1.0 if c.section8_p_value is None else c.section8_p_value for c in cells])
    return [c.section8_confirmed and p <= ALPHA for c, p in zip(cells, adjusted, strict=True)]


def family_rate(cohorts: Sequence[CohortOutcome], m: int) -> FamilyRate:
    """The family of the first m cells over `cohorts`: at least one gate pass, at least one section 8 pass with Holm."""
    families = [c.cells[:m] for c in cohorts]
    n = len(families)
    gate = sum(any(x.gate == GateOutcome.PASSES for x in f) for f in families)
    holm = sum(any(holm_passes(f)) for f in families)
    raw = sum(any(x.section8_confirmed for x in f) for f in families)
    p_gate = sum(x.gate == GateOutcome.PASSES for f in families for x in f) / (n * m)
    p_section8 = sum(x.section8_confirmed for f in families for x in f) / (n * m)
    return FamilyRate(m=m, cells=[x.cell for x in families[0]], gate_any=Rate.of(gate, n),
                      section8_holm_any=Rate.of(holm, n), section8_unadjusted_any=Rate.of(raw, n),
                      gate_independent=1 - (1 - p_gate) ** m, section8_independent=1 - (1 - p_section8) ** m)


def distinct_cells(cohorts: Sequence[CohortOutcome]) -> int:
    """How many cells differ from each other in their numbers (both rules') on at least one cohort."""
    def numbers(index: int) -> tuple[tuple[object, ...], ...]:
        return tuple((x.gate_mean_d_balanced_accuracy, x.gate_lower, x.section8_p_value,
                      x.section8_mean_d_balanced_accuracy, x.section8_mean_d_macro_f1)
                     for x in (c.cells[index] for c in cohorts))

    return len({numbers(i) for i in range(len(cohorts[0].cells))})


def margins(cohorts: Sequence[CohortOutcome], gate: GateSettings, largest_m: int) -> Margins:
    """How near each rule came to a false pass on these cohorts (see Margins)."""
    cells = [x for c in cohorts for x in c.cells]
    means = np.array([x.gate_mean_d_balanced_accuracy for x in cells if x.gate_mean_d_balanced_accuracy is not None])
    p_values = [x.section8_p_value for x in cells if x.section8_p_value is not None]
    return Margins(pairs=len(cells), gate_mean_difference=float(means.mean()) if means.size else None,
                   gate_sd_difference=float(means.std()) if means.size else None,
                   gate_reaching_threshold=int((means >= gate.min_mean_difference).sum()),
                   gate_lower_above_zero=sum(x.gate_lower is not None and x.gate_lower > 0 for x in cells),
                   smallest_section8_p=min(p_values) if p_values else None, holm_threshold=ALPHA / largest_m)


def tabulate_outcomes(grid: GateChanceGrid, cohorts: Sequence[CohortOutcome], seconds: float, machine: str = ""
                      ) -> GateChanceResult:
    """Family rates for every m of the grid and per-cell rates, from every null cohort's cell verdicts."""
    cells = sweep_cells(grid)
    if not cohorts or any([x.cell for x in c.cells] != [x.name for x in cells] for c in cohorts):
        raise ValueError("every null cohort needs a verdict for each cell of the grid, in declared order")
    gate = study_settings(grid).gate
    families = [family_rate(cohorts, m) for m in grid.m]
    per_cell = [CellRate(cell=cell.name, params=cell.params,
                         gate=Rate.of(sum(c.cells[i].gate == GateOutcome.PASSES for c in cohorts), len(cohorts)),
                         section8=Rate.of(sum(c.cells[i].section8_confirmed for c in cohorts), len(cohorts)))
                for i, cell in enumerate(cells)]
    design = (f"{len(cohorts)} null cohorts of {grid.cohort.paired_patients} paired patients; the cells are "
              f"{grid.candidate} over {' x '.join(f'{k} {v}' for k, v in grid.sweep.items())}, crossed in that order "
              f"(first key outermost), each against {grid.control}; family m is the first m cells in that order. "
              f"The gate reads {gate.regime} ({grid.kfold_folds} folds x {len(grid.kfold_seeds)} seeds), section 8 "
              f"reads {MONTE_CARLO} (R = {grid.resamples}, k = {grid.val_patients}). The cells of a cohort share its "
              "patients, folds, resamples, teachers and control runs, so their verdicts are correlated, as in a real "
              "sweep.")
    distinct = distinct_cells(cohorts)
    near = margins(cohorts, gate, max(grid.m))
    if distinct < len(cells):
        design += (f" Only {distinct} of the {len(cells)} cells differ in their numbers on some cohort; the others "
                   "repeat one of them exactly on every cohort (e.g. a tau the teacher's confidence is always above).")
    return GateChanceResult(grid=grid, generator=SyntheticSpec.model_validate(grid.generator), gate=gate,
                            gate_rule=gate_rule(gate), section8_rule=HOLM_RULE, cells=[c.name for c in cells],
                            distinct_cells=distinct, design=design, families=families, per_cell=per_cell,
                            margins=near, cohorts=list(cohorts),
                            statement=chance_statement(families[-1], len(cohorts), near, gate), seconds=seconds,
                            machine=machine,                            code_version=code_version(), created_at=now())


def tabulate_gate_chance(grid: GateChanceGrid, stores: Sequence[NullStore], seconds: float, machine: str = ""
                         ) -> GateChanceResult:
    """Every null cohort's cell verdicts from its store, tabulated (see `tabulate_outcomes`)."""
    gate = study_settings(grid).gate
    return tabulate_outcomes(grid, [cohort_outcome(s, grid, gate) for s in stores], seconds, machine)


def _rate(rate: Rate) -> str:
    return f"{rate.rate:.2f} ({rate.detections}/{rate.replicates}; 95% CI {rate.low:.2f}-{rate.high:.2f})"


def chance_statement(family: FamilyRate, cohorts: int, near: Margins, gate: GateSettings) -> str:
    """The headline: the chance of at least one false pass among the family's m cells by each rule, and how near."""
    headline = (f"chance of at least one false gate pass among m = {family.m} cells: {_rate(family.gate_any)} over "
                f"{cohorts} null cohorts; section 8 with Holm across the {family.m} cells: "
                f"{_rate(family.section8_holm_any)}.")
    if near.gate_mean_difference is None:
        return headline
    smallest = "none" if near.smallest_section8_p is None else f"{near.smallest_section8_p:.4g}"
    return (f"{headline} Over the {near.pairs} cell-cohort pairs the gate's mean dBA (cell - control) averaged "
            f"{near.gate_mean_difference:+.3f} (sd {near.gate_sd_difference:.3f}); {near.gate_reaching_threshold} "
            f"reached {gate.min_mean_difference:+.3f} and {near.gate_lower_above_zero} had a bootstrap lower bound > "
            f"0. The smallest raw section 8 p was {smallest} (Holm at m = {family.m} needs <= "
            f"{near.holm_threshold:.4g} for the smallest).")


def write_gate_chance(result: GateChanceResult, path: Path) -> Path:
    """Write a gate-chance study's result as JSON."""
    write_atomically(path, result.model_dump_json(indent=1).encode("utf-8"))
    return path


def read_gate_chance(path: Path) -> GateChanceResult:
    """Read a gate-chance study's result."""
    return GateChanceResult.model_validate_json(path.read_bytes())


def store_gate_chance(root: Path) -> GateChanceResult | None:
    """The gate-chance result stored beside a results store (ROOT/gate_chance.json), if any."""
    path = root / GATE_CHANCE_FILE
    return read_gate_chance(path) if path.is_file() else None


def packaged_gate_chance() -> GateChanceResult:
    """The measured result shipped with the package (benchmark/configs/gate_chance_measured.json): its grid, machine,
    code version and date are inside it."""
    return read_gate_chance(PACKAGED_GATE_CHANCE)


def chance_series(result: GateChanceResult) -> tuple[dict[str, tuple[list[int], list[float], list[float],
                                                                     list[float]]], dict[str, list[float]]]:
    """The data of report.figures.chance_curves: per rule, m -> rate and interval; the gate's independence curve."""
    gate, holm = "seed authors' gate", "section 8 with Holm"
    ms = [f.m for f in result.families]

    def of(attribute: str) -> tuple[list[int], list[float], list[float], list[float]]:
        rates = [getattr(f, attribute) for f in result.families]
        return ms, [r.rate for r in rates], [r.low for r in rates], [r.high for r in rates]

    return ({gate: of("gate_any"), holm: of("section8_holm_any")},
            {gate: [f.gate_independent for f in result.families]})
