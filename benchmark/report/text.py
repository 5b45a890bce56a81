"""Plain-text tables the command line prints: the cohort summary of `cohorts`, the power grid of `power`, the family
rates of `gate-chance`.

They take data and return strings, so the report stage owns them and `benchmark.cli` only prints what they return.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from benchmark import __version__
from benchmark.outputs import terminal_safe, terminal_safe_data
from benchmark.schemas import CohortSummary, SplitSupport, SupportCounts

if TYPE_CHECKING:
    from benchmark.evidence.gate_chance import GateChanceResult
    from benchmark.evidence.power import PowerResult, Rate
    from benchmark.methods.engine import RunOutput


MAX_CELL = 80  # characters of one table cell; metadata cells can be megabytes long


def _cell(value: object, limit: int = MAX_CELL) -> str:
    """One table cell on one line, cut to `limit` characters with the length it had."""
    text = str(value)
    if len(text) > limit:
        text = f"{text[:limit - 20]}... [{len(text):,} chars]"
    return terminal_safe(text, keep_newlines=False)


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    """A plain-text table: numeric columns right-aligned, text columns left-aligned, long cells cut."""
    cells = [[_cell(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [bool(rows) and all(re.fullmatch(r"[\d.,/+\-]+", row[i]) for row in cells[1:])
               for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric, strict=True)]
        lines.append(indent + "  ".join(parts).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _support_cells(s: SupportCounts) -> list[object]:
    """The six support counts of a manifest or test set, in the order of the support columns."""
    return [s.images, s.patients, s.positive_images, s.negative_images, s.positive_patients, s.negative_patients]


_SPLIT_COLUMNS: list[tuple[str, Callable[[SplitSupport], tuple[int, ...]]]] = [
    ("tr img", lambda s: (s.train.images,)),
    ("tr pat", lambda s: (s.train.patients,)),
    ("tr +/- pat", lambda s: (s.train.positive_patients, s.train.negative_patients)),
    ("val img", lambda s: (s.val.images,)),
    ("val pat", lambda s: (s.val.patients,)),
    ("val +/- img", lambda s: (s.val.positive_images, s.val.negative_images)),
    ("val +/- pat", lambda s: (s.val.positive_patients, s.val.negative_patients)),
]


def _span(values: list[int]) -> str:
    """One value, or min-max where the values differ."""
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _split_rows(splits: list[SplitSupport], max_rows_per_regime: int = 10) -> list[list[object]]:
    """One row per split; a regime with more splits than `max_rows_per_regime` becomes one row of ranges."""
    by_regime: dict[str, list[SplitSupport]] = {}
    for split in splits:
        by_regime.setdefault(split.regime, []).append(split)
    rows: list[list[object]] = []
    for regime, members in by_regime.items():
        groups = [[m] for m in members] if len(members) <= max_rows_per_regime else [members]
        for group in groups:
            label = group[0].split_id.split("/", 1)[1] if len(group) == 1 else f"{len(group)} splits"
            cells = ["/".join(_span([column(m)[i] for m in group]) for i in range(len(column(group[0]))))
                     for _, column in _SPLIT_COLUMNS]
            rows.append([regime, label, *cells])
    return rows


def _source_lines(summary: CohortSummary) -> list[str]:
    """Which cohort, its table's hash, the modality roles and how its files were read."""
    source = summary.source
    if source is None:
        return [f"ctxray-bench {__version__}: cohorts of {summary.image_root}",
                f"  metadata.csv sha256 {summary.metadata_sha256[:16]}..., kept-image list sha256 "
                f"{summary.image_list_sha256[:16]}..., images cached at {summary.image_size} x {summary.image_size}"]
    what = "cohort manifest" if source.kind == "manifest" else "COVID-19 Image Data Collection at"
    table = "manifest" if source.kind == "manifest" else "metadata.csv"
    policy = source.reader_policy
    lines = [f"ctxray-bench {__version__}: cohorts of {what} {source.path}",
             f"  {table} sha256 {source.table_sha256[:16]}..., kept-image list sha256 "
             f"{summary.image_list_sha256[:16]}..., images cached at {summary.image_size} x {summary.image_size}",
             f"  target modality (deployed): {source.target_modality}; privileged modality (training only): "
             f"{source.privileged_modality}" + ("; 3-D volumes included" if source.include_volumes else ""),
             f"  reader policy: multi-frame DICOM -> {policy.multiframe} frame, 3-D NIfTI -> {policy.volume}, "
             f"DICOM grey levels -> {policy.window}"]
    lines += [f"    {use.images} image(s) by {use.reader}: {use.policy}" for use in source.readers]
    return lines


