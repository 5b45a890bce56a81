"""Per-run metrics from stored per-case predictions (PROTOCOL.md section 6), computed with scikit-learn.

Every edge case is decided and stated: no metric is ever NaN, only a number or an explicit None with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field, computed_field
from sklearn import config_context
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmark.schemas import CasePrediction

# A case is predicted positive iff its score >= the threshold (0.5 by default). Edge cases follow Metrics Reloaded's
# advice to decide and state what happens when a metric is undefined:
# - a metric that needs a class the validation cases lack is undefined, None, never a number (PROTOCOL section 6):
#   with no negative case, specificity, balanced accuracy, MCC and ROC-AUC; with no positive case, sensitivity,
#   balanced accuracy, MCC, PR-AUC and ROC-AUC; flagged `no_negative_cases` / `no_positive_cases`, and
#   `Metrics.undefined_reason(metric)` says why ("no negative case" / "no positive case"). The threshold sweep
#   follows the same rule;
# - MCC with a zero denominator while both classes are present (every case predicted in one class: a collapsed run)
#   is 0, flagged `mcc_undefined`; balanced accuracy is then 0.5, as defined;
# - macro-F1 always averages both classes, an F1 with a zero denominator counting 0 (`zero_division=0`), flagged
#   `f1_zero_division` when that happens;
# - all predictions in one class: flags `all_predicted_positive` / `all_predicted_negative`.
# No metric is ever NaN: every value is a number or an explicit None with a flag and a reason.
# ROC-AUC and PR-AUC come from scikit-learn (its input validation skipped: the scores are checked here); the
# threshold metrics (accuracy, macro-F1, MCC, and the 21-point sweep) are computed from the confusion counts with
# scikit-learn's formulas, bit-identical to its functions (tests check it): scikit-learn's per-call validation cost
# about 3 ms a call, 16 ms a run, which a power study of thousands of tiny runs paid more than its training.

SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
NO_NEGATIVE_CASE = "no negative case"
NO_POSITIVE_CASE = "no positive case"
NEEDS_NEGATIVE: frozenset[str] = frozenset({"specificity", "balanced_accuracy", "mcc", "roc_auc"})
NEEDS_POSITIVE: frozenset[str] = frozenset({"sensitivity", "balanced_accuracy", "mcc", "pr_auc", "roc_auc"})


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
    balanced_accuracy: float | None
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
    balanced_accuracy: float | None
    macro_f1: float
    sensitivity: float | None
    specificity: float | None
    mcc: float | None
    positive_prediction_rate: float
    pr_auc: float | None
    roc_auc: float | None
    flags: list[MetricFlag] = Field(default_factory=list)
    sweep: list[ThresholdPoint] = Field(default_factory=list)

    def undefined_reason(self, metric: str) -> str | None:
        """Why `metric` is undefined on these validation cases ("no negative case" / "no positive case"), or None."""
        return undefined_reason(metric, self.positives, self.negatives)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def collapsed(self) -> bool:
        """The run predicted the same class for every validation image at the threshold (PROTOCOL section 6)."""
        return self.tp + self.fp in (0, self.cases)


def undefined_reason(metric: str, positives: int, negatives: int) -> str | None:
    """Why `metric` is undefined on validation cases with these class counts (PROTOCOL section 6), or None.

    Both reasons, joined by "; ", when neither class is present."""
    if metric not in Metrics.model_fields or metric in ("flags", "sweep"):
        raise ValueError(f"unknown metric {metric!r}")
    reasons = [reason for reason, needs, count in ((NO_NEGATIVE_CASE, NEEDS_NEGATIVE, negatives),
                                                   (NO_POSITIVE_CASE, NEEDS_POSITIVE, positives))
               if metric in needs and count == 0]
    return "; ".join(reasons) or None


def _rates(tn: int, fp: int, fn: int, tp: int) -> tuple[dict[str, float | None], set[MetricFlag]]:
    """Threshold metrics from confusion counts (the sweep's fast path; equal to scikit-learn's, tested)."""
    flags: set[MetricFlag] = set()
    sensitivity = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    if sensitivity is None:
        flags.add(MetricFlag.NO_POSITIVE_CASES)
    if specificity is None:
        flags.add(MetricFlag.NO_NEGATIVE_CASES)
    f1_positive = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
    f1_negative = 2 * tn / (2 * tn + fp + fn) if 2 * tn + fp + fn else 0.0
    if not (2 * tp + fp + fn) or not (2 * tn + fp + fn):
        flags.add(MetricFlag.F1_ZERO_DIVISION)
    total = tn + fp + fn + tp
    return {
        "sensitivity": sensitivity, "specificity": specificity,
        "balanced_accuracy": (sensitivity + specificity) / 2 if sensitivity is not None and specificity is not None
        else None,
        "macro_f1": (f1_positive + f1_negative) / 2,
        "positive_prediction_rate": (tp + fp) / total if total else 0.0,
    }, flags


def sweep(labels: np.ndarray, scores: np.ndarray) -> list[ThresholdPoint]:
    """Threshold-dependent metrics at every threshold of SWEEP_THRESHOLDS."""
    points = []
    positive = labels == 1
    for t in SWEEP_THRESHOLDS:
        predicted = scores >= t
        tp = int(np.sum(predicted & positive))
        fp = int(np.sum(predicted & ~positive))
        fn = int(np.sum(~predicted & positive))
        tn = int(np.sum(~predicted & ~positive))
        values, _ = _rates(tn, fp, fn, tp)
        points.append(ThresholdPoint(threshold=t, **values))  # type: ignore[arg-type]
    return points


def matthews_from_counts(tn: int, fp: int, fn: int, tp: int) -> float:
    """MCC from the confusion counts, by scikit-learn's formula and order of operations (so the same bits)."""
    true_sums = np.array([tn + fp, fn + tp], dtype=np.float64)
    predicted_sums = np.array([tn + fn, fp + tp], dtype=np.float64)
    samples = predicted_sums.sum()
    cov_true_predicted = float(tn + tp) * samples - np.dot(true_sums, predicted_sums)
    cov_predicted = samples**2 - np.dot(predicted_sums, predicted_sums)
    cov_true = samples**2 - np.dot(true_sums, true_sums)
    product = cov_predicted * cov_true
    return 0.0 if product == 0 else float(cov_true_predicted / np.sqrt(product))


