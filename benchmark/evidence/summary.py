"""Aggregates over runs (one row per configuration name x regime, mean and sd over runs, with support), and the
views of runs the rules apply to unchanged: a test set's scores, one training length's runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from benchmark.atomic import write_atomically
from benchmark.experiment.matrix import Declaration
from benchmark.experiment.metrics import Metrics
from benchmark.experiment.store import RunRecord
from benchmark.outputs import csv_text

SUMMARY_METRICS = ("balanced_accuracy", "macro_f1", "accuracy", "sensitivity", "specificity", "mcc", "pr_auc",
                   "roc_auc", "positive_prediction_rate")


# A metric undefined on a run (a class its validation cases lack, PROTOCOL section 6) is left out of the mean and sd:
# `Stat.n` counts the runs it is defined on and `Stat.undefined` says why it is undefined on the others. The CSV
# carries the mean, sd and n: a mean left empty with n = 0 is undefined on every run (the support columns say which
# class is absent).
class Stat(BaseModel):
    """Mean and sample sd (n - 1) of one metric over runs; n counts runs where the metric is defined."""

    mean: float | None
    sd: float | None
    n: int
    undefined: str | None = Field(default=None, description="why the metric is undefined on the other runs "
                                                             "(distinct reasons, sorted, joined by '; ')")


class AggregateRow(BaseModel):
    """A configuration name in a regime: statistics over its runs and their validation support."""

    configuration: str
    regime: str
    runs: int
    collapsed_runs: int = Field(description="runs that predicted one class for every validation image")
    run_ids: list[str]
    splits: int
    seeds: list[int]
    val_patients_per_run: str
    val_images_per_run: str
    val_images_total: int
    val_positive_images_total: int
    val_negative_images_total: int
    stats: dict[str, Stat]


def _span(values: Sequence[int]) -> str:
    """`low-high`, or the one value when all are equal."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def stat(values: Sequence[float | None], reasons: Sequence[str | None] = ()) -> Stat:
    """Mean and sd of the defined values; `reasons`: why each undefined value is undefined."""
    defined = [v for v in values if v is not None]
    why = sorted({r for r in reasons if r})
    return Stat(mean=float(np.mean(defined)) if defined else None,
                sd=float(np.std(defined, ddof=1)) if len(defined) > 1 else None, n=len(defined),
                undefined="; ".join(why) if len(defined) < len(values) and why else None)


def metric_stat(metrics: Sequence[Metrics], metric: str) -> Stat:
    """The statistics of one metric over runs, with why it is undefined on the runs it is undefined on."""
    values = [getattr(m, metric) for m in metrics]
    return stat(values, [m.undefined_reason(metric) for m, v in zip(metrics, values, strict=True) if v is None])


def runs_of(records: Sequence[RunRecord], name: str, regime: str) -> list[RunRecord]:
    """The runs declared under `name` in `regime`."""
    return [r for r in records if name in r.spec.names and r.spec.regime == regime]


def scored_view(records: Sequence[RunRecord], name: str) -> list[RunRecord]:
    """The runs scored on test set `name`, each with its scores there in place of its validation ones."""
    # predictions and metrics both, so that the section 8 rules apply to test scores unchanged
    return [r.model_copy(update={"predictions": scores.predictions, "metrics": scores.metrics})
            for r in records if (scores := r.tests.get(name)) is not None]


TRAINING_LENGTH_BLOCK = "training-length"


def training_lengths(records: Sequence[RunRecord]) -> list[int]:
    """The student epochs of the training-length stress test's runs, ascending."""
    return sorted({r.spec.configuration.training.epochs for r in records
                   if TRAINING_LENGTH_BLOCK in r.spec.blocks})


def runs_at_length(records: Sequence[RunRecord], epochs: int) -> list[RunRecord]:
    """The training-length block's runs at `epochs` student epochs, under their base configuration names."""
    # `plain-ct-kd@epochs=20` is `plain-ct-kd` here, so the hypothesis rules apply to these runs unchanged
    view = []
    for run in records:
        names = [d.name for d in run.spec.declarations if d.block == TRAINING_LENGTH_BLOCK]
        if names and run.spec.configuration.training.epochs == epochs:
            base = Declaration(block=TRAINING_LENGTH_BLOCK, name=names[0].rsplit("@epochs=", 1)[0])
            view.append(run.model_copy(update={"spec": run.spec.model_copy(update={"declarations": (base,)})}))
    return view


def aggregate(records: Sequence[RunRecord], name: str, regime: str) -> AggregateRow | None:
    """Statistics of `name` in `regime` over its runs; None when it has no run there."""
    # the summary CSV and every results table of the report are built from here, so both show the same numbers, each
    # traceable to the run ids it was computed from
    runs = runs_of(records, name, regime)
    if not runs:
        return None
    metrics = [r.metrics for r in runs]
    return AggregateRow(
        configuration=name, regime=regime, runs=len(runs), collapsed_runs=sum(m.collapsed for m in metrics),
        run_ids=[r.spec.run_id for r in runs],
        splits=len({r.val_hash for r in runs}), seeds=sorted({r.spec.seed for r in runs}),
        val_patients_per_run=_span([m.patients for m in metrics]),
        val_images_per_run=_span([m.cases for m in metrics]),
        val_images_total=sum(m.cases for m in metrics),
        val_positive_images_total=sum(m.positives for m in metrics),
        val_negative_images_total=sum(m.negatives for m in metrics),
        stats={metric: metric_stat(metrics, metric) for metric in SUMMARY_METRICS})


def all_aggregates(records: Sequence[RunRecord]) -> list[AggregateRow]:
    """One aggregate per (name, regime) that has runs, in the order runs declare them."""
    keys = dict.fromkeys((name, r.spec.regime) for r in records for name in r.spec.names)
    return [row for name, regime in keys if (row := aggregate(records, name, regime)) is not None]


def summary_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """The tidy summary table: one row per configuration name x regime."""
    rows = []
    for row in all_aggregates(records):
        flat = row.model_dump(exclude={"stats", "run_ids", "seeds"})
        flat["seeds"] = ";".join(map(str, row.seeds))
        for metric, s in row.stats.items():
            flat.update({f"{metric}_mean": s.mean, f"{metric}_sd": s.sd, f"{metric}_n": s.n})
        flat["run_ids"] = ";".join(row.run_ids)
        rows.append(flat)
    return pd.DataFrame(rows)


def scored_summary_frame(records: Sequence[RunRecord], test_sets: Sequence[str]) -> pd.DataFrame:
    """The same table on each test set's scores: one row per test set x configuration name x regime."""
    # the support columns name the test cases: `test_images_total`, ...
    frames = []
    for name in test_sets:
        frame = summary_frame(scored_view(records, name))
        if len(frame):
            frame.columns = [c.replace("val_", "test_", 1) if c.startswith("val_") else c for c in frame.columns]
            frame.insert(0, "test_set", name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["test_set", "configuration"])


def write_summary(records: Sequence[RunRecord], path: Path, test_sets: Sequence[str] = ()) -> Path:
    """Write the summary CSV atomically, and beside it `test_summary.csv` when the store has test sets."""
    # text cells spreadsheet-safe: a configuration named like a formula is not run by a spreadsheet
    write_atomically(path, csv_text(summary_frame(records), float_format="%.6g"))
    if test_sets:
        write_atomically(path.with_name("test_summary.csv"),
                         csv_text(scored_summary_frame(records, test_sets), float_format="%.6g"))
    return path