def format_cohort_summary(summary: CohortSummary, *, list_skipped: bool = False) -> str:
    """The human-readable cohort table printed by `ctxray-bench cohorts`: every id, path and detail from the
    cohort's files is printed with its control characters escaped (benchmark.outputs)."""
    summary = CohortSummary.model_validate(terminal_safe_data(summary.model_dump(mode="json")))
    report = summary.filter_report
    out = [*_source_lines(summary), "", "Row filtering (PROTOCOL.md section 2, checks in this order; reasons that "
           "dropped no row are not listed)"]
    rows: list[list[object]] = [[reason.value, count] for reason, count in report.counts.items() if count]
    rows += [["kept", report.kept_rows], ["total rows", report.total_rows]]
    out.append(format_table(["reason", "rows"], rows))
    if report.warnings:
        out += [f"  warning: {w}" for w in report.warnings]
    if list_skipped:
        out += ["", "Skipped rows"]
        out.append(format_table(["line", "patient", "reason", "path", "detail"],
                          [[s.line, s.patient_id, s.reason.value, s.path, s.detail] for s in report.skipped]))

    support_header = ["images", "patients", "pos img", "neg img", "pos pat", "neg pat"]
    out += ["", "Manifests (patient label: any positive image in the manifest)"]
    out.append(format_table(["manifest", *support_header],
                      [[name, *_support_cells(s)] for name, s in summary.manifests.items()]))

    out += ["", "Test sets (PROTOCOL.md section 13: every deployable run is scored on them; no model or teacher "
            "trains on them)"]
    if summary.test_sets:
        out.append(format_table(["test set", "kind", *support_header, "from"],
                          [[t.name, t.kind, *_support_cells(t.support), t.table] for t in summary.test_sets]))
    for t in summary.test_sets:
        out += [f"  {t.name}: {t.description}" + (f"; {t.skipped_rows} row(s) of its manifest not kept"
                                                    if t.skipped_rows else "")]
        out += [f"    left out: {e.image_id} (patient {e.patient_id}, line {e.line}): {e.reason}" for e in t.excluded]
    out += [f"  {note}" for note in summary.test_set_notes]

    out += ["", "Regimes"]
    out.append(format_table(["regime", "manifest", "splits", "admissible val sets", "training seeds", "role"],
                      [[r.name, r.manifest, r.splits, "-" if r.admissible_sets is None else r.admissible_sets,
                        "split seed" if r.training_seeds is None else ",".join(map(str, r.training_seeds)), r.role]
                       for r in summary.regimes]))
    out += ["", "Default splits (train | validation; a regime of many splits shows min-max)"]
    out.append(format_table(
        ["regime", "split", *(name for name, _ in _SPLIT_COLUMNS)], _split_rows(summary.splits)))
    for regime, why in summary.split_errors.items():
        out.append(f"  {regime}: not drawn: {why}")

    audit = summary.audit
    out += ["", "Data audit (shown beside every paired-cohort result)",
            f"  patients whose X-ray and CT labels disagree: {len(audit.disagreeing_patients)}"]
    if audit.disagreeing_patients:
        out.append(format_table(["patient", "X-ray label", "CT label", "paired", "X-ray findings", "CT findings"],
                          [[d.patient_id, d.xray_label, d.ct_label, "yes" if d.in_paired_cohort else "no",
                            "; ".join(d.xray_findings), "; ".join(d.ct_findings)]
                           for d in audit.disagreeing_patients], indent="    "))
    negatives, covid_ct = audit.paired_negative_patients, audit.paired_negatives_with_covid_ct
    out.append(f"  paired negative patients: {len(negatives)} ({', '.join(negatives) or '-'}); "
               f"of them with a COVID-19 CT: {len(covid_ct)} ({', '.join(covid_ct) or '-'})")
    out.append(f"  matched pairs whose X-ray and CT labels differ: {audit.paired_label_mismatched_pairs}")
    out.append("  label-definition sensitivity (paired cohort):")
    for d in audit.label_definitions:
        verdict = "Monte Carlo possible" if d.monte_carlo_feasible else "Monte Carlo NOT possible"
        out.append(f"    {d.definition}: {d.patients} patients, {d.positive_patients} positive, "
                   f"{d.negative_patients} negative -> {verdict} ({d.why})")
    return "\n".join(out)


