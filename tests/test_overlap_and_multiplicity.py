"""PROTOCOL.md section 14: the overlap-aware companions beside the sign-flip p, and the candidates' multiplicity rule.

The companions are checked against references transcribed with attribution (tests/reference_overlap.py), against
baycomp and statsmodels where installed, and against the claims' own implementation (claims/section8.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.claims.section8 import all_verdicts, disagreements, holm, stated_verdicts
from benchmark.evidence.results import Status
from benchmark.evidence.rules import evaluate_hypotheses
from benchmark.evidence.statistics import bayesian_correlated_t_test, corrected_resampled_t_test, holm_adjusted
from benchmark.experiment.store import ResultsStore, RunRecord
from tests.reference_overlap import benavoli_correlated_bayesian_ttest, sklearn_corrected_ttest
from tests.test_evidence import table

differences = st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=20).filter(
    lambda d: np.var(d, ddof=1) > 1e-12)
sizes = st.tuples(st.integers(2, 500), st.integers(1, 100))
CONTROLS_GOOD_ENOUGH = {"student-only": [2] * 5, "same-modality-kd": [2] * 5, "late-fusion": [2] * 5,
                        "plain-ct-kd": [2] * 5}


@pytest.fixture(scope="module")
def template(synthetic_store: Path) -> RunRecord:
    return ResultsStore(synthetic_store).load_all()[0]


@given(differences, sizes)
def test_the_corrected_t_test_is_scikit_learns_example(d: list[float], size: tuple[int, int]) -> None:
    n_train, n_val = size
    mine = corrected_resampled_t_test(d, n_train, n_val)
    statistic, right_tail_of_abs = sklearn_corrected_ttest(np.asarray(d), len(d) - 1, n_train, n_val)
    assert mine.t_statistic == pytest.approx(statistic, rel=1e-12)
    assert mine.variance_factor == pytest.approx(1 / len(d) + n_val / n_train)
    one_sided = right_tail_of_abs if statistic > 0 else 1 - right_tail_of_abs
    assert mine.p_value == pytest.approx(one_sided, rel=1e-9, abs=1e-12)


@given(differences, sizes, st.floats(0.001, 0.5))
def test_the_bayesian_correlated_t_test_is_benavolis_reference(d: list[float], size: tuple[int, int],
                                                               rope: float) -> None:
    n_train, n_val = size
    mine = bayesian_correlated_t_test(d, n_train, n_val, rope)
    rho = n_val / (n_val + n_train)
    reference = benavoli_correlated_bayesian_ttest(np.asarray(d), rho, -rope, rope)
    assert mine.correlation == pytest.approx(rho)
    assert mine.p_b_better == pytest.approx(reference["left"], abs=1e-9)
    assert mine.p_equivalent == pytest.approx(reference["rope"], abs=1e-9)
    assert mine.p_a_better == pytest.approx(reference["right"], abs=1e-9)


@given(differences, sizes, st.floats(0.001, 0.5))
def test_the_bayesian_correlated_t_test_is_baycomps_posterior_given_the_monte_carlo_ratio(
        d: list[float], size: tuple[int, int], rope: float) -> None:
    baycomp = pytest.importorskip("baycomp.single")
    n_train, n_val = size
    r = len(d)
    variance = np.var(d, ddof=1) * (1 / r + n_val / n_train)  # baycomp's k-fold factor replaced by ours
    left, equivalent, right = baycomp.Posterior(np.mean(d), variance, r - 1, rope).probs()
    mine = bayesian_correlated_t_test(d, n_train, n_val, rope)
    assert (mine.p_b_better, mine.p_equivalent, mine.p_a_better) == pytest.approx((left, equivalent, right),
                                                                                   abs=1e-9)


def test_at_a_k_fold_ratio_the_bayesian_test_is_baycomps_correlated_t_test() -> None:
    baycomp = pytest.importorskip("baycomp")
    rng = np.random.default_rng(0)
    b, a = rng.uniform(0.4, 0.8, 10), rng.uniform(0.45, 0.85, 10)  # 2 runs of 5-fold: n_val / n_train = 1/4
    left, equivalent, right = baycomp.CorrelatedTTest.probs(b, a, rope=0.05, runs=2)
    mine = bayesian_correlated_t_test(list(a - b), n_train=4, n_val=1, rope=0.05)
    assert (mine.p_b_better, mine.p_equivalent, mine.p_a_better) == pytest.approx((left, equivalent, right))


def test_equal_differences_are_a_point_mass_and_a_sign() -> None:
    ahead = bayesian_correlated_t_test([0.1] * 5, 12, 5, 0.05)
    assert (ahead.p_a_better, ahead.p_equivalent, ahead.p_b_better) == (1.0, 0.0, 0.0)
    inside = bayesian_correlated_t_test([0.01] * 5, 12, 5, 0.05)
    assert inside.p_equivalent == 1.0
    assert corrected_resampled_t_test([0.1] * 5, 12, 5).p_value == 0.0
    assert corrected_resampled_t_test([-0.1] * 5, 12, 5).p_value == 1.0
    assert corrected_resampled_t_test([0.0] * 5, 12, 5).p_value is None


def test_overlap_weakens_the_corrected_test_against_the_plain_t_test() -> None:
    from scipy.stats import ttest_1samp

    d = [0.1, 0.05, 0.2, -0.02, 0.12, 0.08]
    plain = ttest_1samp(d, 0, alternative="greater").pvalue
    assert corrected_resampled_t_test(d, 12, 5).p_value > plain
    assert corrected_resampled_t_test(d, 1e12, 1).p_value == pytest.approx(plain)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_is_statsmodels_holm(p_values: list[float]) -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    expected = multitest.multipletests(p_values, method="holm")[1]
    assert holm_adjusted(p_values) == pytest.approx(list(expected))
    assert holm(p_values) == pytest.approx(list(expected))


def _headline(records: list[RunRecord], names: list[str], name: str):
    return next(c for c in evaluate_hypotheses(records, names=names).candidates if c.name == name)


def test_every_monte_carlo_comparison_carries_its_companions(template: RunRecord) -> None:
    records = table(template, {"plain-ct-kd": [4, 3, 4, 2, 4], "student-only": [2, 3, 1, 2, 3], "cand": [3] * 5,
                               **{c: [2, 3, 2, 3, 2] for c in ("same-modality-kd", "late-fusion")}})
    evidence = evaluate_hypotheses(records, names=["cand"])
    comparisons = [h.monte_carlo for h in evidence.hypotheses if h.monte_carlo is not None]
    comparisons += [c.monte_carlo for cand in evidence.candidates for c in cand.comparisons]
    assert len(comparisons) == 3 + 4
    for mc in comparisons:
        assert mc is not None and mc.companions is not None
        assert mc.companions.mean_train_patients == 2 and mc.companions.mean_val_patients == 2
        assert mc.companions.bayesian.rope == 0.05
        posterior = mc.companions.bayesian
        assert math.isclose(posterior.p_a_better + posterior.p_equivalent + posterior.p_b_better, 1.0)


def test_a_candidate_confirmed_over_every_control_is_supported_alone(template: RunRecord) -> None:
    records = table(template, {"first": [4] * 5, **CONTROLS_GOOD_ENOUGH})
    headline = _headline(records, ["first"], "first")
    assert headline.status == Status.SUPPORTED
    assert headline.p_value == headline.adjusted_p_value == pytest.approx(1 / 32)


def test_two_candidates_at_p_one_32nd_are_each_confirmed_but_neither_survives_holm(template: RunRecord) -> None:
    records = table(template, {"first": [4] * 5, "second": [4] * 5, **CONTROLS_GOOD_ENOUGH})
    for name in ("first", "second"):
        headline = _headline(records, ["first", "second"], name)
        assert all(c.status == Status.SUPPORTED for c in headline.comparisons)
        assert headline.p_value == pytest.approx(1 / 32)
        assert headline.adjusted_p_value == pytest.approx(2 / 32)
        assert headline.family == 2
        assert headline.status == Status.NOT_SUPPORTED and "Holm-adjusted p = 0.0625" in headline.reason


def test_a_candidate_short_of_one_control_is_not_supported(template: RunRecord) -> None:
    records = table(template, {"first": [4] * 5, **CONTROLS_GOOD_ENOUGH, "late-fusion": [4] * 5})
    headline = _headline(records, ["first"], "first")
    assert headline.status == Status.NOT_SUPPORTED and "late-fusion" in headline.reason


def test_a_declared_candidate_without_runs_is_not_evaluable_and_still_counts_in_the_family(template: RunRecord) -> None:
    records = table(template, {"first": [4] * 8, **{c: [2] * 8 for c in CONTROLS_GOOD_ENOUGH}})
    evidence = evaluate_hypotheses(records, names=["first", "ghost"])
    first, ghost = evidence.candidates
    assert ghost.status == Status.NOT_EVALUABLE and ghost.p_value is None and ghost.adjusted_p_value == 1.0
    assert first.family == 2 and first.adjusted_p_value == pytest.approx(2 / 256)


correct = st.integers(0, 4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), resamples=st.integers(5, 7), candidates=st.integers(1, 3))
def test_adding_a_null_candidate_never_turns_another_from_not_supported_to_supported(
        template: RunRecord, data: st.DataObject, resamples: int, candidates: int) -> None:
    results = {name: data.draw(st.lists(correct, min_size=resamples, max_size=resamples))
               for name in [*CONTROLS_GOOD_ENOUGH, *(f"c{i}" for i in range(candidates))]}
    null = results["student-only"]  # a null candidate: it trains to what the student alone gets
    names = [f"c{i}" for i in range(candidates)]
    before = {c.name: c.status for c in evaluate_hypotheses(table(template, results), names=names).candidates}
    after = {c.name: c.status for c in evaluate_hypotheses(table(template, {**results, "null": list(null)}),
                                                           names=[*names, "null"]).candidates}
    for name in names:
        assert not (before[name] != Status.SUPPORTED and after[name] == Status.SUPPORTED), (name, before, after)
        assert not (before[name] == Status.NOT_SUPPORTED and after[name] != Status.NOT_SUPPORTED)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), resamples=st.integers(2, 7), candidates=st.integers(1, 3))
def test_the_claims_recompute_companions_and_adjusted_p_as_the_benchmark_states_them(
        template: RunRecord, data: st.DataObject, resamples: int, candidates: int) -> None:
    names = [f"c{i}" for i in range(candidates)]
    results = {name: data.draw(st.lists(correct, min_size=resamples, max_size=resamples))
               for name in [*CONTROLS_GOOD_ENOUGH, "jdcnet", *names]}
    records = table(template, results)
    stated = stated_verdicts(json.loads(evaluate_hypotheses(records, names=names, rope=0.1).model_dump_json()))
    assert disagreements(all_verdicts(records, [], names, rope=0.1), stated) == []


def test_the_claims_notice_an_edited_adjusted_p_and_companion(template: RunRecord) -> None:
    records = table(template, {"first": [4, 3, 4, 4, 3], "second": [4] * 5, **CONTROLS_GOOD_ENOUGH})
    evidence = json.loads(evaluate_hypotheses(records, names=["first", "second"]).model_dump_json())
    evidence["candidates"][0]["adjusted_p_value"] = evidence["candidates"][0]["p_value"]  # "unadjusted"
    evidence["hypotheses"][0]["monte_carlo"]["companions"]["bayesian"]["p_a_better"] = 0.99
    problems = disagreements(all_verdicts(records, [], ["first", "second"]), stated_verdicts(evidence))
    assert any("first beats every control has adjusted_p_value" in p for p in problems), problems
    assert any("H1 has P(A better) 0.99" in p for p in problems), problems
