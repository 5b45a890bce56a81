"""Hypothesis rules on hand-built result tables: every status branch of every hypothesis, and the effect estimates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from benchmark.evidence.results import PairedCohort, PowerGrounding, Status
from benchmark.evidence.rules import evaluate_hypotheses, monte_carlo_comparison
from benchmark.evidence.statistics import effect_estimate, sign_flip_p_value
from benchmark.experiment.matrix import Declaration, RunSpec
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import ResultsStore, RunRecord
from benchmark.schemas import CasePrediction, Split, SplitRole

NAMES = ["student-only", "plain-ct-kd", "same-modality-kd", "late-fusion", "jdcnet", "plain-ct-kd@balanced",
         "student-only@balanced"]


@pytest.fixture(scope="module")
def template(synthetic_store: Path) -> RunRecord:
    return ResultsStore(synthetic_store).load_all()[0]


def _split(index: int, regime: str) -> Split:
    role = SplitRole.MONTE_CARLO if regime == "paired-monte-carlo" else SplitRole.FIXED
    return Split(manifest="paired", role=role, index=index, seed=1000 + index,
                 train_patients=(f"t{index}a", f"t{index}b"), val_patients=(f"n{index}", f"p{index}"))


def _record(template: RunRecord, name: str, regime: str, index: int, seed: int, correct: int, ppr_inside: bool = True
            ) -> RunRecord:
    """A run on split `index` whose 4 cases (1 negative, 3 positive images) are right `correct` times of 4."""
    split = _split(index, regime)
    labels = [0, 1, 1, 1]
    scores = [0.1 if y == 0 else 0.9 for y in labels]
    for i in range(4 - correct):  # make the last cases wrong
        j = 3 - i
        scores[j] = 1 - scores[j]
    if not ppr_inside:
        scores = [0.9] * 4
    predictions = [CasePrediction(patient_id=f"n{index}" if y == 0 else f"p{index}", image_id=f"images/{index}-{k}",
                                  label=y, score=s) for k, (y, s) in enumerate(zip(labels, scores, strict=True))]
    spec = RunSpec(run_id=f"{name}-{regime}-{index}-{seed}", declarations=(Declaration(block="b", name=name),),
                   regime=regime, configuration=template.spec.configuration, split=split, seed=seed)
    return template.model_copy(update={"spec": spec, "val_hash": split.val_hash, "predictions": predictions,
                                       "metrics": compute_metrics(predictions)})


def table(template: RunRecord, mc: dict[str, list[int]], fixed: dict[str, list[int]] | None = None,
          ppr_inside: bool = True) -> list[RunRecord]:
    """MC: name -> correct cases (of 4) per resample; fixed: name -> correct cases per seed."""
    records = [_record(template, name, "paired-monte-carlo", i, 1000 + i, c, ppr_inside)
               for name, values in mc.items() for i, c in enumerate(values)]
    records += [_record(template, name, "paired-fixed", 0, 42 + s, c) for name, values in (fixed or {}).items()
                for s, c in enumerate(values)]
    return records


def status(records: list[RunRecord], key: str) -> Status:
    return next(h for h in evaluate_hypotheses(records).hypotheses if h.hypothesis == key).status


GOOD, BAD = [4] * 8, [2] * 8  # all 4 right on every resample vs 2 of 4


def test_the_sign_flip_test_is_exact_and_one_sided() -> None:
    p, description = sign_flip_p_value([0.1] * 8)
    assert p == pytest.approx(1 / 256) and "256 sign assignments" in description
    assert sign_flip_p_value([-0.1] * 8)[0] == 1.0
    assert sign_flip_p_value([0.2, -0.1])[0] == pytest.approx(0.5)


def test_h1_is_supported_when_mc_confirmed(template) -> None:
    assert status(table(template, {"plain-ct-kd": GOOD, "student-only": BAD}), "H1") == Status.SUPPORTED


def test_h1_is_tentative_with_only_a_fixed_split_advantage(template) -> None:
    records = table(template, {"plain-ct-kd": BAD, "student-only": BAD},
                    {"plain-ct-kd": [4, 4, 4, 4], "student-only": [2, 2, 2, 2]})
    assert status(records, "H1") == Status.TENTATIVE


def test_h1_is_not_supported_without_either(template) -> None:
    records = table(template, {"plain-ct-kd": BAD, "student-only": GOOD},
                    {"plain-ct-kd": [2, 2, 2, 2], "student-only": [2, 2, 2, 2]})
    assert status(records, "H1") == Status.NOT_SUPPORTED


def test_a_few_good_resamples_are_not_enough(template) -> None:
    records = table(template, {"plain-ct-kd": [4, 4, 4, 2, 2, 2, 2, 2], "student-only": BAD})
    assert status(records, "H1") != Status.SUPPORTED


@pytest.mark.parametrize("key, b", [("H2", "same-modality-kd"), ("H3", "late-fusion")])
def test_h2_and_h3_follow_mc_confirmation(template, key: str, b: str) -> None:
    assert status(table(template, {"plain-ct-kd": GOOD, b: BAD, "student-only": BAD}), key) == Status.SUPPORTED
    assert status(table(template, {"plain-ct-kd": BAD, b: GOOD, "student-only": BAD}), key) == Status.NOT_SUPPORTED


def test_h4_needs_both_mc_confirmation_and_a_fixed_split_advantage(template) -> None:
    both = table(template, {"jdcnet": GOOD, "plain-ct-kd": BAD}, {"jdcnet": [4] * 4, "plain-ct-kd": [2] * 4})
    mc_only = table(template, {"jdcnet": GOOD, "plain-ct-kd": BAD}, {"jdcnet": [2] * 4, "plain-ct-kd": [2] * 4})
    assert status(both, "H4") == Status.SUPPORTED and status(mc_only, "H4") == Status.NOT_SUPPORTED


def test_h5_needs_h1_the_balanced_confirmation_and_rates_strictly_inside(template) -> None:
    base = {"plain-ct-kd": GOOD, "student-only": BAD, "plain-ct-kd@balanced": GOOD, "student-only@balanced": BAD}
    assert status(table(template, base), "H5") == Status.SUPPORTED
    no_balanced = {**base, "plain-ct-kd@balanced": BAD}
    assert status(table(template, no_balanced), "H5") == Status.NOT_SUPPORTED
    no_h1 = {**base, "plain-ct-kd": BAD}
    no_fixed_advantage = {"plain-ct-kd": [2] * 4, "student-only": [2] * 4}
    assert status(table(template, no_h1, no_fixed_advantage), "H5") == Status.NOT_SUPPORTED


def test_h5_fails_when_plain_ct_kd_predicts_one_class_on_a_resample(template) -> None:
    records = table(template, {"student-only": BAD, "plain-ct-kd@balanced": GOOD, "student-only@balanced": BAD})
    records += [_record(template, "plain-ct-kd", "paired-monte-carlo", i, 1000 + i, 4, ppr_inside=(i != 3))
                for i in range(8)]
    h5 = next(h for h in evaluate_hypotheses(records).hypotheses if h.hypothesis == "H5")
    assert h5.status == Status.NOT_SUPPORTED and "positive prediction rate" in h5.reason


def test_missing_runs_make_a_hypothesis_not_evaluable_never_supported(template) -> None:
    assert status(table(template, {"plain-ct-kd": GOOD}), "H1") == Status.NOT_EVALUABLE


def test_a_resample_missing_on_one_side_blocks_confirmation(template) -> None:
    records = table(template, {"plain-ct-kd": GOOD, "student-only": BAD})
    records = [r for r in records if not (r.spec.name == "student-only" and r.spec.split.index == 7)]
    comparison = monte_carlo_comparison(records, "plain-ct-kd", "student-only")
    assert not comparison.confirmed and len(comparison.missing) == 1


COHORT = PairedCohort(paired_patients=17, negative_patients=3, val_patients=5)


def test_a_consistent_effect_has_a_tight_bootstrap_interval_and_needs_five_disjoint_sets(template) -> None:
    records = table(template, {"plain-ct-kd": GOOD, "student-only": BAD})
    comparison = monte_carlo_comparison(records, "plain-ct-kd", "student-only")
    estimate = effect_estimate(records, comparison, COHORT)
    assert estimate.bootstrap_low == pytest.approx(estimate.bootstrap_high) == pytest.approx(
        comparison.mean_d_balanced_accuracy)
    assert (estimate.disjoint_sets_needed, estimate.paired_patients_needed, estimate.negative_patients_needed) == (
        5, 25, 5)


def test_a_noisy_effect_is_said_to_need_patients_not_resamples(template) -> None:
    records = table(template, {"plain-ct-kd": [4, 3, 2, 4, 3, 2, 4, 2], "student-only": [3, 3, 3, 3, 3, 3, 3, 3]})
    comparison = monte_carlo_comparison(records, "plain-ct-kd", "student-only")
    estimate = effect_estimate(records, comparison, COHORT)
    assert estimate.bootstrap_low < comparison.mean_d_balanced_accuracy < estimate.bootstrap_high
    assert estimate.paired_patients_needed == 5 * estimate.negative_patients_needed > COHORT.paired_patients
    assert f"about {estimate.paired_patients_needed} paired patients, {estimate.negative_patients_needed} of them " \
           f"negative" in estimate.needs
    assert "this cohort has 17 paired patients, 3 negative" in estimate.needs
    assert "resamples for" not in estimate.needs and "more resamples" not in estimate.needs


def test_the_power_study_grounds_the_statement_of_need(template) -> None:
    records = table(template, {"plain-ct-kd": [4, 3, 2, 4, 3, 2, 4, 2], "student-only": [3, 3, 3, 3, 3, 3, 3, 3]})
    power = PowerGrounding(source="grid 'default'", paired_patients=96, negative_patients=24,
                           statement="96 paired patients (24 negative) with R = 16 ...")
    estimate = effect_estimate(records, monte_carlo_comparison(records, "plain-ct-kd", "student-only"), COHORT, power)
    assert estimate.power == power and estimate.needs.endswith("Power study (grid 'default'): 96 paired patients "
                                                               "(24 negative) with R = 16 ...")


def test_no_effect_gives_no_patient_count(template) -> None:
    records = table(template, {"plain-ct-kd": BAD, "student-only": BAD})
    estimate = effect_estimate(records, monte_carlo_comparison(records, "plain-ct-kd", "student-only"), COHORT)
    assert estimate.paired_patients_needed is None and "<= 0" in estimate.needs


COLLAPSED = 1  # of 4 cases right: the one negative, every positive predicted negative too -> one class predicted


def test_a_comparison_collapsed_on_most_resamples_is_degenerate_and_never_confirms(template) -> None:
    records = table(template, {"plain-ct-kd": GOOD, "student-only": [COLLAPSED] * 5 + [2] * 3},
                    {"plain-ct-kd": [2] * 4, "student-only": [2] * 4})
    comparison = monte_carlo_comparison(records, "plain-ct-kd", "student-only")
    assert comparison.mean_d_balanced_accuracy > 0 and comparison.p_value <= 0.05
    assert comparison.degenerate and not comparison.confirmed
    assert len(comparison.b_collapsed) == 5 and comparison.a_collapsed == []
    h1 = next(h for h in evaluate_hypotheses(records).hypotheses if h.hypothesis == "H1")
    assert h1.status == Status.NOT_SUPPORTED
    assert h1.degenerate == "degenerate evidence: 5 of 8 resamples collapsed" and h1.degenerate in h1.reason
    assert evaluate_hypotheses(records).degenerate_headline == ["H1"]


def test_collapse_on_half_of_the_resamples_is_not_degenerate(template) -> None:
    records = table(template, {"plain-ct-kd": GOOD, "student-only": [COLLAPSED] * 4 + [2] * 4})
    comparison = monte_carlo_comparison(records, "plain-ct-kd", "student-only")
    assert comparison.collapsed_resamples == 4 and not comparison.degenerate and comparison.confirmed


def test_h4_is_not_supported_from_the_fixed_split_alone_without_an_advantage(template) -> None:
    records = table(template, {"plain-ct-kd": GOOD}, {"jdcnet": [2] * 4, "plain-ct-kd": [4] * 4})
    assert status(records, "H4") == Status.NOT_SUPPORTED


def test_h4_with_a_fixed_split_advantage_but_no_monte_carlo_runs_is_not_evaluable(template) -> None:
    records = table(template, {"plain-ct-kd": GOOD}, {"jdcnet": [4] * 4, "plain-ct-kd": [2] * 4})
    assert status(records, "H4") == Status.NOT_EVALUABLE


def test_h5_is_not_supported_once_h1_is_not_even_without_balanced_runs(template) -> None:
    records = table(template, {"plain-ct-kd": BAD, "student-only": GOOD},
                    {"plain-ct-kd": [2] * 4, "student-only": [2] * 4})
    h5 = next(h for h in evaluate_hypotheses(records).hypotheses if h.hypothesis == "H5")
    assert h5.status == Status.NOT_SUPPORTED and h5.reason.startswith("H1 is not supported")


def test_h1_without_fixed_split_runs_cannot_tell_tentative_from_not_supported(template) -> None:
    assert status(table(template, {"plain-ct-kd": BAD, "student-only": BAD}), "H1") == Status.NOT_EVALUABLE


def _at_length(records: list[RunRecord], epochs: int) -> list[RunRecord]:
    """The records as training-length runs of `epochs` student epochs."""
    moved = []
    for r in records:
        configuration = r.spec.configuration
        configuration = configuration.model_copy(update={"training": configuration.training.model_copy(
            update={"epochs": epochs})})
        spec = r.spec.model_copy(update={
            "run_id": f"{r.spec.run_id}-e{epochs}", "configuration": configuration,
            "declarations": (Declaration(block="training-length", name=f"{r.spec.name}@epochs={epochs}"),)})
        moved.append(r.model_copy(update={"spec": spec}))
    return moved


def test_statuses_are_decided_at_every_training_length_and_marked_when_they_differ(template) -> None:
    fixed = {"plain-ct-kd": [2] * 4, "student-only": [2] * 4}
    short = table(template, {"plain-ct-kd": BAD, "student-only": BAD}, fixed)
    long = table(template, {"plain-ct-kd": GOOD, "student-only": BAD}, fixed)
    evidence = evaluate_hypotheses(short + _at_length(short, 5) + _at_length(long, 50))
    by_length = {length.epochs: {h.hypothesis: h.status for h in length.hypotheses}
                 for length in evidence.training_lengths}
    assert by_length[5]["H1"] == Status.NOT_SUPPORTED and by_length[50]["H1"] == Status.SUPPORTED
    assert evidence.hypotheses[0].status == Status.NOT_SUPPORTED
    assert "H1" in evidence.depends_on_training_length and "H2" not in evidence.depends_on_training_length


def test_no_p_value_or_interval_is_computed_on_the_fixed_split(template) -> None:
    records = table(template, {"plain-ct-kd": GOOD, "student-only": BAD},
                    {"plain-ct-kd": [4] * 4, "student-only": [2] * 4})
    h1 = next(h for h in evaluate_hypotheses(records).hypotheses if h.hypothesis == "H1")
    assert not {k for k in h1.fixed_split.model_dump() if "p_value" in k or "interval" in k or "bootstrap" in k}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.25, -0.25, 0.5, 1 / 3, -1 / 3, 1 / 6, 0.125, 1.175494351e-38]) |
                st.floats(-1, 1), min_size=2, max_size=10))
@example([0.0, 0.0, 0.0, 1 / 3, 1 / 3, -1 / 3, -1 / 3, 1.175494351e-38])  # values meant to tie differ by rounding
def test_the_exact_sign_flip_p_value_is_scipys(differences: list[float]) -> None:
    import numpy as np
    from scipy.stats import permutation_test

    d = np.asarray(differences)
    expected = permutation_test((d,), np.mean, permutation_type="samples", alternative="greater",
                                n_resamples=np.inf).pvalue
    assert sign_flip_p_value(differences)[0] == float(expected)


def test_one_resample_is_too_few_for_a_test_and_never_confirms(template: RunRecord) -> None:
    records = table(template, {"plain-ct-kd": [4], "student-only": [2]})
    comparison = monte_carlo_comparison(records, "plain-ct-kd", "student-only")
    assert comparison.p_value is None and not comparison.confirmed and "too few" in comparison.test
    assert status(records, "H1") == Status.NOT_EVALUABLE  # no fixed-split runs to tell tentative from not supported
