"""The seed authors' gate beside section 8: mean dBA threshold, bootstrap lower bound, sign counts, agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import GateSettings
from benchmark.evidence.gate import gate_evidence, gate_verdict
from benchmark.evidence.results import GateOutcome, Status
from benchmark.evidence.rules import evaluate_hypotheses
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import ResultsStore, RunRecord
from tests.test_evidence import _record

KFOLD = "paired-kfold"


@pytest.fixture(scope="module")
def template(synthetic_store: Path) -> RunRecord:
    return ResultsStore(synthetic_store).load_all()[0]


def folds(template: RunRecord, correct: dict[str, list[int]]) -> list[RunRecord]:
    """K-fold runs: name -> correct cases (of 4: one negative, three positive images) per split."""
    return [_record(template, name, KFOLD, i, 3000, c) for name, values in correct.items()
            for i, c in enumerate(values)]


def test_a_clear_gain_on_every_split_passes_the_gate(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [4] * 10, "student-only": [3] * 10})
    verdict = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED, GateSettings())
    assert verdict.outcome == GateOutcome.PASSES and verdict.lower is not None and verdict.lower > 0
    assert (verdict.units, verdict.positive, verdict.negative, verdict.ties) == (10, 10, 0, 0)
    assert verdict.mean_d_balanced_accuracy == pytest.approx(1 / 6)


def test_a_mean_below_the_threshold_fails_even_with_a_positive_lower_bound(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [4] * 10, "student-only": [3] * 10})
    verdict = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED,
                           GateSettings(min_mean_difference=0.2))
    assert verdict.outcome == GateOutcome.FAILS and verdict.lower is not None and verdict.lower > 0
    assert "< +0.200" in verdict.reason


def test_a_mean_above_the_threshold_fails_when_the_lower_bound_is_not_above_zero(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [4, 4, 4, 4, 2, 2, 4, 4], "student-only": [3, 3, 3, 3, 4, 4, 3, 3]})
    verdict = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED, GateSettings())
    assert verdict.mean_d_balanced_accuracy is not None and verdict.mean_d_balanced_accuracy >= 0.03
    assert verdict.outcome == GateOutcome.FAILS and verdict.lower is not None and verdict.lower <= 0
    assert (verdict.positive, verdict.negative) == (6, 2)


def test_the_bootstrap_is_seeded_by_the_settings(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [4, 4, 2, 4, 3, 4], "student-only": [3, 3, 4, 3, 3, 2]})
    first = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED, GateSettings())
    again = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED, GateSettings())
    other = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED,
                         GateSettings(bootstrap_seed=7))
    assert (first.lower, first.upper) == (again.lower, again.upper) != (other.lower, other.upper)


def test_a_split_with_undefined_ba_is_left_out_and_listed(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [4] * 6, "student-only": [3] * 6})
    positives_only = [p for p in records[0].predictions if p.label == 1]
    records[0] = records[0].model_copy(update={"predictions": positives_only,
                                               "metrics": compute_metrics(positives_only)})
    verdict = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED, GateSettings())
    assert verdict.units == 5 and verdict.undefined == [records[0].spec.split.split_id]
    assert "1 split(s) with undefined BA" in verdict.reason


def test_a_comparison_without_runs_on_the_regime_is_not_evaluable(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [4] * 4})
    verdict = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.NOT_SUPPORTED, GateSettings())
    assert verdict.outcome == GateOutcome.NOT_EVALUABLE and verdict.agreement == "not comparable"
    assert "no paired-kfold runs of student-only" in verdict.reason


@pytest.mark.parametrize(("status", "agreement"), [(Status.NOT_SUPPORTED, "gate only"),
                                                    (Status.TENTATIVE, "gate only"), (Status.SUPPORTED, "agree"),
                                                    (Status.NOT_EVALUABLE, "not comparable")])
def test_a_gate_pass_is_set_against_section_8s_status(template: RunRecord, status: Status, agreement: str) -> None:
    records = folds(template, {"plain-ct-kd": [4] * 10, "student-only": [3] * 10})
    assert gate_verdict(records, "H1", "plain-ct-kd", "student-only", status, GateSettings()).agreement == agreement


def test_a_gate_failure_beside_a_supported_status_is_a_disagreement(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [3] * 10, "student-only": [4] * 10})
    verdict = gate_verdict(records, "H1", "plain-ct-kd", "student-only", Status.SUPPORTED, GateSettings())
    assert verdict.outcome == GateOutcome.FAILS and verdict.agreement == "section 8 only"


def test_a_store_without_runs_on_the_gate_regime_has_no_gate_evidence(template: RunRecord) -> None:
    records = [_record(template, "plain-ct-kd", "paired-monte-carlo", i, 1000 + i, 4) for i in range(4)]
    assert gate_evidence(records, evaluate_hypotheses(records).hypotheses, GateSettings()) is None


def test_the_gate_is_evaluated_for_every_comparison_section_8_decided(template: RunRecord) -> None:
    records = folds(template, {"plain-ct-kd": [4] * 8, "student-only": [3] * 8, "same-modality-kd": [4] * 8})
    hypotheses = evaluate_hypotheses(records).hypotheses
    gate = gate_evidence(records, hypotheses, GateSettings())
    assert gate is not None and [v.comparison for v in gate.verdicts] == [h.hypothesis for h in hypotheses]
    h1 = gate.verdicts[0]
    assert gate.passes == 1 and h1.outcome == GateOutcome.PASSES
    assert h1.agreement == "not comparable" and gate.disagreements == 0  # section 8 has no Monte Carlo run here
