"""Per-run metrics from stored per-case predictions (PROTOCOL.md section 6), computed with scikit-learn.

A case is predicted positive iff its score >= the threshold (0.5 by default). Edge cases follow
Metrics Reloaded's advice to decide and state what happens when a metric is undefined:
- a class absent from the validation cases: its recall (sensitivity or specificity) is None,
  balanced accuracy is the recall of the class present (scikit-learn's convention), ROC-AUC is
  None, PR-AUC is None without positives; flags `no_positive_cases` / `no_negative_cases`;
- macro-F1 always averages both classes, an F1 with a zero denominator counting 0
  (`zero_division=0`), flagged `f1_zero_division` when that happens;
- MCC with a zero denominator (one class predicted or present) is 0, flagged `mcc_undefined`;
- all predictions in one class: flags `all_predicted_positive` / `all_predicted_negative`.
No metric is ever NaN: every value is a number or an explicit None with a flag.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)

from benchmark.schemas import CasePrediction

SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))


class MetricFlag(StrEnum):
    """Why a metric took a conventional value instead of its textbook definition."""

    NO_POSITIVE_CASES = "no_positive_cases"
    NO_NEGATIVE_CASES = "no_negative_cases"
    ALL_PREDICTED_POSITIVE = "all_predicted_positive"
    ALL_PREDICTED_NEGATIVE = "all_predicted_negative"
    MCC_UNDEFINED = "mcc_undefined"
    F1_ZERO_DIVISION = "f1_zero_division"


class ThresholdPoint(BaseModel):
    """Threshold-dependent metrics at one threshold of the sweep."""

    threshold: float
    sensitivity: float | None
    specificity: float | None
    balanced_accuracy: float
    macro_f1: float
    positive_prediction_rate: float


class Metrics(BaseModel):
    """Every metric of one run at one threshold, its confusion matrix, support, flags and the sweep."""

    threshold: float = 0.5
    cases: int
    patients: int
    positives: int
    negatives: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    sensitivity: float | None
    specificity: float | None
    mcc: float
    positive_prediction_rate: float
    pr_auc: float | None
    roc_auc: float | None
    flags: list[MetricFlag] = Field(default_factory=list)
    sweep: list[ThresholdPoint] = Field(default_factory=list)


def _threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float
                       ) -> tuple[dict[str, float | None], np.ndarray, set[MetricFlag]]:
    predicted = (scores >= threshold).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted, labels=[0, 1])
    flags: set[MetricFlag] = set()
    sensitivity = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    if sensitivity is None:
        flags.add(MetricFlag.NO_POSITIVE_CASES)
    if specificity is None:
        flags.add(MetricFlag.NO_NEGATIVE_CASES)
    defined = [v for v in (sensitivity, specificity) if v is not None]
    f1_undefined = (2 * tp + fp + fn == 0) or (2 * tn + fp + fn == 0)
    if f1_undefined:
        flags.add(MetricFlag.F1_ZERO_DIVISION)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        macro_f1 = float(f1_score(labels, predicted, labels=[0, 1], average="macro", zero_division=0))
    values: dict[str, float | None] = {
        "sensitivity": None if sensitivity is None else float(sensitivity),
        "specificity": None if specificity is None else float(specificity),
        "balanced_accuracy": float(np.mean(defined)) if defined else 0.0,
        "macro_f1": macro_f1,
        "positive_prediction_rate": float(predicted.mean()) if len(predicted) else 0.0,
    }
    return values, np.array([tn, fp, fn, tp]), flags


def compute_metrics(predictions: Sequence[CasePrediction], threshold: float = 0.5) -> Metrics:
    """All metrics of one run from its per-case predictions; defined values and flags on edge cases."""
    if not predictions:
        raise ValueError("no predictions to compute metrics from")
    labels = np.array([p.label for p in predictions], dtype=int)
    scores = np.array([p.score for p in predictions], dtype=float)
    if not np.all(np.isfinite(scores)):
        raise ValueError("a prediction score is not a finite number")
    values, (tn, fp, fn, tp), flags = _threshold_metrics(labels, scores, threshold)
    predicted = (scores >= threshold).astype(int)
    if predicted.all():
        flags.add(MetricFlag.ALL_PREDICTED_POSITIVE)
    if not predicted.any():
        flags.add(MetricFlag.ALL_PREDICTED_NEGATIVE)
    if (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) == 0:
        flags.add(MetricFlag.MCC_UNDEFINED)
        mcc = 0.0
    else:
        mcc = float(matthews_corrcoef(labels, predicted))
    both_classes = 0 < labels.sum() < len(labels)
    roc_auc = float(roc_auc_score(labels, scores)) if both_classes else None
    pr_auc = float(average_precision_score(labels, scores)) if labels.sum() > 0 else None
    sweep = []
    for t in SWEEP_THRESHOLDS:
        point, _, _ = _threshold_metrics(labels, scores, t)
        sweep.append(ThresholdPoint(threshold=t, **point))  # type: ignore[arg-type]
    metrics = Metrics(
        threshold=threshold, cases=len(labels), patients=len({p.patient_id for p in predictions}),
        positives=int(labels.sum()), negatives=int(len(labels) - labels.sum()),
        tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn),
        accuracy=float(accuracy_score(labels, predicted)), mcc=mcc, roc_auc=roc_auc, pr_auc=pr_auc,
        flags=sorted(flags), sweep=sweep, **values)  # type: ignore[arg-type]
    _assert_no_nan(metrics)
    return metrics


def _assert_no_nan(metrics: Metrics) -> None:
    """Guard the promise that no metric is a silent NaN."""
    for name, value in metrics.model_dump(exclude={"sweep", "flags"}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise AssertionError(f"metric {name} is {value}")
