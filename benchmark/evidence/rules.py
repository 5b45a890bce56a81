"""Hypothesis rules (PROTOCOL.md section 8): each status returned with the numbers and the rule it used.

For configurations A and B on the Monte Carlo resamples, d_r = BA_r(A) - BA_r(B) (a configuration
run with several seeds on one resample contributes its mean over seeds):
- MC-confirmed(A > B) iff mean d_r > 0, the mean macro-F1 difference > 0, and the exact one-sided
  paired sign-flip permutation test over resamples gives p <= 0.05 (scipy.stats.permutation_test,
  all 2^R sign assignments; with more than 2^16 of them, 99,999 seeded random assignments, stated
  in the result). A comparison with a resample missing on either side is not confirmed, nor one
  with a resample whose BA is undefined (a class its validation cases lack, PROTOCOL section 6):
  such a resample is listed, and left out of the mean and the test, never counted as a number.
- Degenerate evidence: on more than half of the resamples A's or B's run collapsed (predicted one
  class for every validation image). A degenerate comparison never confirms, and the status
  carries the tag "degenerate evidence: N of R resamples collapsed".
- Fixed-split advantage(A > B) iff the mean BA of A over its fixed-split seeds exceeds B's. No
  interval or test is computed on the fixed split: three validation patients are too few.
- A status the present runs decide is decided (H4 is "not supported" from the fixed split alone
  without an advantage; H5 is "not supported" once H1 is not); "not evaluable" is only for what
  no present run can decide, never "supported".
- The rules are applied again at every student training length of the training-length stress
  test, each on its own runs; a status that differs between lengths depends on training length.
- What a confirmation would need is said in patients (paired and negative), never in more
  resamples of the same patients: from the power study when its result is given, else from an
  approximation that counts only disjoint validation sets as independent.
H5 is read strictly: plain-ct-kd's positive prediction rate must lie strictly between 0 and 1 on
every Monte Carlo resample both with the default sampler and with the class-balanced one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, permutation_test

from benchmark.evidence.results import (
    ALPHA,
    DEFAULT_ROPE,
    CandidateEvidence,
    EffectEstimate,
    Evidence,
    FixedSplitComparison,
    HypothesisResult,
    LengthEvidence,
    MonteCarloComparison,
    PairedCohort,
    PowerGrounding,
    RateCheck,
    ResampleDifference,
    Status,
)
from benchmark.evidence.statistics import companions, holm_adjusted
from benchmark.evidence.summary import runs_of
from benchmark.experiment.matrix import CANDIDATE_BLOCK, Declaration
from benchmark.experiment.store import RunRecord, StoreManifest

MONTE_CARLO = "paired-monte-carlo"
FIXED = "paired-fixed"
EXACT_LIMIT = 16  # resamples up to which every sign assignment is enumerated (2^16)


def sign_flip_p_value(differences: Sequence[float], seed: int = 0) -> tuple[float, str]:
    """One-sided p-value that the mean difference is > 0 under random sign flips; (p, test description)."""
    d = np.asarray(differences, dtype=float)
    exact = len(d) <= EXACT_LIMIT
    if exact and len(d) >= 2:
        pvalue = exact_sign_flip_p_value(d)
    else:  # scipy itself (which also refuses fewer than two differences)
        pvalue = float(permutation_test((d,), np.mean, permutation_type="samples", alternative="greater",
                                        n_resamples=np.inf if exact else 99_999, rng=np.random.default_rng(seed)
                                        ).pvalue)
    test = (f"exact one-sided paired sign-flip test over {len(d)} resamples ({2 ** len(d)} sign assignments)"
            if exact else f"one-sided paired sign-flip test over {len(d)} resamples (99,999 random assignments, "
            f"seed {seed})")
    return pvalue, test


def exact_sign_flip_p_value(differences: np.ndarray) -> float:
    """scipy.stats.permutation_test's exact one-sided sign-flip p-value (its tie tolerance, 100 eps relative),
    enumerated as one sign matrix instead of scipy's Python loop over 2^n assignments (0.1 s at n = 16, which
    a power study pays thousands of times); tests check it equals scipy's."""
    n = len(differences)
    bits = (np.arange(2**n)[:, None] >> np.arange(n - 1, -1, -1)[None, :]) & 1
    # column-major, so numpy sums each assignment's n values one after another, in scipy's order: the same bits
    # for every null value, and so the same count even where values meant to tie differ by rounding
    null = np.mean(np.asfortranarray(np.where(bits == 1, -differences, differences)), axis=1)
    observed = np.mean(differences)
    gamma = abs(np.finfo(float).eps * 100 * observed)
    return float(np.clip(np.count_nonzero(null >= observed - gamma) / 2**n, 0.0, 1.0))


