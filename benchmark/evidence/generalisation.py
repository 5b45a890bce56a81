"""Evidence on test sets (PROTOCOL.md section 13): the section 8 rules decided again on held-out and external scores,
beside which statuses differ from validation and why, and whether the configurations' ranking survives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau, rankdata

from benchmark.evidence.results import (
    CandidateEvidence,
    EffectEstimate,
    Evidence,
    HypothesisResult,
    MonteCarloComparison,
    Ranking,
    RankingRow,
    Status,
    StatusDifference,
    TestEvidence,
)
from benchmark.evidence.rules import decide_everything
from benchmark.evidence.statistics import (
    BOOTSTRAP_REPLICATES,
    balanced_accuracy_of_totals,
    patient_counts,
    percentile_interval,
)
from benchmark.evidence.summary import runs_of, scored_view
from benchmark.experiment.store import RunRecord
from benchmark.schemas import RegimeName, TestSet

TEST_BOOTSTRAP_METHOD = ("percentile interval over the resamples resampled with replacement and the test patients "
                         "resampled with replacement by class, one draw of patients per replicate shared by every "
                         "resample (they are scored on the same patients; seed 0)")


def shared_patient_bootstrap(records: Sequence[RunRecord], comparison: MonteCarloComparison,
                             replicates: int = BOOTSTRAP_REPLICATES, level: float = 0.95,
                             seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of the mean test BA difference, test patients drawn once per replicate for every resample."""
    # resamples are drawn with replacement, and the test patients with replacement by class: every resample's models
    # are scored on the same test patients, so one draw of them serves every resample (drawing them anew per
    # resample would treat the same patients as new ones and narrow the interval); None without two defined resamples
    by_id = {r.spec.run_id: r for r in records}
    defined = [r for r in comparison.resamples if r.d_balanced_accuracy is not None]
    if len(defined) < 2:
        return None
    sides = []
    positive: np.ndarray | None = None
    for resample in defined:
        pair = []
        for ids in (resample.a_run_ids, resample.b_run_ids):
            mask, counts = patient_counts([by_id[i] for i in ids])
            if positive is None:
                positive = mask
            if len(mask) != len(positive) or not np.array_equal(mask, positive):
                raise ValueError(f"{comparison.a} vs {comparison.b}: runs of one test set scored on other patients")
            pair.append(counts)
        sides.append(pair)
    assert positive is not None
    rng = np.random.default_rng(seed)
    weights = np.zeros((replicates, len(positive)))
    for group in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        if len(group):
            weights[:, group] = rng.multinomial(len(group), np.full(len(group), 1 / len(group)), size=replicates)
    differences = np.array([balanced_accuracy_of_totals(weights @ a) - balanced_accuracy_of_totals(weights @ b)
                            for a, b in sides])  # (resamples, replicates)
    return percentile_interval(differences, rng, replicates, level)


def effect_on_test_set(records: Sequence[RunRecord], comparison: MonteCarloComparison) -> EffectEstimate | None:
    """The mean test BA difference with its two-level bootstrap interval, and no statement of need."""
    # a test set sizes nothing, so no statement of what a confirmation would need is made from it
    d = np.array([r.d_balanced_accuracy for r in comparison.resamples if r.d_balanced_accuracy is not None])
    interval = shared_patient_bootstrap(records, comparison)
    if interval is None:
        return None
    return EffectEstimate(
        mean_d_balanced_accuracy=float(d.mean()), sd_d_balanced_accuracy=float(d.std(ddof=1)),
        bootstrap_low=interval[0], bootstrap_high=interval[1], level=0.95, replicates=BOOTSTRAP_REPLICATES,
        method=TEST_BOOTSTRAP_METHOD,
        needs="not stated from a test set: a test set scores the models and sizes nothing (what a confirmation "
              "would need is stated from the validation evidence and the power study)")


def unscored_configurations(records: Sequence[RunRecord], name: str) -> dict[str, str]:
    """Every configuration name of the store whose runs are not scored on test set `name`, with why."""
    # late fusion and the all-CT reference read CT; the all-X-ray reference trains on held-out patients
    reasons: dict[str, str] = {}
    for record in records:
        if name in record.tests:
            continue
        configuration = record.spec.configuration
        if configuration.reads_ct_at_inference:
            why = "it reads CT at inference, and a test set holds X-ray images only"
        elif configuration.manifest != "paired":
            why = ("a reference row, not a run of the paired regimes: it trains on the all-X-ray reference split, "
                   "which holds the held-out patients")
        else:
            why = "its runs hold no scores on this test set (stored before it was declared?)"
        for declared in record.spec.names:
            reasons.setdefault(declared, why)
    return reasons


