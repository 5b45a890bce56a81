"""What the evidence report shows: `ReportData`, every table, figure and status computed from a results store.

Kept apart from the page (benchmark.report.render), the numbers the claim tests recompute have one builder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from benchmark.evidence.gate_chance import GateChanceResult, chance_series, packaged_gate_chance, store_gate_chance
from benchmark.evidence.power import (
    MAX_FALSE_POSITIVE_RATE,
    TARGET_POWER,
    PowerResult,
    read_power,
    store_power_grounding,
)
from benchmark.evidence.preregistration import PlanStatus, store_plan_status
from benchmark.evidence.results import Evidence, TestEvidence
from benchmark.evidence.rules import FIXED, MONTE_CARLO
from benchmark.evidence.summary import AggregateRow, aggregate, runs_of, scored_view
from benchmark.evidence.verdict import store_evidence
from benchmark.experiment.matrix import EXHAUSTIVE_REGIME, block_names
from benchmark.experiment.metrics import SWEEP_THRESHOLDS
from benchmark.experiment.store import ResultsStore, RunRecord, StoreManifest, now
from benchmark.methods.configurations import load_configurations
from benchmark.report import figures
from benchmark.schemas import RegimeName

# The view model is kept apart from the page (benchmark.report.render) so that the numbers the claim tests recompute
# have one builder, whatever template draws them.

STRESS_BLOCKS = {"temperature-alpha", "leave-one-out", "progressive", "balanced-sampler", "training-length"}
REFERENCE = ("xray-teacher-ref", "ct-teacher-ref")


class BlockSection(BaseModel):
    """One declared block of the matrix: its purpose and an aggregate row per name x regime."""

    name: str
    purpose: str
    rows: list[AggregateRow]


class RunIndexRow(BaseModel):
    """One stored run, for the provenance index."""

    run_id: str
    names: list[str]
    blocks: list[str]
    regime: str
    split_id: str
    seed: int
    balanced_accuracy: float | None
    balanced_accuracy_undefined: str | None = Field(default=None, description="why BA is undefined on this run")
    macro_f1: float
    cases: int
    code_version: str
    finished_at: str


class ReportData(BaseModel):
    """Everything the report shows, computed from the store (embedded in the page as JSON)."""

    generated_at: str
    store: str
    manifest: StoreManifest
    complete: bool
    missing_runs: int
    tier_names: list[str]
    references: list[AggregateRow]
    fixed: list[AggregateRow]
    monte_carlo: list[AggregateRow]
    exhaustive: list[AggregateRow] = Field(default_factory=list, description="every name run on paired-exhaustive")
    blocks: list[BlockSection]
    evidence: Evidence
    runs: list[RunIndexRow]
    test_tables: dict[str, list[AggregateRow]] = Field(
        default_factory=dict, description="test set -> the tiers' rows on its scores (fixed split and Monte Carlo)")
    figures: dict[str, str] = Field(default_factory=dict)
    figure_runs: dict[str, list[str]] = Field(default_factory=dict)
    power: PowerResult | None = None
    gate_chance: GateChanceResult | None = Field(default=None, description="the store's gate-chance study, else the "
                                                 "packaged measurement when the store evaluates the gate")
    gate_chance_packaged: bool = False
    preregistration: PlanStatus = Field(default_factory=lambda: PlanStatus(registered=False))


def power_figure(power: PowerResult) -> str:
    """H1 power (planted) and false-positive rate (null) against cohort size, one pair of lines per R."""
    series = {}
    for resamples in sorted({c.resamples for c in power.cells}):
        cells = sorted((c for c in power.cells if c.resamples == resamples), key=lambda c: c.paired_patients)
        for label, attribute in (("power", "h1_power"), ("false positives", "h1_false_positive_rate")):
            rates = [(c.paired_patients, getattr(c, attribute)) for c in cells if getattr(c, attribute)]
            if rates:
                series[f"{label}, R = {resamples}"] = ([x for x, _ in rates], [r.rate for _, r in rates],
                                                       [r.low for _, r in rates], [r.high for _, r in rates])
    return figures.power_curves(series, TARGET_POWER, MAX_FALSE_POSITIVE_RATE,
                                "H1 on synthetic cohorts (planted: power; null: false positives)")


def _rows(records: Sequence[RunRecord], names: Sequence[str], regimes: Sequence[str]) -> list[AggregateRow]:
    """One aggregate row per name x regime that has runs."""
    return [row for name in names for regime in regimes if (row := aggregate(records, name, regime))]


def _fixed_figure(records: Sequence[RunRecord], names: Sequence[str], regime: str, title: str) -> str | None:
    """Balanced accuracy per name on one split: a bar of the mean, a dot per seed; None without runs."""
    present = [n for n in names if runs_of(records, n, regime)]
    if not present:
        return None
    values = [[r.metrics.balanced_accuracy for r in runs_of(records, n, regime)] for n in present]
    collapsed = [[r.metrics.collapsed for r in runs_of(records, n, regime)] for n in present]
    return figures.bars_with_points(present, values, "balanced accuracy", title,  # None: drawn as "undefined"
                                    collapsed=collapsed)


def _mc_figure(records: Sequence[RunRecord], names: Sequence[str], title: str) -> str | None:
    """Balanced accuracy per Monte Carlo resample, names joined by resample; None without runs."""
    present = [n for n in names if runs_of(records, n, MONTE_CARLO)]
    if not present:
        return None
    per_split: dict[str, dict[str, float]] = {}
    collapsed: dict[str, set[str]] = {}
    for name in present:
        for run in runs_of(records, name, MONTE_CARLO):
            if run.metrics.balanced_accuracy is not None:  # an undefined BA is no point
                per_split.setdefault(run.spec.split.split_id, {}).setdefault(name, run.metrics.balanced_accuracy)
                if run.metrics.collapsed:
                    collapsed.setdefault(run.spec.split.split_id, set()).add(name)
    return figures.paired_points(present, per_split, "balanced accuracy (one point per resample)", title,
                                 collapsed=collapsed)


def _ranking_figure(evidence: TestEvidence) -> str | None:
    """Validation against test balanced accuracy per configuration of one test set; None without both."""
    rows = [r for r in evidence.ranking.rows
            if r.validation_balanced_accuracy is not None and r.test_balanced_accuracy is not None]
    if not rows:
        return None
    return figures.validation_against_test(
        [r.configuration for r in rows], [r.validation_balanced_accuracy for r in rows],  # type: ignore[misc]
        [r.test_balanced_accuracy for r in rows],  # type: ignore[misc]
        [f"{r.validation_collapsed}/{r.test_collapsed}" for r in rows], evidence.test_set,
        f"does the ranking survive on {evidence.test_set}? (collapsed runs: validation/test)")


def _grid_figure(records: Sequence[RunRecord], names: Sequence[str]) -> str | None:
    """Heatmaps of balanced accuracy over temperature x KD weight, one per base method; None without runs."""
    panels, collapsed = {}, {}
    for base in ("plain-ct-kd", "jdcnet"):
        runs = [r for n in names if n.startswith(base + "@") for r in runs_of(records, n, FIXED)]
        if not runs:
            continue
        temperatures = sorted({r.spec.configuration.loss.temperature for r in runs})
        alphas = sorted({r.spec.configuration.loss.kd_alpha for r in runs})
        matrix = np.full((len(alphas), len(temperatures)), np.nan)
        flags = np.zeros(matrix.shape, dtype=bool)
        for run in runs:
            loss = run.spec.configuration.loss
            cell = alphas.index(loss.kd_alpha), temperatures.index(loss.temperature)
            ba = run.metrics.balanced_accuracy
            if ba is not None:  # an undefined BA stays an empty cell
                matrix[cell] = ba
            flags[cell] = run.metrics.collapsed
        panels[base] = (temperatures, alphas, matrix)
        collapsed[base] = flags
    if not panels:
        return None
    return figures.heatmaps(panels, "temperature T", "KD weight a", "balanced accuracy, fixed split, seed 42",
                            collapsed=collapsed)


def _length_figure(records: Sequence[RunRecord], names: Sequence[str]) -> str | None:
    """Monte Carlo balanced accuracy against student epochs, one line per base name; None without runs."""
    series = {}
    for base in dict.fromkeys(n.rsplit("@epochs=", 1)[0] for n in names):
        points = []
        for name in names:
            if name.rsplit("@epochs=", 1)[0] != base:
                continue
            row = aggregate(records, name, MONTE_CARLO)
            runs = runs_of(records, name, MONTE_CARLO)
            if row and runs and row.stats["balanced_accuracy"].mean is not None:  # undefined: no point
                s = row.stats["balanced_accuracy"]
                points.append((runs[0].spec.configuration.training.epochs, s.mean, s.sd,
                               f"{row.collapsed_runs}/{row.runs}"))
        if points:
            points.sort()
            label = f"{base} (collapsed {', '.join(p[3] for p in points)})"
            series[label] = ([p[0] for p in points], [p[1] for p in points], [p[2] for p in points])
    if not series:
        return None
    return figures.lines(series, "student epochs (teachers unchanged)", "balanced accuracy (MC mean ± sd)",
                         "training length, Monte Carlo resamples", log_x=True)


def _sweep_figure(records: Sequence[RunRecord], names: Sequence[str]) -> str | None:
    """Mean Monte Carlo balanced accuracy against the decision threshold; None without a defined sweep."""
    series = {}
    for name in names:
        runs = [r for r in runs_of(records, name, MONTE_CARLO)  # BA undefined on a run: no curve from it
                if all(p.balanced_accuracy is not None for p in r.metrics.sweep)]
        if runs:
            curves = np.array([[p.balanced_accuracy for p in r.metrics.sweep] for r in runs], dtype=float)
            series[name] = (list(SWEEP_THRESHOLDS), list(curves.mean(axis=0)), None)
    if not series:
        return None
    return figures.lines(series, "threshold", "balanced accuracy (MC mean)", "threshold sweep, Monte Carlo resamples")


def build_report_data(store: ResultsStore) -> ReportData:
    """Compute every table, figure and status of the report from the store alone."""
    manifest = store.manifest()
    records = store.load_all()
    configurations = load_configurations()
    tier_names = [n for n, c in sorted(configurations.items(), key=lambda kv: (kv[1].tier or 0)) if c.tier]
    declared = block_names(manifest.profile, [r.spec for r in records])
    blocks = [BlockSection(name=b.name, purpose=b.purpose, rows=_rows(records, declared.get(b.name, []), b.regimes))
              for b in manifest.profile.blocks if b.name in STRESS_BLOCKS]
    data = ReportData(
        generated_at=now(), store=str(store.root), manifest=manifest,
        complete=len(records) == len(manifest.run_ids), missing_runs=len(manifest.run_ids) - len(records),
        tier_names=tier_names,
        references=_rows(records, REFERENCE, (RegimeName.REFERENCE_ALL_XRAY, RegimeName.REFERENCE_ALL_CT)),
        fixed=_rows(records, tier_names, (FIXED,)), monte_carlo=_rows(records, tier_names, (MONTE_CARLO,)),
        exhaustive=_rows(records, list(dict.fromkeys(n for r in records if r.spec.regime == EXHAUSTIVE_REGIME
                                                     for n in r.spec.names)), (EXHAUSTIVE_REGIME,)),
        blocks=blocks, evidence=store_evidence(manifest, records, store_power_grounding(store.root)),
        preregistration=store_plan_status(store.root, manifest, records),
        runs=[RunIndexRow(run_id=r.spec.run_id, names=list(r.spec.names), blocks=list(r.spec.blocks),
                          regime=r.spec.regime, split_id=r.spec.split.split_id, seed=r.spec.seed,
                          balanced_accuracy=r.metrics.balanced_accuracy,
                          balanced_accuracy_undefined=r.metrics.undefined_reason("balanced_accuracy"),
                          macro_f1=r.metrics.macro_f1,
                          cases=r.metrics.cases, code_version=r.code_version, finished_at=r.finished_at)
              for r in records])
    candidates = {
        "fixed": (_fixed_figure(records, tier_names, FIXED, "fixed split: mean over seeds, one dot per seed"),
                  [i for row in data.fixed for i in row.run_ids]),
        "monte_carlo": (_mc_figure(records, tier_names, "Monte Carlo: same-case resamples"),
                        [i for row in data.monte_carlo for i in row.run_ids]),
    }
    for block in data.blocks:
        names = declared.get(block.name, [])
        block_runs = [i for row in block.rows for i in row.run_ids]
        if block.name == "temperature-alpha":
            candidates[block.name] = (_grid_figure(records, names), block_runs)
        elif block.name == "training-length":
            candidates[block.name] = (_length_figure(records, names), block_runs)
        elif block.name in ("leave-one-out", "progressive"):
            candidates[block.name] = (_fixed_figure(records, names, FIXED, f"{block.name}: fixed split"), block_runs)
        elif block.name == "balanced-sampler":
            candidates[block.name] = (_mc_figure(records, names, "balanced sampler: Monte Carlo resamples"),
                                      block_runs)
    candidates["sweep"] = (_sweep_figure(records, tier_names), [i for row in data.monte_carlo for i in row.run_ids])
    for test_set in manifest.test_sets:
        view = scored_view(records, test_set.name)
        data.test_tables[test_set.name] = _rows(view, tier_names, (FIXED, MONTE_CARLO))
        evidence = next(e for e in data.evidence.test_sets if e.test_set == test_set.name)
        candidates[f"test-{test_set.name}"] = (_ranking_figure(evidence), [i for row in evidence.ranking.rows
                                                                         for i in row.run_ids])
        candidates[f"test-mc-{test_set.name}"] = (
            _mc_figure(view, tier_names, f"{test_set.name}: the Monte Carlo runs scored on the same test cases"),
            [i for row in data.test_tables[test_set.name] if row.regime == MONTE_CARLO for i in row.run_ids])
    data.figures = {k: uri for k, (uri, _) in candidates.items() if uri}
    data.figure_runs = {k: runs for k, (uri, runs) in candidates.items() if uri}
    power_path = store.root / "power.json"
    if power_path.is_file():
        data.power = read_power(power_path)
        data.figures["power"] = power_figure(data.power)
    own = store_gate_chance(store.root)
    if own is not None or data.evidence.gate is not None:
        data.gate_chance, data.gate_chance_packaged = own or packaged_gate_chance(), own is None
        series, independent = chance_series(data.gate_chance)
        data.figures["gate_chance"] = figures.chance_curves(
            series, independent, cohorts=len(data.gate_chance.cohorts),
            title="at least one false pass among m cells (null cohorts)")
    return data