def compute_metrics(predictions: Sequence[CasePrediction], threshold: float = 0.5) -> Metrics:
    """All metrics of one run from its per-case predictions; defined values and flags on edge cases."""
    if not predictions:
        raise ValueError("no predictions to compute metrics from")
    labels = np.array([p.label for p in predictions], dtype=int)
    scores = np.array([p.score for p in predictions], dtype=float)
    if not np.all(np.isfinite(scores)):
        raise ValueError("a prediction score is not a finite number")
    predicted = (scores >= threshold).astype(int)
    positive, called = labels == 1, predicted == 1
    tp, fp = int(np.sum(called & positive)), int(np.sum(called & ~positive))
    fn, tn = int(np.sum(~called & positive)), int(np.sum(~called & ~positive))
    values, flags = _rates(tn, fp, fn, tp)
    if predicted.all():
        flags.add(MetricFlag.ALL_PREDICTED_POSITIVE)
    if not predicted.any():
        flags.add(MetricFlag.ALL_PREDICTED_NEGATIVE)
    mcc: float | None
    if (tp + fn) * (tn + fp) == 0:
        mcc = None  # a class is absent: undefined, flagged no_positive_cases / no_negative_cases
    elif (tp + fp) * (tn + fn) == 0:
        flags.add(MetricFlag.MCC_UNDEFINED)  # both classes present, one predicted (a collapsed run)
        mcc = 0.0
    else:
        mcc = matthews_from_counts(tn, fp, fn, tp)
    both_classes = 0 < labels.sum() < len(labels)
    with config_context(skip_parameter_validation=True, assume_finite=True):
        roc_auc = float(roc_auc_score(labels, scores)) if both_classes else None
        pr_auc = float(average_precision_score(labels, scores)) if labels.sum() > 0 else None
    metrics = Metrics(
        threshold=threshold, cases=len(labels), patients=len({p.patient_id for p in predictions}),
        positives=int(labels.sum()), negatives=int(len(labels) - labels.sum()),
        tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn),
        accuracy=(tp + tn) / len(labels), mcc=mcc, roc_auc=roc_auc, pr_auc=pr_auc,
        flags=sorted(flags), sweep=sweep(labels, scores), **values)  # type: ignore[arg-type]
    _assert_no_nan(metrics)
    return metrics


def _assert_no_nan(metrics: Metrics) -> None:
    """Guard the promise that no metric is a silent NaN."""
    for name, value in metrics.model_dump(exclude={"sweep", "flags"}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise AssertionError(f"metric {name} is {value}")