def _numbers(h: HypothesisResult) -> str:
    """The numbers a status was decided on, in one phrase."""
    mc = h.monte_carlo or h.balanced_monte_carlo
    parts = []
    if mc is not None and mc.mean_d_balanced_accuracy is not None:
        parts.append(f"mean BA difference {mc.mean_d_balanced_accuracy:+.3f}, mean macro-F1 difference "
                     f"{mc.mean_d_macro_f1:+.3f}, p = {mc.p_value:.4f}" if mc.p_value is not None else
                     f"mean BA difference {mc.mean_d_balanced_accuracy:+.3f}")
        parts.append(f"collapsed on {mc.collapsed_resamples} of {len(mc.resamples)} resamples")
    if h.fixed_split is not None:
        f = h.fixed_split
        shown = [f"{v:.3f}" if v is not None else "undefined" for v in (f.a_mean_balanced_accuracy,
                                                                         f.b_mean_balanced_accuracy)]
        parts.append(f"fixed-split mean BA {shown[0]} vs {shown[1]}")
    return "; ".join(parts)


def explain_difference(validation: HypothesisResult, test: HypothesisResult, test_set: TestSet) -> str:
    """Why a test status differs from the validation status: each side's reason and numbers, and the populations."""
    s = test_set.support
    population = (f"the held-out patients are not the paired cohort's patients (no kept CT image): "
                  f"{s.images} images of {s.patients} patients, {s.negative_patients} negative, scored by every "
                  "run, where each validation set holds a few paired patients" if test_set.kind == "held-out" else
                  f"the external set is another cohort ({s.images} images of {s.patients} patients, "
                  f"{s.negative_patients} negative), scored by every run")
    sides = []
    for label, h in (("validation", validation), (test_set.name, test)):
        numbers = _numbers(h)
        sides.append(f"{label}: {h.status.value}, because {h.reason}" + (f" ({numbers})" if numbers else ""))
    return "; ".join(sides) + f". A test status can differ because a test set is larger, or because {population}"


def _differences(evidence: Evidence, decided_hypotheses: list[HypothesisResult],
                 decided_candidates: list[CandidateEvidence], lengths: dict[int, list[HypothesisResult]],
                 test_set: TestSet, unscored: dict[str, str]) -> list[StatusDifference]:
    """Every comparison (headline and each training length) whose test status differs from its validation one."""
    # one not evaluable on test sets because a side is not scored is listed at the headline only (the reason is the
    # same at every length)
    def comparisons(hypotheses: list[HypothesisResult], candidates: list[CandidateEvidence]
                    ) -> dict[str, HypothesisResult]:
        """Every comparison decided, by its key."""
        return {h.hypothesis: h for h in [*hypotheses, *(c for cand in candidates for c in cand.comparisons)]}

    pairs: list[tuple[int | None, dict[str, HypothesisResult], dict[str, HypothesisResult]]] = [
        (None, comparisons(evidence.hypotheses, evidence.candidates),
         comparisons(decided_hypotheses, decided_candidates))]
    for length in evidence.training_lengths:
        pairs.append((length.epochs, comparisons(length.hypotheses, length.candidates),
                      {h.hypothesis: h for h in lengths.get(length.epochs, [])}))
    differences = []
    for epochs, validation, test in pairs:
        for key, v in validation.items():
            t = test.get(key)
            not_scored = t is not None and t.status == Status.NOT_EVALUABLE and (t.a in unscored or t.b in unscored)
            if t is not None and t.status != v.status and not (epochs is not None and not_scored):
                differences.append(StatusDifference(comparison=key, epochs=epochs, validation=v.status,
                                                    test=t.status, why=explain_difference(v, t, test_set)))
    return differences


