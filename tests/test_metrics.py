"""Metrics against hand-computed confusion matrices, undefined metrics (PROTOCOL section 6) and flags on edge cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.experiment.metrics import SWEEP_THRESHOLDS, MetricFlag, compute_metrics, undefined_reason
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


def test_no_negative_case_leaves_specificity_ba_mcc_and_roc_auc_undefined_with_the_reason() -> None:
    m = compute_metrics(cases([1, 1, 1], [0.9, 0.2, 0.6]))
    assert (m.specificity, m.balanced_accuracy, m.mcc, m.roc_auc) == (None, None, None, None)
    for metric in ("specificity", "balanced_accuracy", "mcc", "roc_auc"):
        assert m.undefined_reason(metric) == "no negative case"
    assert m.sensitivity == pytest.approx(2 / 3) and m.pr_auc == pytest.approx(1.0)
    assert m.undefined_reason("sensitivity") is None and m.undefined_reason("pr_auc") is None
    assert MetricFlag.NO_NEGATIVE_CASES in m.flags and MetricFlag.MCC_UNDEFINED not in m.flags


def test_no_positive_case_leaves_sensitivity_ba_mcc_pr_auc_and_roc_auc_undefined_with_the_reason() -> None:
    m = compute_metrics(cases([0, 0, 0], [0.1, 0.8, 0.3]))
    assert (m.sensitivity, m.balanced_accuracy, m.mcc, m.pr_auc, m.roc_auc) == (None, None, None, None, None)
    for metric in ("sensitivity", "balanced_accuracy", "mcc", "pr_auc", "roc_auc"):
        assert m.undefined_reason(metric) == "no positive case"
    assert m.specificity == pytest.approx(2 / 3) and m.undefined_reason("specificity") is None
    assert MetricFlag.NO_POSITIVE_CASES in m.flags and MetricFlag.MCC_UNDEFINED not in m.flags


def test_defined_metrics_have_no_reason_and_an_unknown_name_is_an_error() -> None:
    m = compute_metrics(cases([1, 0], [0.9, 0.1]))
    for metric in ("accuracy", "macro_f1", "positive_prediction_rate", "balanced_accuracy", "mcc", "roc_auc"):
        assert m.undefined_reason(metric) is None
    with pytest.raises(ValueError, match="unknown metric"):
        m.undefined_reason("sweep")
    assert undefined_reason("roc_auc", positives=0, negatives=0) == "no negative case; no positive case"


def test_a_class_never_present_nor_predicted_has_f1_zero_by_convention() -> None:
    m = compute_metrics(cases([1, 1, 1], [0.9, 0.7, 0.6]))
    assert m.macro_f1 == pytest.approx(0.5)  # F1 1 for the positive class, 0 for the absent one
    assert {MetricFlag.F1_ZERO_DIVISION, MetricFlag.ALL_PREDICTED_POSITIVE} <= set(m.flags)


def test_both_classes_present_but_one_predicted_gives_ba_one_half_and_flagged_mcc_zero() -> None:
    m = compute_metrics(cases([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]))
    assert m.positive_prediction_rate == 1.0 and m.specificity == 0.0 and m.sensitivity == 1.0
    assert m.balanced_accuracy == 0.5 and m.mcc == 0.0
    assert {MetricFlag.ALL_PREDICTED_POSITIVE, MetricFlag.MCC_UNDEFINED} <= set(m.flags)
    assert m.undefined_reason("balanced_accuracy") is None and m.undefined_reason("mcc") is None
    assert m.roc_auc == pytest.approx(0.75)


def test_the_sweep_leaves_ba_and_the_absent_class_recall_undefined_at_every_threshold() -> None:
    no_negative = compute_metrics(cases([1, 1], [0.9, 0.3])).sweep
    assert all(p.balanced_accuracy is None and p.specificity is None for p in no_negative)
    assert [p.sensitivity for p in no_negative if p.threshold in (0.0, 0.5, 1.0)] == [1.0, 0.5, 0.0]
    no_positive = compute_metrics(cases([0, 0], [0.9, 0.3])).sweep
    assert all(p.balanced_accuracy is None and p.sensitivity is None for p in no_positive)
    both = compute_metrics(cases([1, 0], [0.9, 0.3])).sweep
    assert all(p.balanced_accuracy is not None for p in both)
    assert next(p for p in both if p.threshold == 0.0).balanced_accuracy == 0.5  # all predicted positive


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
def test_no_metric_is_ever_nan_and_ba_is_undefined_iff_a_class_is_absent(pairs: list[tuple[int, float]]) -> None:
    m = compute_metrics(cases([y for y, _ in pairs], [s for _, s in pairs]))
    for name, value in m.model_dump(exclude={"sweep", "flags"}).items():
        assert value is None or math.isfinite(value), name
    for point in m.sweep:
        for name, value in point.model_dump().items():
            assert value is None or math.isfinite(value), name
    assert m.tp + m.fp + m.tn + m.fn == m.cases
    a_class_absent = m.positives == 0 or m.negatives == 0
    assert (m.balanced_accuracy is None) == a_class_absent
    assert (m.mcc is None) == a_class_absent
    assert all((p.balanced_accuracy is None) == a_class_absent for p in m.sweep)
    assert (m.undefined_reason("balanced_accuracy") is not None) == a_class_absent
    assert (MetricFlag.MCC_UNDEFINED in m.flags) == (not a_class_absent and m.tp + m.fp in (0, m.cases))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=20))
def test_the_sweep_agrees_with_scikit_learn_at_every_threshold(pairs: list[tuple[int, float]]) -> None:
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, f1_score

    labels = np.array([y for y, _ in pairs])
    scores = np.array([s for _, s in pairs])
    for point in compute_metrics(cases(list(labels), list(scores))).sweep:
        predicted = (scores >= point.threshold).astype(int)
        expected = f1_score(labels, predicted, labels=[0, 1], average="macro", zero_division=0)
        assert point.macro_f1 == pytest.approx(expected)
        assert point.positive_prediction_rate == pytest.approx(predicted.mean())
        if 0 < labels.sum() < len(labels):
            assert point.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels, predicted))
        else:
            assert point.balanced_accuracy is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.2, 0.5, 0.5, 0.7, 1.0]) | st.floats(0, 1)),
                min_size=1, max_size=30))
def test_threshold_metrics_are_scikit_learns_bit_for_bit(pairs: list[tuple[int, float]]) -> None:
    import numpy as np
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

    labels = np.array([y for y, _ in pairs])
    scores = np.array([s for _, s in pairs])
    predicted = (scores >= 0.5).astype(int)
    m = compute_metrics(cases(list(labels), list(scores)))
    assert m.accuracy == float(accuracy_score(labels, predicted))
    assert m.macro_f1 == float(f1_score(labels, predicted, labels=[0, 1], average="macro", zero_division=0))
    if m.mcc is not None and MetricFlag.MCC_UNDEFINED not in m.flags:
        assert m.mcc == float(matthews_corrcoef(labels, predicted))
    if 0 < labels.sum() < len(labels):
        assert m.roc_auc == float(roc_auc_score(labels, scores))
    if labels.sum() > 0:
        assert m.pr_auc == float(average_precision_score(labels, scores))