def _by_split(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[run.val_hash].append(run)
    return grouped


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def _defined_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None (undefined) when none is defined, never a number made of None."""
    defined = [v for v in values if v is not None]
    return _mean(defined) if defined else None


def monte_carlo_comparison(records: Sequence[RunRecord], a: str, b: str, regime: str = MONTE_CARLO,
                           rope: float = DEFAULT_ROPE) -> MonteCarloComparison:
    """Paired per-resample differences of A and B, whether MC-confirmed(A > B) holds, and its companions."""
    runs_a, runs_b = _by_split(runs_of(records, a, regime)), _by_split(runs_of(records, b, regime))
    split_ids = {h: runs[0].spec.split.split_id for h, runs in (*runs_a.items(), *runs_b.items())}
    shared = [h for h in split_ids if h in runs_a and h in runs_b]
    missing = sorted(split_ids[h] for h in split_ids if h not in shared)
    resamples = []
    for h in sorted(shared, key=lambda h: (runs_a[h][0].spec.split.index, h)):
        ra, rb = runs_a[h], runs_b[h]
        a_collapsed, b_collapsed = any(r.metrics.collapsed for r in ra), any(r.metrics.collapsed for r in rb)
        a_ba = _defined_mean([r.metrics.balanced_accuracy for r in ra])
        b_ba = _defined_mean([r.metrics.balanced_accuracy for r in rb])
        a_f1, b_f1 = _mean([r.metrics.macro_f1 for r in ra]), _mean([r.metrics.macro_f1 for r in rb])
        resamples.append(ResampleDifference(
            split_id=split_ids[h], val_hash=h, a_balanced_accuracy=a_ba, b_balanced_accuracy=b_ba, a_macro_f1=a_f1,
            b_macro_f1=b_f1, d_balanced_accuracy=None if a_ba is None or b_ba is None else a_ba - b_ba,
            d_macro_f1=a_f1 - b_f1,
            a_run_ids=sorted(r.spec.run_id for r in ra), b_run_ids=sorted(r.spec.run_id for r in rb),
            a_collapsed=a_collapsed, b_collapsed=b_collapsed))
    if not resamples:
        return MonteCarloComparison(a=a, b=b, resamples=[], missing=missing, mean_d_balanced_accuracy=None,
                                    mean_d_macro_f1=None, p_value=None, test="no paired resamples", confirmed=False)
    d_ba = [r.d_balanced_accuracy for r in resamples if r.d_balanced_accuracy is not None]
    splits = [runs_a[r.val_hash][0].spec.split for r in resamples if r.d_balanced_accuracy is not None]
    undefined = [r.split_id for r in resamples if r.d_balanced_accuracy is None]
    mean_ba, mean_f1 = _defined_mean(d_ba), _mean([r.d_macro_f1 for r in resamples])
    p_value, test = (sign_flip_p_value(d_ba) if len(d_ba) >= 2 else  # scipy refuses one difference: no test
                     (None, f"{len(d_ba)} resample(s) with a defined BA difference: too few for a sign-flip test"))
    collapsed = sum(r.a_collapsed or r.b_collapsed for r in resamples)
    degenerate = 2 * collapsed > len(resamples)
    confirmed = (not missing and not undefined and not degenerate and mean_ba is not None and mean_ba > 0
                 and mean_f1 > 0 and p_value is not None and p_value <= ALPHA)
    return MonteCarloComparison(
        a=a, b=b, resamples=resamples, missing=missing, undefined=undefined, mean_d_balanced_accuracy=mean_ba,
        mean_d_macro_f1=mean_f1, p_value=p_value, test=test,
        a_collapsed=[r.split_id for r in resamples if r.a_collapsed],
        b_collapsed=[r.split_id for r in resamples if r.b_collapsed], collapsed_resamples=collapsed,
        degenerate=degenerate, confirmed=confirmed,
        companions=companions(d_ba, [len(s.train_patients) for s in splits], [len(s.val_patients) for s in splits],
                              rope))


def fixed_split_comparison(records: Sequence[RunRecord], a: str, b: str) -> FixedSplitComparison:
    """Mean BA over the fixed split's seeds for A and B, and whether A's exceeds B's."""
    runs_a, runs_b = runs_of(records, a, FIXED), runs_of(records, b, FIXED)
    mean_a = _defined_mean([r.metrics.balanced_accuracy for r in runs_a])  # None: no run, or BA undefined
    mean_b = _defined_mean([r.metrics.balanced_accuracy for r in runs_b])
    return FixedSplitComparison(
        a=a, b=b, a_mean_balanced_accuracy=mean_a, b_mean_balanced_accuracy=mean_b,
        a_seeds=sorted(r.spec.seed for r in runs_a), b_seeds=sorted(r.spec.seed for r in runs_b),
        a_run_ids=sorted(r.spec.run_id for r in runs_a), b_run_ids=sorted(r.spec.run_id for r in runs_b),
        advantage=mean_a is not None and mean_b is not None and mean_a > mean_b)


BOOTSTRAP_REPLICATES = 2000
Z_ONE_SIDED_ALPHA = float(norm.ppf(1 - ALPHA))
Z_POWER_80 = float(norm.ppf(0.80))


def patient_counts(runs: list[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Per validation patient: (is positive, [tp, fn, tn, fp] summed over the runs' images at threshold 0.5)."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4))
    positive: dict[str, int] = defaultdict(int)
    for run in runs:
        for p in run.predictions:
            predicted = p.score >= 0.5
            column = (0 if predicted else 1) if p.label == 1 else (3 if predicted else 2)
            counts[p.patient_id][column] += 1 / len(runs)
            positive[p.patient_id] = max(positive[p.patient_id], p.label)
    patients = sorted(counts)
    return np.array([positive[x] for x in patients], dtype=bool), np.array([counts[x] for x in patients])


def balanced_accuracy_of_totals(totals: np.ndarray) -> np.ndarray:
    """BA from [..., 4] count totals (tp, fn, tn, fp); NaN where a class has no case (undefined, never its other
    recall): callers pass only resamples whose validation cases hold both classes."""
    tp, fn, tn, fp = np.moveaxis(totals, -1, 0)
    sensitivity = np.divide(tp, tp + fn, out=np.full_like(tp, np.nan), where=(tp + fn) > 0)
    specificity = np.divide(tn, tn + fp, out=np.full_like(tn, np.nan), where=(tn + fp) > 0)
    return (sensitivity + specificity) / 2


def patient_bootstrap(records: Sequence[RunRecord], comparison: MonteCarloComparison,
                      replicates: int = BOOTSTRAP_REPLICATES, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean BA difference: resample the resamples, then patients within each
    (positives and negatives separately, so every validation set keeps its one negative)."""
    rng = np.random.default_rng(seed)
    differences = []
    for resample in comparison.resamples:
        if resample.d_balanced_accuracy is None:  # BA undefined on this resample: nothing to resample
            continue
        d = np.zeros(replicates)
        for sign, ids in ((1, resample.a_run_ids), (-1, resample.b_run_ids)):
            wanted = set(ids)
            positive, counts = patient_counts([r for r in records if r.spec.run_id in wanted])
            totals = np.zeros((replicates, 4))
            for group in (counts[positive], counts[~positive]):
                if len(group):
                    draws = rng.integers(0, len(group), size=(replicates, len(group)))
                    totals += group[draws].sum(axis=1)
            d += sign * balanced_accuracy_of_totals(totals)
        differences.append(d)
    matrix = np.array(differences)  # (resamples, replicates)
    chosen = rng.integers(0, len(matrix), size=(replicates, len(matrix)))
    means = matrix[chosen, np.arange(replicates)[:, None]].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def effect_estimate(records: Sequence[RunRecord], comparison: MonteCarloComparison, cohort: PairedCohort | None = None,
                    power: PowerGrounding | None = None) -> EffectEstimate | None:
    """Bootstrap interval of an MC effect and what a confirmation would need, in paired and negative patients.

    Resamples of one cohort share patients, so more of them cannot confirm anything: the approximation
    counts only disjoint validation sets (k patients, one negative each) as independent and asks how many
    of them 80% power at one-sided 5% needs at the observed mean and sd of the per-resample differences."""
    d = np.array([r.d_balanced_accuracy for r in comparison.resamples if r.d_balanced_accuracy is not None])
    if len(d) < 2:
        return None
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    low, high = patient_bootstrap(records, comparison)
    sets = patients = negatives = None
    if comparison.degenerate:
        needs = (f"no patient count follows from these runs: {comparison.degenerate_tag}, so the models did not "
                 "learn enough to compare (see the training-length statuses)")
    elif mean <= 0:
        needs = ("the observed mean difference is <= 0, so these runs give no basis for a patient count; more "
                 "resamples of the same patients cannot change that")
    else:
        # five is the fewest resamples with which the sign-flip test can reach p <= 0.05 (2^-5 < 0.05)
        sets = max(5, math.ceil(((Z_ONE_SIDED_ALPHA + Z_POWER_80) * sd / mean) ** 2) if sd > 0 else 5)
        if cohort is None:
            needs = f"about {sets} disjoint validation sets (approximation; cohort size unknown)"
        else:
            patients, negatives = sets * cohort.val_patients, sets * cohort.val_negatives
            needs = (f"about {patients} paired patients, {negatives} of them negative (approximation: only disjoint "
                     f"validation sets of k = {cohort.val_patients} ({cohort.val_negatives} negative) count as "
                     f"independent, and 80% power at one-sided "
                     f"5% at the observed mean {mean:.3f} and sd {sd:.3f} of the per-resample differences needs "
                     f"{sets} of them); this cohort has {cohort.paired_patients} paired patients, "
                     f"{cohort.negative_patients} negative; resamples of the same patients cannot stand in for more "
                     "patients")
    if power is not None:
        needs += f". Power study ({power.source}): {power.statement}"
    return EffectEstimate(
        mean_d_balanced_accuracy=mean, sd_d_balanced_accuracy=sd, bootstrap_low=low, bootstrap_high=high,
        level=0.95, replicates=BOOTSTRAP_REPLICATES,
        method="percentile interval over resamples resampled with replacement and, within each, validation patients "
               "resampled with replacement by class (seed 0)", disjoint_sets_needed=sets,
        paired_patients_needed=patients, negative_patients_needed=negatives, cohort=cohort, power=power, needs=needs)


@dataclass(frozen=True)
class Hypothesis:
    """A hypothesis of section 8: which configurations it compares and its rule in words."""

    key: str
    statement: str
    a: str | None
    b: str | None
    rule: str


MC_RULE = ("MC-confirmed(A > B): mean per-resample BA difference > 0, mean macro-F1 difference > 0, and the "
           f"exact one-sided paired sign-flip permutation test over resamples gives p <= {ALPHA}")
HYPOTHESES = (
    Hypothesis("H1", "cross-modal logit KD beats student-only", "plain-ct-kd", "student-only",
               f"supported iff {MC_RULE}; otherwise 'tentative (fixed split only)' if the mean fixed-split BA of A "
               "over its seeds exceeds B's, else 'not supported'"),
    Hypothesis("H2", "the gain is not reducible to same-modality KD", "plain-ct-kd", "same-modality-kd",
               f"supported iff {MC_RULE}; otherwise 'not supported'"),
    Hypothesis("H3", "the gain is not reducible to late fusion", "plain-ct-kd", "late-fusion",
               f"supported iff {MC_RULE}; otherwise 'not supported'"),
    Hypothesis("H4", "DPE/MHRA/DFPN improve on the plain control", "jdcnet", "plain-ct-kd",
               f"supported iff {MC_RULE} and the fixed-split mean BA of A exceeds B's; otherwise 'not supported'"),
    Hypothesis("H5", "the gain survives imbalance controls", "plain-ct-kd@balanced", "student-only@balanced",
               "supported iff H1 is supported, plain-ct-kd@balanced is MC-confirmed over student-only@balanced, "
               "and plain-ct-kd's positive prediction rate is strictly between 0 and 1 on every Monte Carlo "
               "resample (with the default and with the class-balanced sampler); otherwise 'not supported'"),
)


def _missing(records: Sequence[RunRecord], names: Sequence[str], regime: str) -> list[str]:
    """The names that have no run in `regime`."""
    return [n for n in names if not runs_of(records, n, regime)]


def _decide_h5(h: Hypothesis, records: Sequence[RunRecord], h1: HypothesisResult,
               mc: MonteCarloComparison | None) -> HypothesisResult:
    """H5 from whatever of its three conditions the present runs decide: one failing suffices."""
    assert h.a is not None and h.b is not None
    rates = [RateCheck(configuration=name, split_id=r.spec.split.split_id, run_id=r.spec.run_id,
                       positive_prediction_rate=r.metrics.positive_prediction_rate,
                       inside=0 < r.metrics.positive_prediction_rate < 1)
             for name in ("plain-ct-kd", h.a) for r in runs_of(records, name, MONTE_CARLO)]
    failures, unknown = [], []
    if h1.status == Status.NOT_EVALUABLE:
        unknown.append("H1 is not evaluable")
    elif h1.status != Status.SUPPORTED:
        failures.append(f"H1 is {h1.status.value}")
    if mc is None:
        unknown.append(f"no Monte Carlo runs of {', '.join(_missing(records, [h.a, h.b], MONTE_CARLO))}")
    elif not mc.confirmed:
        failures.append(f"{h.a} is not MC-confirmed over {h.b}"
                        + (f" ({mc.degenerate_tag})" if mc.degenerate else ""))
    outside = [c for c in rates if not c.inside]
    if outside:
        failures.append(f"positive prediction rate at 0 or 1 on {len(outside)} resample run(s)")
    elif _missing(records, ["plain-ct-kd", h.a], MONTE_CARLO):
        unknown.append("the positive prediction rate cannot be checked on every resample")
    status = Status.NOT_SUPPORTED if failures else Status.NOT_EVALUABLE if unknown else Status.SUPPORTED
    reason = "; ".join(failures or unknown) or "all three conditions hold"
    return HypothesisResult(hypothesis=h.key, statement=h.statement, a=h.a, b=h.b, rule=h.rule, status=status,
                            reason=reason, balanced_monte_carlo=mc, rate_checks=rates,
                            degenerate=mc.degenerate_tag if mc is not None else None)


Estimator = Callable[[Sequence[RunRecord], MonteCarloComparison], EffectEstimate | None]


def _decide(h: Hypothesis, records: Sequence[RunRecord], decided: dict[str, HypothesisResult],
            cohort: PairedCohort | None, power: PowerGrounding | None,
            estimator: Estimator | None = None, rope: float = DEFAULT_ROPE) -> HypothesisResult:
    """One hypothesis's status by its rule, decided as far as the present runs decide it."""
    assert h.a is not None and h.b is not None
    absent_mc = _missing(records, [h.a, h.b], MONTE_CARLO)
    mc = None if absent_mc else monte_carlo_comparison(records, h.a, h.b, rope=rope)
    if h.key == "H5":
        return _decide_h5(h, records, decided["H1"], mc)
    uses_fixed = h.key in ("H1", "H4")
    absent_fixed = _missing(records, [h.a, h.b], FIXED) if uses_fixed else []
    fixed = fixed_split_comparison(records, h.a, h.b) if uses_fixed and not absent_fixed else None
    if mc is None and (h.key != "H4" or fixed is None or fixed.advantage):
        status, reason = Status.NOT_EVALUABLE, f"no Monte Carlo runs of {', '.join(absent_mc)} in the store"
    elif h.key == "H4":
        if mc is not None and fixed is not None:
            supported = mc.confirmed and fixed.advantage
            status = Status.SUPPORTED if supported else Status.NOT_SUPPORTED
            reason = ("MC-confirmed and fixed-split advantage" if supported else
                      f"MC-confirmed: {mc.confirmed}; fixed-split advantage: {fixed.advantage}")
        elif mc is None:
            status = Status.NOT_SUPPORTED
            reason = (f"no fixed-split advantage, which decides it (no Monte Carlo runs of {', '.join(absent_mc)}, "
                      "which could not change that)")
        elif not mc.confirmed:
            status = Status.NOT_SUPPORTED
            reason = (f"not MC-confirmed, which decides it (no fixed-split runs of {', '.join(absent_fixed)}, "
                      "which could not change that)")
        else:
            status = Status.NOT_EVALUABLE
            reason = f"MC-confirmed, but no fixed-split runs of {', '.join(absent_fixed)} to check the advantage"
    elif mc is not None and mc.confirmed:
        status, reason = Status.SUPPORTED, "MC-confirmed"
    elif h.key == "H1" and fixed is None:
        status = Status.NOT_EVALUABLE
        reason = (f"not MC-confirmed; no fixed-split runs of {', '.join(absent_fixed)} to tell "
                  f"'{Status.TENTATIVE.value}' from '{Status.NOT_SUPPORTED.value}'")
    elif h.key == "H1" and fixed is not None and fixed.advantage:
        status, reason = Status.TENTATIVE, "not MC-confirmed; fixed-split advantage only"
    else:
        status, reason = Status.NOT_SUPPORTED, "not MC-confirmed" + (
            "; no fixed-split advantage" if h.key == "H1" else "")
    if mc is not None and not mc.confirmed and mc.missing:
        reason += f" (resamples missing a run: {', '.join(mc.missing)})"
    if mc is not None and not mc.confirmed and mc.undefined:
        reason += f" (resamples with an undefined BA: {', '.join(mc.undefined)})"
    tag = mc.degenerate_tag if mc is not None else None
    if tag is not None and status != Status.NOT_EVALUABLE:
        reason += f" ({tag})"
    if mc is None:
        estimate = None
    elif estimator is not None:
        estimate = estimator(records, mc)
    else:
        estimate = effect_estimate(records, mc, cohort, power if h.key in ("H1", "H2") else None)
    return HypothesisResult(hypothesis=h.key, statement=h.statement, a=h.a, b=h.b, rule=h.rule, status=status,
                            reason=reason, monte_carlo=mc, fixed_split=fixed, estimate=estimate, degenerate=tag)


CONTROLS = ("student-only", "same-modality-kd", "late-fusion", "plain-ct-kd")
_CONTROL_STATEMENTS = {
    "student-only": "it improves on the student trained without a teacher",
    "same-modality-kd": "its gain is not same-modality distillation",
    "late-fusion": "its gain is not reducible to late fusion",
    "plain-ct-kd": "it improves on plain CT logit KD",
}


def candidate_names(records: Sequence[RunRecord]) -> list[str]:
    """The candidate methods that have runs here: the names their candidates block declared, in declaration order."""
    return list(dict.fromkeys(d.name for r in records if r.spec.configuration.candidate
                              for d in r.spec.declarations if d.block == CANDIDATE_BLOCK))


def declared_candidates(manifest: StoreManifest) -> list[str]:
    """The candidate methods a store's profile declares, whether or not any of their runs succeeded: a candidate
    whose runs all failed is decided (not evaluable), never dropped."""
    return [name for block in manifest.profile.blocks if block.name == CANDIDATE_BLOCK
            for name in block.configurations]


def decide_candidates(records: Sequence[RunRecord], names: Sequence[str], cohort: PairedCohort | None = None,
                      estimator: Estimator | None = None, rope: float = DEFAULT_ROPE) -> list[CandidateEvidence]:
    """Every candidate of `names` against every control, each by the rule of H2/H3: supported iff MC-confirmed (not
    evaluable without its runs), and each candidate's headline over the family of `names` (`headlines`).
    `estimator` replaces the validation effect estimate (a test set's)."""
    result = []
    for name in names:
        comparisons = [_decide(Hypothesis(f"{name} vs {control}", _CONTROL_STATEMENTS[control], name, control,
                                          f"supported iff {MC_RULE}; otherwise 'not supported'"),
                               records, {}, cohort, None, estimator, rope) for control in CONTROLS if control != name]
        result.append(CandidateEvidence(name=name, comparisons=comparisons))
    return headlines(result)


def intersection_p_value(candidate: CandidateEvidence) -> float | None:
    """The intersection-union p of "beats every control": the largest control comparison's p; None when one of them
    has no p (no runs, or too few defined resamples)."""
    p_values = [c.monte_carlo.p_value if c.monte_carlo is not None else None for c in candidate.comparisons]
    return None if not p_values or any(p is None for p in p_values) else max(p for p in p_values if p is not None)


def headlines(candidates: list[CandidateEvidence]) -> list[CandidateEvidence]:
    """Each candidate's headline status: the intersection-union p, Holm-adjusted over the m candidates (one without a
    p counts as p = 1, so the family is never shrunk), supported iff every control comparison is MC-confirmed and
    the adjusted p <= alpha; not evaluable while a comparison is and none fails."""
    raw = [intersection_p_value(c) for c in candidates]
    adjusted = holm_adjusted([1.0 if p is None else p for p in raw])
    decided = []
    for candidate, p, p_adjusted in zip(candidates, raw, adjusted, strict=True):
        statuses = [c.status for c in candidate.comparisons]
        failing = [c.b for c in candidate.comparisons if c.status == Status.NOT_SUPPORTED]
        if failing:
            status, reason = Status.NOT_SUPPORTED, f"not MC-confirmed over {', '.join(map(str, failing))}"
        elif Status.NOT_EVALUABLE in statuses or p is None:
            status, reason = Status.NOT_EVALUABLE, "a control comparison is not evaluable"
        elif p_adjusted > ALPHA:
            status = Status.NOT_SUPPORTED
            reason = (f"every control comparison is MC-confirmed, but the Holm-adjusted p = {p_adjusted:.4g} over "
                      f"{len(candidates)} candidates exceeds {ALPHA} (raw p = {p:.4g})")
        else:
            status = Status.SUPPORTED
            reason = (f"every control comparison is MC-confirmed and the Holm-adjusted p = {p_adjusted:.4g} over "
                      f"{len(candidates)} candidate(s) is <= {ALPHA}")
        decided.append(candidate.model_copy(update={
            "status": status, "reason": reason, "p_value": p, "adjusted_p_value": p_adjusted,
            "family": len(candidates)}))
    return decided


def decide_all(records: Sequence[RunRecord], cohort: PairedCohort | None = None,
               power: PowerGrounding | None = None, estimator: Estimator | None = None,
               rope: float = DEFAULT_ROPE) -> list[HypothesisResult]:
    """H1-H5 on these runs, in order (H5 reads H1's status); `estimator` replaces the validation effect estimate."""
    decided: dict[str, HypothesisResult] = {}
    for hypothesis in HYPOTHESES:
        decided[hypothesis.key] = _decide(hypothesis, records, decided, cohort, power, estimator, rope)
    return list(decided.values())


TRAINING_LENGTH_BLOCK = "training-length"


def training_lengths(records: Sequence[RunRecord]) -> list[int]:
    """The student epochs of the training-length stress test's runs, ascending."""
    return sorted({r.spec.configuration.training.epochs for r in records
                   if TRAINING_LENGTH_BLOCK in r.spec.blocks})


def runs_at_length(records: Sequence[RunRecord], epochs: int) -> list[RunRecord]:
    """The training-length block's runs at `epochs` student epochs, under their base configuration names
    (`plain-ct-kd@epochs=20` is `plain-ct-kd` here), so the hypothesis rules apply to them unchanged."""
    view = []
    for run in records:
        names = [d.name for d in run.spec.declarations if d.block == TRAINING_LENGTH_BLOCK]
        if names and run.spec.configuration.training.epochs == epochs:
            base = Declaration(block=TRAINING_LENGTH_BLOCK, name=names[0].rsplit("@epochs=", 1)[0])
            view.append(run.model_copy(update={"spec": run.spec.model_copy(update={"declarations": (base,)})}))
    return view


@dataclass(frozen=True)
class Decided:
    """H1-H5 and every candidate decided on one set of runs: at the headline length and at every other."""

    hypotheses: list[HypothesisResult]
    candidates: list[CandidateEvidence]
    training_lengths: list[LengthEvidence]
    depends_on_training_length: list[str]


def decide_everything(records: Sequence[RunRecord], cohort: PairedCohort | None = None,
                      power: PowerGrounding | None = None, estimator: Estimator | None = None,
                      names: Sequence[str] | None = None, rope: float = DEFAULT_ROPE) -> Decided:
    """H1-H5 and the candidates (`names`, default: those of `records`) at the headline length and at every student
    training length of the training-length stress test, and which of them depend on training length."""
    headline = decide_all(records, cohort, power, estimator, rope)
    names = candidate_names(records) if names is None else names
    candidates = decide_candidates(records, names, cohort, estimator, rope)
    lengths = []
    for epochs in training_lengths(records):
        view = runs_at_length(records, epochs)
        lengths.append(LengthEvidence(epochs=epochs, hypotheses=decide_all(view, cohort, power, estimator, rope),
                                      candidates=decide_candidates(view, names, cohort, estimator, rope)))

    def at_lengths(key: str) -> set[Status]:
        return {h.status for length in lengths
                for h in [*length.hypotheses, *(c for cand in length.candidates for c in cand.comparisons)]
                if h.hypothesis == key}

    depends = [h.hypothesis for h in [*headline, *(c for cand in candidates for c in cand.comparisons)]
               if len(({h.status} | at_lengths(h.hypothesis)) - {Status.NOT_EVALUABLE}) > 1]
    return Decided(headline, candidates, lengths, depends)


def evaluate_hypotheses(records: Sequence[RunRecord], cohort: PairedCohort | None = None,
                        power: PowerGrounding | None = None, names: Sequence[str] | None = None,
                        rope: float = DEFAULT_ROPE) -> Evidence:
    """The status of H1-H5 on these runs (the headline, at the protocol's training length) and at every student
    training length of the training-length stress test, each with the numbers and the rule it was decided by.

    `cohort` and `power` let the effect estimates say in patients what a confirmation would need."""
    decided = decide_everything(records, cohort, power, names=names, rope=rope)
    return Evidence(runs=len(records), rope=rope, hypotheses=decided.hypotheses,
                    training_lengths=decided.training_lengths,
                    depends_on_training_length=decided.depends_on_training_length, candidates=decided.candidates,
                    degenerate_headline=[h.hypothesis for h in decided.hypotheses
                                         if h.degenerate and h.hypothesis != "H5"])


def cohort_size(manifest: StoreManifest) -> PairedCohort | None:
    """The paired cohort's size and the Monte Carlo k of a store."""
    paired = manifest.cohort.manifests.get("paired")  # type: ignore[call-overload]
    if paired is None:
        return None
    splits = manifest.settings.splits
    return PairedCohort(paired_patients=paired.patients, negative_patients=paired.negative_patients,
                        val_patients=splits.monte_carlo_val_patients, val_negatives=splits.validation_negatives)