def ranking(records: Sequence[RunRecord], view: Sequence[RunRecord], name: str) -> Ranking:
    """Configurations by mean validation and mean test BA over their Monte Carlo runs, and Kendall's tau-b between."""
    # with the runs that collapsed on each (scipy's kendalltau and rankdata)
    regime = RegimeName.PAIRED_MONTE_CARLO
    scored = {r.spec.run_id for r in view}
    names, seen = [], set()
    for candidate in dict.fromkeys(n for r in view if r.spec.regime == regime for n in r.spec.names):
        runs = frozenset(r.spec.run_id for r in runs_of(view, candidate, regime))
        if runs not in seen:  # a run set declared under two names (student-only, student-only@epochs=5) ranks once
            seen.add(runs)
            names.append(candidate)

    def mean_ba(runs: list[RunRecord]) -> float | None:
        """The mean of the runs' defined BA; None when none is defined."""
        values = [r.metrics.balanced_accuracy for r in runs if r.metrics.balanced_accuracy is not None]
        return float(np.mean(values)) if values else None

    rows = []
    for configuration in names:
        validation = [r for r in runs_of(records, configuration, regime) if r.spec.run_id in scored]
        test = runs_of(view, configuration, regime)
        rows.append(RankingRow(
            configuration=configuration, run_ids=[r.spec.run_id for r in test],
            validation_balanced_accuracy=mean_ba(validation), test_balanced_accuracy=mean_ba(test),
            validation_rank=None, test_rank=None, validation_collapsed=sum(r.metrics.collapsed for r in validation),
            test_collapsed=sum(r.metrics.collapsed for r in test)))
    both = [r for r in rows if r.validation_balanced_accuracy is not None and r.test_balanced_accuracy is not None]
    for attribute, rank in (("validation_balanced_accuracy", "validation_rank"), ("test_balanced_accuracy",
                                                                                  "test_rank")):
        ranks = rankdata([-getattr(r, attribute) for r in both], method="min") if both else []
        for row, value in zip(both, ranks, strict=True):
            setattr(row, rank, int(value))
    tau = None
    if len(both) >= 2:
        value = kendalltau([r.validation_balanced_accuracy for r in both], [r.test_balanced_accuracy for r in both])
        tau = None if math.isnan(value.statistic) else float(value.statistic)
    rows.sort(key=lambda r: (r.test_rank is None, r.test_rank or 0, r.configuration))
    return Ranking(regime=regime, rows=rows, kendall_tau=tau, statement=_ranking_statement(rows, both, tau, name))


def _ranking_statement(rows: list[RankingRow], both: list[RankingRow], tau: float | None, name: str) -> str:
    if len(both) < 2:
        return f"fewer than two configurations have a defined mean BA on both the validation cases and {name}"
    runs = sum(len(r.run_ids) for r in rows)
    collapsed = (f"{sum(r.validation_collapsed for r in rows)} of {runs} Monte Carlo runs collapsed on their "
                 f"validation cases and {sum(r.test_collapsed for r in rows)} on {name} (a collapsed run's BA is 0.5 "
                 "whatever its scores, so it ties)")
    best_validation = [r.configuration for r in both if r.validation_rank == 1]
    best_test = [r.configuration for r in both if r.test_rank == 1]
    order = ("undefined: one of the two orders has no variation" if tau is None else
             f"{tau:+.2f} (1: the same order, 0: unrelated, -1: reversed)")
    return (f"Kendall's tau-b between the {len(both)} configurations' orders by mean validation BA and by mean {name} "
            f"BA: {order}; highest on validation: {', '.join(best_validation)}; highest on {name}: "
            f"{', '.join(best_test)}; {collapsed}")


def _explain_unscored(results: list[HypothesisResult], unscored: dict[str, str]) -> list[HypothesisResult]:
    """A comparison that no run decides because a side is not scored on test sets says so, not "no runs"."""
    explained = []
    for h in results:
        absent = [x for x in (h.a, h.b) if x is not None and x in unscored]
        if h.status == Status.NOT_EVALUABLE and absent:
            h = h.model_copy(update={"reason": "; ".join(f"{x} is not scored on test sets: {unscored[x]}"
                                                         for x in absent)})
        explained.append(h)
    return explained


def evidence_on_test_set(records: Sequence[RunRecord], test_set: TestSet, evidence: Evidence) -> TestEvidence:
    """H1-H5 and every candidate decided on `test_set`'s scores, beside the validation `evidence`."""
    # at the headline and every training length, with which statuses differ and why, and whether the ranking survives;
    # the view puts each scored run's test predictions and metrics in place of its validation ones, so the rules apply
    # unchanged at the protocol's threshold 0.5, and nothing is chosen on a test set
    view = scored_view(records, test_set.name)
    unscored = unscored_configurations(records, test_set.name)
    decided = decide_everything(view, estimator=effect_on_test_set, names=[c.name for c in evidence.candidates],
                                rope=evidence.rope)
    hypotheses = _explain_unscored(decided.hypotheses, unscored)
    candidates = [c.model_copy(update={"comparisons": _explain_unscored(c.comparisons, unscored)})
                  for c in decided.candidates]
    lengths = [length.model_copy(update={
        "hypotheses": _explain_unscored(length.hypotheses, unscored),
        "candidates": [c.model_copy(update={"comparisons": _explain_unscored(c.comparisons, unscored)})
                       for c in length.candidates]}) for length in decided.training_lengths]
    by_length = {length.epochs: [*length.hypotheses, *(c for cand in length.candidates for c in cand.comparisons)]
                 for length in lengths}
    return TestEvidence(
        test_set=test_set.name, kind=test_set.kind, support=test_set.support, hypotheses=hypotheses,
        candidates=candidates, training_lengths=lengths,
        depends_on_training_length=decided.depends_on_training_length, unscored=unscored,
        differences=_differences(evidence, hypotheses, candidates, by_length, test_set, unscored),
        ranking=ranking(records, view, test_set.name))
