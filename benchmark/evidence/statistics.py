"""The numbers sections 8 and 14 are decided on or reported beside (PROTOCOL.md): paired differences, the sign-flip
test, patient-level bootstraps and effect estimates, the overlap-aware companions and Holm's adjustment.
Pure functions of runs and numbers; what they decide is `benchmark.evidence.rules`' business.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm, permutation_test
from scipy.stats import t as student_t

from benchmark.evidence.results import (
    ALPHA,
    BayesianCorrelatedTTest,
    Companions,
    CorrectedTTest,
    EffectEstimate,
    MonteCarloComparison,
    PairedCohort,
    PowerGrounding,
    ResampleDifference,
)
from benchmark.evidence.summary import runs_of
from benchmark.experiment.store import RunRecord

EXACT_LIMIT = 16  # resamples up to which every sign assignment is enumerated (2^16)
BOOTSTRAP_REPLICATES = 2000
Z_ONE_SIDED_ALPHA = float(norm.ppf(1 - ALPHA))
Z_POWER_80 = float(norm.ppf(0.80))


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
    """scipy.stats.permutation_test's exact one-sided sign-flip p-value, enumerated as one sign matrix."""
    # scipy loops over the 2^n assignments in Python (0.1 s at n = 16, which a power study pays thousands of times);
    # the tie tolerance is scipy's (100 eps relative), and tests check the p equals scipy's
    n = len(differences)
    bits = (np.arange(2**n)[:, None] >> np.arange(n - 1, -1, -1)[None, :]) & 1
    # column-major, so numpy sums each assignment's n values one after another, in scipy's order: the same bits
    # for every null value, and so the same count even where values meant to tie differ by rounding
    null = np.mean(np.asfortranarray(np.where(bits == 1, -differences, differences)), axis=1)
    observed = np.mean(differences)
    gamma = abs(np.finfo(float).eps * 100 * observed)
    return float(np.clip(np.count_nonzero(null >= observed - gamma) / 2**n, 0.0, 1.0))


def mean_of(values: Sequence[float]) -> float:
    """The mean of `values`, as a Python float."""
    return float(np.mean(values))


def defined_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None (undefined) when none is defined, never a number made of None."""
    defined = [v for v in values if v is not None]
    return mean_of(defined) if defined else None


def runs_by_resample(records: Sequence[RunRecord], name: str, regime: str) -> dict[str, list[RunRecord]]:
    """`name`'s runs in `regime` grouped by validation set (its hash): one resample's seeds together."""
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs_of(records, name, regime):
        grouped[run.val_hash].append(run)
    return grouped


def resample_difference(split_id: str, val_hash: str, runs_a: list[RunRecord],
                        runs_b: list[RunRecord]) -> ResampleDifference:
    """A's and B's paired BA and macro-F1 differences on one resample, each side its mean over its seeds."""
    a_ba = defined_mean([r.metrics.balanced_accuracy for r in runs_a])
    b_ba = defined_mean([r.metrics.balanced_accuracy for r in runs_b])
    a_f1, b_f1 = mean_of([r.metrics.macro_f1 for r in runs_a]), mean_of([r.metrics.macro_f1 for r in runs_b])
    return ResampleDifference(
        split_id=split_id, val_hash=val_hash, a_balanced_accuracy=a_ba, b_balanced_accuracy=b_ba,
        a_macro_f1=a_f1, b_macro_f1=b_f1, d_balanced_accuracy=None if a_ba is None or b_ba is None else a_ba - b_ba,
        d_macro_f1=a_f1 - b_f1,
        a_run_ids=sorted(r.spec.run_id for r in runs_a), b_run_ids=sorted(r.spec.run_id for r in runs_b),
        a_collapsed=any(r.metrics.collapsed for r in runs_a), b_collapsed=any(r.metrics.collapsed for r in runs_b))


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
    """BA from [..., 4] count totals (tp, fn, tn, fp); NaN where a class has no case (undefined)."""
    # never the other class's recall alone: callers pass only resamples whose validation cases hold both classes
    tp, fn, tn, fp = np.moveaxis(totals, -1, 0)
    sensitivity = np.divide(tp, tp + fn, out=np.full_like(tp, np.nan), where=(tp + fn) > 0)
    specificity = np.divide(tn, tn + fp, out=np.full_like(tn, np.nan), where=(tn + fp) > 0)
    return (sensitivity + specificity) / 2


def percentile_interval(matrix: np.ndarray, rng: np.random.Generator, replicates: int,
                        level: float) -> tuple[float, float]:
    """Percentile interval of the mean over resamples drawn with replacement from (resamples, replicates)."""
    chosen = rng.integers(0, len(matrix), size=(replicates, len(matrix)))
    means = matrix[chosen, np.arange(replicates)[:, None]].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def patient_bootstrap(records: Sequence[RunRecord], comparison: MonteCarloComparison,
                      replicates: int = BOOTSTRAP_REPLICATES, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean BA difference: resample the resamples, then patients within each."""
    # patients are drawn by class (positives and negatives separately), so every validation set keeps its negative
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
    return percentile_interval(np.array(differences), rng, replicates, level)


