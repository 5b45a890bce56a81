"""The evidence report: one self-contained HTML file rendered by Jinja2 from a results store only.

Every results number in the page sits in an element carrying the metric, the statistic and the
ids of the runs it was computed from (`data-metric`, `data-stat`, `data-runs`), and the whole
report data is embedded as JSON, so the claim tests can recompute each number from the stored
per-case predictions. Metadata text (findings, ids) is untrusted: templates are autoescaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from pydantic import BaseModel, Field

from benchmark.atomic import write_atomically
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
from benchmark.evidence.summary import AggregateRow, aggregate, runs_of, scored_view, write_summary
from benchmark.evidence.verdict import store_evidence
from benchmark.experiment.matrix import EXHAUSTIVE_REGIME, block_names
from benchmark.experiment.metrics import SWEEP_THRESHOLDS
from benchmark.experiment.store import ResultsStore, RunRecord, StoreManifest, now
from benchmark.methods.configurations import load_configurations
from benchmark.outputs import csv_text
from benchmark.report import figures
from benchmark.report.checklist import load_checklist
from benchmark.schemas import SkippedRow

TEMPLATE_DIRS = (Path(__file__).parent.parent / "templates", Path(__file__).resolve().parents[2] / "templates")
TABLE_METRICS = ("balanced_accuracy", "macro_f1", "sensitivity", "specificity", "mcc", "pr_auc", "roc_auc",
                 "positive_prediction_rate")
METRIC_LABELS = {"balanced_accuracy": "BA", "macro_f1": "macro-F1", "sensitivity": "sens.", "specificity": "spec.",
                 "mcc": "MCC", "pr_auc": "PR-AUC", "roc_auc": "ROC-AUC", "positive_prediction_rate": "PPR",
                 "accuracy": "acc."}
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
    return [row for name in names for regime in regimes if (row := aggregate(records, name, regime))]


def _fixed_figure(records: Sequence[RunRecord], names: Sequence[str], regime: str, title: str) -> str | None:
    present = [n for n in names if runs_of(records, n, regime)]
    if not present:
        return None
    values = [[r.metrics.balanced_accuracy for r in runs_of(records, n, regime)] for n in present]
    collapsed = [[r.metrics.collapsed for r in runs_of(records, n, regime)] for n in present]
    return figures.bars_with_points(present, values, "balanced accuracy", title,  # None: drawn as "undefined"
                                    collapsed=collapsed)


def _mc_figure(records: Sequence[RunRecord], names: Sequence[str], title: str) -> str | None:
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
        references=_rows(records, REFERENCE, ("reference-all-xray", "reference-all-ct")),
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
    return data


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _metric(value: float | None, digits: int = 3) -> str:
    """A metric value: undefined (a class the validation cases lack, PROTOCOL section 6) is the word, not a dash."""
    return "undefined" if value is None else f"{value:.{digits}f}"


SKIPPED_ROWS_SHOWN = 50  # skipped rows listed in the report per reason; all of them are in skipped_rows.csv
SKIPPED_ROWS_FILE = "skipped_rows.csv"
# the island leaves out the skipped-row lists (their counts stay): 100k skipped rows would make a 30 MB page
_ISLAND_EXCLUDE: dict[str, Any] = {
    "figures": True,
    "manifest": {"cohort": {"filter_report": {"skipped"}}, "test_sets": {"__all__": {"filter_report": {"skipped"}}}}}


def skipped_preview(skipped: Sequence[SkippedRow], limit: int = SKIPPED_ROWS_SHOWN) -> list[SkippedRow]:
    """The first `limit` skipped rows of each reason, in line order: what the report lists (the CSV has all)."""
    shown: dict[str, int] = {}
    preview = []
    for row in skipped:
        shown[row.reason] = shown.get(row.reason, 0) + 1
        if shown[row.reason] <= limit:
            preview.append(row)
    return preview


def skipped_rows_frame(manifest: StoreManifest) -> pd.DataFrame:
    """Every skipped row of the cohort and of each external test set's manifest, one table (skipped_rows.csv)."""
    parts = [("cohort", manifest.cohort.filter_report)]
    parts += [(t.name, t.filter_report) for t in manifest.test_sets if t.filter_report is not None]
    rows = [{"table": name, "line": s.line, "patient_id": s.patient_id, "reason": s.reason.value, "path": s.path,
             "detail": s.detail} for name, report in parts for s in report.skipped]
    return pd.DataFrame(rows, columns=["table", "line", "patient_id", "reason", "path", "detail"])


