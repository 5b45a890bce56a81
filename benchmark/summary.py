"""The tidy summary: one row per configuration name x regime, mean and sd over runs, with support."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark.store import RunRecord

SUMMARY_METRICS = ("balanced_accuracy", "macro_f1", "accuracy", "sensitivity", "specificity", "mcc", "pr_auc",
                   "roc_auc", "positive_prediction_rate")


def runs_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per (run, name it serves): ids, regime, split, seed, support and every threshold-0.5 metric."""
    rows = []
    for record in records:
        m = record.metrics
        for name in record.spec.names:
            rows.append({
                "configuration": name, "regime": record.spec.regime, "run_id": record.spec.run_id,
                "split_id": record.spec.split.split_id, "split_index": record.spec.split.index,
                "seed": record.spec.seed, "blocks": ";".join(record.spec.blocks),
                "val_patients": m.patients, "val_images": m.cases, "val_positive_images": m.positives,
                "val_negative_images": m.negatives, "flags": ";".join(m.flags),
                **{metric: getattr(m, metric) for metric in SUMMARY_METRICS},
            })
    return pd.DataFrame(rows)


def _span(values: pd.Series) -> str:
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}-{high}"


def summary_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Mean and sd (n - 1) of each metric per configuration name and regime, beside its support."""
    runs = runs_frame(records)
    if runs.empty:
        return pd.DataFrame()
    rows = []
    for (name, regime), group in runs.groupby(["configuration", "regime"], sort=False):
        row = {"configuration": name, "regime": regime, "runs": len(group),
               "splits": group["split_id"].nunique(), "seeds": group["seed"].nunique(),
               "val_patients_per_run": _span(group["val_patients"]),
               "val_images_per_run": _span(group["val_images"]),
               "val_images_total": int(group["val_images"].sum()),
               "val_positive_images_total": int(group["val_positive_images"].sum()),
               "val_negative_images_total": int(group["val_negative_images"].sum())}
        for metric in SUMMARY_METRICS:
            values = group[metric].dropna()
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
            row[f"{metric}_n"] = len(values)
        row["run_ids"] = ";".join(group["run_id"])
        rows.append(row)
    return pd.DataFrame(rows)


def write_summary(records: Sequence[RunRecord], path: Path) -> Path:
    """Write the summary CSV (written to a temp name, then renamed)."""
    from benchmark.atomic import write_atomically

    write_atomically(path, summary_frame(records).to_csv(index=False, float_format="%.6g").encode("utf-8"))
    return path