def effect_estimate(records: Sequence[RunRecord], comparison: MonteCarloComparison, cohort: PairedCohort | None = None,
                    power: PowerGrounding | None = None) -> EffectEstimate | None:
    """Bootstrap interval of an MC effect and what a confirmation would need, in paired and negative patients."""
    # Resamples of one cohort share patients, so more of them cannot confirm anything: the approximation counts only
    # disjoint validation sets (k patients, one negative each) as independent and asks how many of them 80% power at
    # one-sided 5% needs at the observed mean and sd of the per-resample differences.
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


def corrected_resampled_t_test(differences: Sequence[float], n_train: float, n_val: float) -> CorrectedTTest:
    """Nadeau and Bengio's (2003) corrected resampled t-test of mean difference > 0."""
    # the variance of the mean is inflated from 1/R to 1/R + n_val/n_train, because the training sets overlap
    d = np.asarray(differences, dtype=float)
    r = len(d)
    factor = 1 / r + n_val / n_train
    mean, variance = float(d.mean()), float(d.var(ddof=1))
    if variance > 0:
        statistic: float | None = mean / float(np.sqrt(factor * variance))
        p_value: float | None = float(student_t.sf(statistic, r - 1))
    else:  # every difference equal: no spread to scale by; the sign alone decides
        statistic = None
        p_value = 0.0 if mean > 0 else 1.0 if mean < 0 else None
    return CorrectedTTest(t_statistic=statistic, degrees_of_freedom=r - 1, variance_factor=factor, p_value=p_value)


def bayesian_correlated_t_test(differences: Sequence[float], n_train: float, n_val: float,
                               rope: float) -> BayesianCorrelatedTTest:
    """Benavoli et al.'s (2017) Bayesian correlated t-test: P(A better), P(equivalent), P(B better) around a ROPE."""
    # the posterior of the mean difference is Student t with R - 1 degrees of freedom, location the mean and scale
    # sd * sqrt(1/R + rho/(1 - rho)), rho = n_val/(n_val + n_train)
    d = np.asarray(differences, dtype=float)
    r = len(d)
    rho = n_val / (n_val + n_train)
    mean, variance = float(d.mean()), float(d.var(ddof=1))
    if variance > 0:
        posterior = student_t(r - 1, loc=mean, scale=float(np.sqrt(variance * (1 / r + rho / (1 - rho)))))
        b_better, not_a_better = float(posterior.cdf(-rope)), float(posterior.cdf(rope))
        a_better = 1.0 - not_a_better
    else:  # a point mass at the mean (baycomp's convention)
        a_better, b_better = float(mean > rope), float(mean < -rope)
    return BayesianCorrelatedTTest(correlation=rho, rope=rope, p_a_better=a_better,
                                   p_equivalent=max(0.0, 1.0 - a_better - b_better), p_b_better=b_better)


def companions(differences: Sequence[float], train_sizes: Sequence[int], val_sizes: Sequence[int],
               rope: float) -> Companions | None:
    """Both companions of one comparison at the resamples' mean patient counts; None with fewer than two differences."""
    if len(differences) < 2:
        return None
    n_train, n_val = float(np.mean(train_sizes)), float(np.mean(val_sizes))
    return Companions(resamples=len(differences), mean_train_patients=n_train, mean_val_patients=n_val,
                      corrected_t=corrected_resampled_t_test(differences, n_train, n_val),
                      bayesian=bayesian_correlated_t_test(differences, n_train, n_val, rope))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the given order (family-wise error at alpha)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