def _json_island(data: BaseModel) -> Markup:
    """JSON safe inside <script>: <, > and & escaped as unicode."""
    text = data.model_dump_json(exclude=_ISLAND_EXCLUDE)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def template_environment() -> Environment:
    """The autoescaping Jinja2 environment of the report templates."""
    folder = next((d for d in TEMPLATE_DIRS if (d / "report.html.j2").is_file()), None)
    if folder is None:
        raise FileNotFoundError(f"report templates not found in {', '.join(map(str, TEMPLATE_DIRS))}")
    environment = Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(default=True),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["number"] = _number
    environment.filters["metric"] = _metric
    environment.globals.update(METRIC_LABELS=METRIC_LABELS, TABLE_METRICS=TABLE_METRICS,
                               skipped_preview=skipped_preview, SKIPPED_ROWS_SHOWN=SKIPPED_ROWS_SHOWN,
                               SKIPPED_ROWS_FILE=SKIPPED_ROWS_FILE)
    return environment


def render_report(data: ReportData) -> str:
    """The report's HTML."""
    return template_environment().get_template("report.html.j2").render(data=data, island=_json_island(data),
                                                                       checklist=load_checklist())


def render_power_report(power: PowerResult) -> str:
    """A standalone page with the power study alone (written beside power.json)."""
    return template_environment().get_template("power.html.j2").render(power=power, figure=power_figure(power))


def write_report(store_root: Path, out: Path | None = None) -> Path:
    """Render the report of a store to `out` (default STORE/report.html), its evidence to STORE/evidence.json and
    every skipped row to skipped_rows.csv beside the report (after it: a folder it cannot go in is named by it)."""
    store = ResultsStore(store_root)
    data = build_report_data(store)
    target = out or store.root / "report.html"
    write_atomically(store.root / "evidence.json", data.evidence.model_dump_json(indent=1).encode("utf-8"))
    write_atomically(target, render_report(data).encode("utf-8"))
    write_atomically(target.parent / SKIPPED_ROWS_FILE, csv_text(skipped_rows_frame(data.manifest)))
    return target


def write_store_outputs(store_root: Path) -> tuple[Path, Path]:
    """Write what a finished store publishes, its summary CSV and its report (with evidence.json); their paths."""
    store = ResultsStore(store_root)
    summary = write_summary(store.load_all(), store_root / "summary.csv",
                            [t.name for t in store.manifest().test_sets])
    return summary, write_report(store_root)


def report_data_from_html(html: str) -> dict[str, Any]:
    """The JSON data island of a rendered report (for the claim tests)."""
    start = html.index('<script type="application/json" id="report-data">') + len(
        '<script type="application/json" id="report-data">')
    return json.loads(html[start:html.index("</script>", start)])


class ReportNumber(BaseModel):
    """A number shown in the report with the attributes that say how to recompute it."""

    attributes: dict[str, str]
    text: str


class _NumberParser(HTMLParser):
    """Collects the text of every element carrying data-metric, data-support, data-evidence or data-test-support."""

    KEYS = ("data-metric", "data-support", "data-evidence", "data-test-support")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[ReportNumber] = []
        self._open: list[tuple[str, dict[str, str], list[str], int]] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            return
        self._depth += 1
        attributes = {k: v or "" for k, v in attrs}
        if any(k in attributes for k in self.KEYS):
            self._open.append((tag, attributes, [], self._depth))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            return
        if self._open and self._open[-1][3] == self._depth:
            _, attributes, parts, _ = self._open.pop()
            text = "".join(parts).strip()
            self.found.append(ReportNumber(attributes=attributes, text=text))
            if self._open:
                self._open[-1][2].append(text)
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2].append(data)


def numbers_in_report(html: str) -> list[ReportNumber]:
    """Every traceable number of a rendered report, with its data-* attributes (for the claim tests)."""
    parser = _NumberParser()
    parser.feed(html)
    return parser.found
