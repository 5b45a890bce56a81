"""The evidence report page: the ReportData of benchmark.report.content drawn by autoescaping Jinja2 into one HTML file.

Numbers carry data-* attributes and the data is embedded as JSON, so claim tests can read the page back and recheck.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from pydantic import BaseModel

from benchmark.atomic import write_atomically
from benchmark.evidence.power import PowerResult
from benchmark.evidence.summary import write_summary
from benchmark.experiment.store import ResultsStore, StoreManifest
from benchmark.outputs import csv_text
from benchmark.report.checklist import load_checklist
from benchmark.report.content import ReportData, build_report_data, power_figure
from benchmark.schemas import SkippedRow

# Every number sits in an element whose data-* attributes name its metric, statistic and runs, and the data is
# embedded as JSON, so the claim tests can read the page back (numbers_in_report) and recompute each number from the
# store.

TEMPLATE_DIRS = (Path(__file__).parent.parent / "templates", Path(__file__).resolve().parents[2] / "templates")
TABLE_METRICS = ("balanced_accuracy", "macro_f1", "sensitivity", "specificity", "mcc", "pr_auc", "roc_auc",
                 "positive_prediction_rate")
METRIC_LABELS = {"balanced_accuracy": "BA", "macro_f1": "macro-F1", "sensitivity": "sens.", "specificity": "spec.",
                 "mcc": "MCC", "pr_auc": "PR-AUC", "roc_auc": "ROC-AUC", "positive_prediction_rate": "PPR",
                 "accuracy": "acc."}


def _number(value: float | None, digits: int = 3) -> str:
    """A number to `digits` places, or a dash for none."""
    return "–" if value is None else f"{value:.{digits}f}"


def _metric(value: float | None, digits: int = 3) -> str:
    """A metric value: undefined (a class the validation cases lack, PROTOCOL section 6) is the word, not a dash."""
    return "undefined" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 3) -> str:
    """A difference with its sign, or a dash for none."""
    return "–" if value is None else f"{value:+.{digits}f}"


def _mean_or_none(values: list[float | None]) -> float | None:
    """The mean of the defined values; None when there is none."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


SKIPPED_ROWS_SHOWN = 50  # skipped rows listed in the report per reason; all of them are in skipped_rows.csv
SKIPPED_ROWS_FILE = "skipped_rows.csv"
# the island leaves out the skipped-row lists (their counts stay): 100k skipped rows would make a 30 MB page
_ISLAND_EXCLUDE: dict[str, Any] = {
    "figures": True,
    "gate_chance": {"cohorts"},  # every null cohort's cell verdicts: in gate_chance.json, not in the page
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
    environment.filters["signed"] = _signed
    environment.filters["mean_or_none"] = _mean_or_none
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
        """Open an element; one carrying a KEYS attribute starts collecting its text."""
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            return
        self._depth += 1
        attributes = {k: v or "" for k, v in attrs}
        if any(k in attributes for k in self.KEYS):
            self._open.append((tag, attributes, [], self._depth))

    def handle_endtag(self, tag: str) -> None:
        """Close an element; a collecting one becomes a ReportNumber and its text joins its parent's."""
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
        """Text inside the innermost collecting element."""
        if self._open:
            self._open[-1][2].append(data)


def numbers_in_report(html: str) -> list[ReportNumber]:
    """Every traceable number of a rendered report, with its data-* attributes (for the claim tests)."""
    parser = _NumberParser()
    parser.feed(html)
    return parser.found
