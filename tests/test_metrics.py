"""Metrics against hand-computed confusion matrices, and defined values on edge cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.metrics import SWEEP_THRESHOLDS, MetricFlag, compute_metrics
from benchmark.schemas import CasePrediction


def cases(labels: list[int], scores: list[float], patients: list[str] | None = None) -> list[CasePrediction]:
    patients = patients or [f"p{i}" for i in range(len(labels))]
    return [CasePrediction(patient_id=p, image_id=f"images/{i}.png", label=y, score=s)
            for i, (p, y, s) in enumerate(zip(patients, labels, scores, strict=True))]


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    # labels 1 1 1 0 0 ; scores >= 0.5 -> predicted 1 1 0 1 0  => TP 2, FN 1, FP 1, TN 1
    m = compute_metrics(cases([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.1]))
    assert (m.tp, m.fn, m.fp, m.tn) == (2, 1, 1, 1)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.sensitivity == pytest.approx(2 / 3) and m.specificity == pytest.approx(1 / 2)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2) / 2)
    f1_pos = 2 * 2 / (2 * 2 + 1 + 1)
    f1_neg = 2 * 1 / (2 * 1 + 1 + 1)
    assert m.macro_f1 == pytest.approx((f1_pos + f1_neg) / 2)
    mcc = (2 * 1 - 1 * 1) / math.sqrt((2 + 1) * (2 + 1) * (1 + 1) * (1 + 1))
    assert m.mcc == pytest.approx(mcc)
    assert m.positive_prediction_rate == pytest.approx(3 / 5)
    assert m.roc_auc == pytest.approx(4 / 6)  # of the 6 positive/negative pairs, 4 are ranked right
    assert (m.cases, m.positives, m.negatives, m.patients) == (5, 3, 2, 5)
    assert m.flags == []


def test_average_precision_by_hand() -> None:
    # ranked: 0.9 (1), 0.7 (0), 0.6 (1) -> AP = (1/1 + 2/3) / 2
    m = compute_metrics(cases([1, 0, 1], [0.9, 0.7, 0.6]))
    assert m.pr_auc == pytest.approx((1 + 2 / 3) / 2)


def test_the_threshold_is_inclusive() -> None:
    assert compute_metrics(cases([1, 0], [0.5, 0.49])).tp == 1


def test_one_class_in_validation_gives_defined_values_and_flags() -> None:
    m = compute_metrics(cases([1, 1, 1], [0.9, 0.2, 0.6]))
    assert m.specificity is None and m.sensitivity == pytest.approx(2 / 3)
    assert m.balanced_accuracy == pytest.approx(2 / 3)
    assert m.roc_auc is None and m.pr_auc == pytest.approx(1.0)
    assert m.mcc == 0.0
    assert {MetricFlag.NO_NEGATIVE_CASES, MetricFlag.MCC_UNDEFINED} <= set(m.flags)


def test_a_class_never_present_nor_predicted_has_f1_zero_by_convention() -> None:
    m = compute_metrics(cases([1, 1, 1], [0.9, 0.7, 0.6]))
    assert m.macro_f1 == pytest.approx(0.5)  # F1 1 for the positive class, 0 for the absent one
    assert {MetricFlag.F1_ZERO_DIVISION, MetricFlag.ALL_PREDICTED_POSITIVE} <= set(m.flags)


def test_no_positive_cases_gives_no_pr_auc() -> None:
    m = compute_metrics(cases([0, 0], [0.1, 0.8]))
    assert m.sensitivity is None and m.pr_auc is None and m.roc_auc is None
    assert MetricFlag.NO_POSITIVE_CASES in m.flags


def test_all_predictions_in_one_class_are_flagged_not_nan() -> None:
    m = compute_metrics(cases([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]))
    assert m.positive_prediction_rate == 1.0 and m.specificity == 0.0 and m.mcc == 0.0
    assert {MetricFlag.ALL_PREDICTED_POSITIVE, MetricFlag.MCC_UNDEFINED} <= set(m.flags)
    assert m.roc_auc == pytest.approx(0.75)


def test_sweep_covers_zero_to_one_in_steps_of_five_hundredths() -> None:
    m = compute_metrics(cases([1, 0], [0.8, 0.3]))
    assert [p.threshold for p in m.sweep] == list(SWEEP_THRESHOLDS)
    assert SWEEP_THRESHOLDS[0] == 0.0 and SWEEP_THRESHOLDS[-1] == 1.0 and len(SWEEP_THRESHOLDS) == 21
    at_half = next(p for p in m.sweep if p.threshold == 0.5)
    assert at_half.balanced_accuracy == m.balanced_accuracy
    assert m.sweep[0].positive_prediction_rate == 1.0


def test_patients_are_counted_once() -> None:
    assert compute_metrics(cases([1, 1, 0], [0.9, 0.8, 0.1], ["a", "a", "b"])).patients == 2


def test_empty_predictions_are_an_error() -> None:
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics([])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=1, max_size=30))
def test_no_metric_is_ever_nan(pairs: list[tuple[int, float]]) -> None:
    m = compute_metrics(cases([y for y, _ in pairs], [s for _, s in pairs]))
    for name, value in m.model_dump(exclude={"sweep", "flags"}).items():
        assert value is None or math.isfinite(value), name
    assert m.tp + m.fp + m.tn + m.fn == m.cases


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=20))
def test_the_sweep_agrees_with_scikit_learn_at_every_threshold(pairs: list[tuple[int, float]]) -> None:
    import numpy as np
    from sklearn.metrics import f1_score

    labels = np.array([y for y, _ in pairs])
    scores = np.array([s for _, s in pairs])
    for point in compute_metrics(cases(list(labels), list(scores))).sweep:
        predicted = (scores >= point.threshold).astype(int)
        expected = f1_score(labels, predicted, labels=[0, 1], average="macro", zero_division=0)
        assert point.macro_f1 == pytest.approx(expected)
        assert point.positive_prediction_rate == pytest.approx(predicted.mean())