def format_power(result: PowerResult) -> str:
    """The power table printed by `ctxray-bench power`."""

    def rate(r: Rate | None) -> str:
        return "-" if r is None else f"{r.rate:.2f} ({r.detections}/{r.replicates}; {r.low:.2f}-{r.high:.2f})"

    rows = [[c.paired_patients, c.negative_patients, c.resamples, rate(c.h1_power), rate(c.h1_false_positive_rate),
             rate(c.h2_power), rate(c.h2_false_positive_rate)] for c in result.cells]
    return "\n".join([
        f"power grid {result.grid.name}: {len(result.replicates)} replicate evaluations in {result.seconds:.0f} s",
        format_table(["paired", "neg", "R", "H1 power (planted)", "H1 false positives (null)", "H2 power",
                "H2 false positives"], rows),
        "", f"minimum decisive experiment: {result.statement}"])


def format_gate_chance(result: GateChanceResult) -> str:
    """The family table printed by `ctxray-bench gate-chance`: per m, at least one false pass by each rule."""

    def rate(r: Rate) -> str:
        return f"{r.rate:.2f} ({r.detections}/{r.replicates}; {r.low:.2f}-{r.high:.2f})"

    rows = [[f.m, rate(f.gate_any), f"{f.gate_independent:.2f}", rate(f.section8_holm_any),
             rate(f.section8_unadjusted_any)] for f in result.families]
    cells = [[c.cell, rate(c.gate), rate(c.section8)] for c in result.per_cell]
    return "\n".join([
        f"gate-chance grid {result.grid.name}: {len(result.cohorts)} null cohorts in {result.seconds:.0f} s",
        result.design, "",
        format_table(["m", ">= 1 gate pass", "independent cells", ">= 1 section 8 pass, Holm",
                      ">= 1 section 8 pass, unadjusted"], rows),
        "", "per cell (each rule alone):", format_table(["cell", "gate passes", "section 8 (MC-confirmed)"], cells),
        "", result.statement])


def format_trained_run(output: RunOutput, split_id: str, seed: int, device: str) -> str:
    """What `ctxray-bench train` prints: steps and time, the teacher, each epoch's loss terms and the predictions."""
    fitted = output.fitted
    lines = [f"{fitted.configuration.name} on {split_id} (seed {seed}, device {device}): "
             f"{fitted.fit_log.steps} steps in {fitted.fit_log.seconds:.2f} s"]
    teacher = fitted.teacher
    if teacher is not None:
        lines.append(f"  teacher {teacher.teacher_id[:12]} ({teacher.modality}, {len(teacher.training_patients)} "
                     f"training patients, "
                     f"{'from cache' if teacher.from_cache else f'trained in {teacher.train_seconds:.1f} s'})")
    lines += [f"  epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items())
              for epoch, terms in enumerate(fitted.fit_log.epoch_terms, start=1)]
    lines.append(format_table(["patient", "image", "label", "P(COVID-19)"],
                              [[p.patient_id, p.image_id, p.label, f"{p.score:.4f}"] for p in output.predictions]))
    return "\n".join(lines)
