"""Evidence on test sets (PROTOCOL.md section 13) on hand-built runs: statuses by the section 8 rule on test scores,
differences explained, unscored configurations, the shared-patient bootstrap and the ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from benchmark.evidence.generalisation import evidence_on_test_set, ranking, shared_patient_bootstrap
from benchmark.evidence.results import Status
from benchmark.evidence.rules import evaluate_hypotheses, monte_carlo_comparison
from benchmark.evidence.statistics import patient_bootstrap
from benchmark.evidence.summary import scored_view
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import ResultsStore, RunRecord, TestScores
from benchmark.schemas import CasePrediction, DeploymentProbe, TestCase, TestSet
from tests.test_evidence import table

TEST_PATIENTS = 40  # 10 negative, 30 positive, one image each


@pytest.fixture(scope="module")
def template(synthetic_store: Path) -> RunRecord:
    return ResultsStore(synthetic_store).load_all()[0]


def _test_set() -> TestSet:
    return TestSet(name="site", kind="external", description="hand-built", table="t.csv", table_sha256="0" * 64,
                   root=".", cases=[TestCase(patient_id=f"q{i}", image_id=f"q{i}.png", label=int(i >= 10),
                                             path=f"q{i}.png", pixels_sha256=f"{i:064d}", content_sha256=f"{i:064d}",
                                             line=i + 2) for i in range(TEST_PATIENTS)])


def _scored(record: RunRecord, wrong: int, seed: int = 0, collapse: bool = False) -> RunRecord:
    """`record` scored on the hand-built test set with `wrong` cases wrong (chosen with `seed`)."""
    rng = np.random.default_rng(seed)
    flipped = set(rng.choice(TEST_PATIENTS, size=wrong, replace=False).tolist()) if wrong else set()
    predictions = []
    for case in _test_set().cases:
        right = 0.8 if case.label else 0.2
        score = 0.7 if collapse else (1 - right if int(case.patient_id[1:]) in flipped else right)
        predictions.append(CasePrediction(patient_id=case.patient_id, image_id=case.image_id, label=case.label,
                                          score=score))
    probe = DeploymentProbe(reads_ct_declared=False, ct_removed_max_abs_diff=0.0, ct_noise_max_abs_diff=0.0)
    return record.model_copy(update={"tests": {"site": TestScores(predictions=predictions,
                                                                  metrics=compute_metrics(predictions), probe=probe)}})


def _with_tests(records: list[RunRecord], wrong: dict[str, int], collapse: set[str] = frozenset()) -> list[RunRecord]:
    return [_scored(r, wrong[r.spec.name], seed=r.spec.split.index, collapse=r.spec.name in collapse)
            if r.spec.name in wrong else r for r in records]


def test_a_degenerate_validation_comparison_can_be_confirmed_on_a_test_set(template: RunRecord) -> None:
    # validation: every resample has a run predicting one class (4 of 4 right would not collapse; ppr_inside=False
    # makes all 4 predicted positive), so H2 is degenerate there; on the test set plain-ct-kd is right more often
    records = table(template, {"plain-ct-kd": [3] * 8, "same-modality-kd": [3] * 8}, ppr_inside=False)
    records = _with_tests(records, {"plain-ct-kd": 2, "same-modality-kd": 12})
    evidence = evaluate_hypotheses(records)
    on_test = evidence_on_test_set(records, _test_set(), evidence)
    h2_val = next(h for h in evidence.hypotheses if h.hypothesis == "H2")
    h2_test = next(h for h in on_test.hypotheses if h.hypothesis == "H2")
    assert h2_val.status == Status.NOT_SUPPORTED and h2_val.degenerate
    assert h2_test.status == Status.SUPPORTED and h2_test.monte_carlo.confirmed and not h2_test.degenerate
    [difference] = [d for d in on_test.differences if d.comparison == "H2"]
    assert (difference.validation, difference.test) == (Status.NOT_SUPPORTED, Status.SUPPORTED)
    assert "validation: not supported" in difference.why and "site: supported" in difference.why
    assert h2_test.estimate is not None and h2_test.estimate.bootstrap_low > 0


def test_collapse_is_counted_on_the_test_cases(template: RunRecord) -> None:
    records = table(template, {"plain-ct-kd": [4] * 8, "same-modality-kd": [3] * 8})
    records = _with_tests(records, {"plain-ct-kd": 2, "same-modality-kd": 12}, collapse={"plain-ct-kd"})
    on_test = evidence_on_test_set(records, _test_set(), evaluate_hypotheses(records))
    h2 = next(h for h in on_test.hypotheses if h.hypothesis == "H2")
    assert h2.degenerate == "degenerate evidence: 8 of 8 resamples collapsed" and h2.status == Status.NOT_SUPPORTED


def test_a_configuration_not_scored_makes_its_comparisons_not_evaluable_and_says_why(template: RunRecord) -> None:
    records = table(template, {"plain-ct-kd": [4] * 8, "late-fusion": [3] * 8})
    records = _with_tests(records, {"plain-ct-kd": 2})  # late fusion's runs hold no test scores
    on_test = evidence_on_test_set(records, _test_set(), evaluate_hypotheses(records))
    h3 = next(h for h in on_test.hypotheses if h.hypothesis == "H3")
    assert h3.status == Status.NOT_EVALUABLE and h3.reason.startswith("late-fusion is not scored on test sets")
    assert "late-fusion" in on_test.unscored


def test_the_test_view_swaps_in_each_runs_test_scores(template: RunRecord) -> None:
    records = _with_tests(table(template, {"plain-ct-kd": [4] * 2, "late-fusion": [3] * 2}), {"plain-ct-kd": 5})
    view = scored_view(records, "site")
    assert [r.spec.name for r in view] == ["plain-ct-kd", "plain-ct-kd"]
    assert all(r.metrics == r.tests["site"].metrics and r.predictions == r.tests["site"].predictions for r in view)


def test_the_shared_patient_bootstrap_does_not_narrow_with_copies_of_one_resample(template: RunRecord) -> None:
    """Resamples scored on the same test patients are not new patients: copying a resample R times leaves the
    interval's width, where independent patient draws per resample would shrink it like 1/sqrt(R)."""
    widths, independent = {}, {}
    for resamples in (2, 8):
        records = table(template, {"plain-ct-kd": [4] * resamples, "student-only": [4] * resamples})
        records = [_scored(r, 4 if r.spec.name == "plain-ct-kd" else 10, seed=0) for r in records]
        view = scored_view(records, "site")
        comparison = monte_carlo_comparison(view, "plain-ct-kd", "student-only")
        low, high = shared_patient_bootstrap(view, comparison)
        widths[resamples] = high - low
        low, high = patient_bootstrap(view, comparison)
        independent[resamples] = high - low
    assert widths[8] == pytest.approx(widths[2], rel=0.15)
    assert independent[8] < 0.7 * independent[2]


def test_the_ranking_compares_the_orders_by_kendalls_tau(template: RunRecord) -> None:
    wrong = {"student-only": 12, "plain-ct-kd": 2, "same-modality-kd": 6, "jdcnet": 9}
    records = table(template, {"student-only": [4, 4], "plain-ct-kd": [3, 3], "same-modality-kd": [3, 2],
                               "jdcnet": [2, 2]})
    records = _with_tests(records, wrong)
    result = ranking(records, scored_view(records, "site"), "site")
    rows = {r.configuration: r for r in result.rows}
    validation = [rows[n].validation_balanced_accuracy for n in wrong]
    test = [rows[n].test_balanced_accuracy for n in wrong]
    assert result.kendall_tau == pytest.approx(kendalltau(validation, test).statistic)
    assert [r.configuration for r in result.rows][0] == "plain-ct-kd" and rows["plain-ct-kd"].test_rank == 1
    assert "Kendall's tau-b" in result.statement
