"""Hypothesis rules (PROTOCOL.md section 8): each status returned with the numbers and the rule it used.

For configurations A and B on the Monte Carlo resamples, d_r = BA_r(A) - BA_r(B) (a configuration
run with several seeds on one resample contributes its mean over seeds):
- MC-confirmed(A > B) iff mean d_r > 0, the mean macro-F1 difference > 0, and the exact one-sided
  paired sign-flip permutation test over resamples gives p <= 0.05 (scipy.stats.permutation_test,
  all 2^R sign assignments; with more than 2^16 of them, 99,999 seeded random assignments, stated
  in the result). A comparison with a resample missing on either side is not confirmed.
- Fixed-split advantage(A > B) iff the mean BA of A over its fixed-split seeds exceeds B's. No
  interval or test is computed on the fixed split: three validation patients are too few.
- A hypothesis whose runs are absent from the store is "not evaluable", never "supported".
H5 is read strictly: plain-ct-kd's positive prediction rate must lie strictly between 0 and 1 on
every Monte Carlo resample both with the default sampler and with the class-balanced one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import norm, permutation_test

from benchmark.store import RunRecord, StoreManifest
from benchmark.summary import runs_of

ALPHA = 0.05
MONTE_CARLO = "paired-monte-carlo"
FIXED = "paired-fixed"
EXACT_LIMIT = 16  # resamples up to which every sign assignment is enumerated (2^16)


class Status(StrEnum):
    """The statuses a hypothesis can take."""

    SUPPORTED = "supported"
    TENTATIVE = "tentative (fixed split only)"
    NOT_SUPPORTED = "not supported"
    NOT_EVALUABLE = "not evaluable"


class ResampleDifference(BaseModel):
    """One Monte Carlo resample's paired difference between A and B, and the runs it comes from."""

    split_id: str
    val_hash: str
    a_balanced_accuracy: float
    b_balanced_accuracy: float
    a_macro_f1: float
    b_macro_f1: float
    d_balanced_accuracy: float
    d_macro_f1: float
    a_run_ids: list[str]
    b_run_ids: list[str]


class MonteCarloComparison(BaseModel):
    """MC-confirmed(A > B) with every number it was decided on."""

    a: str
    b: str
    resamples: list[ResampleDifference]
    missing: list[str] = Field(default_factory=list, description="resamples lacking a run of A or B")
    mean_d_balanced_accuracy: float | None
    mean_d_macro_f1: float | None
    p_value: float | None
    test: str
    confirmed: bool


class FixedSplitComparison(BaseModel):
    """Fixed-split advantage(A > B): means over seeds only (no interval, no test)."""

    a: str
    b: str
    a_mean_balanced_accuracy: float | None
    b_mean_balanced_accuracy: float | None
    a_seeds: list[int]
    b_seeds: list[int]
    a_run_ids: list[str]
    b_run_ids: list[str]
    advantage: bool


class RateCheck(BaseModel):
    """A run's positive prediction rate, checked strictly inside (0, 1)."""

    configuration: str
    split_id: str
    run_id: str
    positive_prediction_rate: float
    inside: bool


class EffectEstimate(BaseModel):
    """How large an MC effect is (patient-level bootstrap) and what a confirmation would need."""

    mean_d_balanced_accuracy: float
    sd_d_balanced_accuracy: float | None
    bootstrap_low: float
    bootstrap_high: float
    level: float
    replicates: int
    method: str
    resamples_needed: int | None
    resamples_available: int | None = Field(default=None, description="admissible validation sets of the cohort")
    needs: str


class HypothesisResult(BaseModel):
    """One hypothesis: its rule, status, why, and the comparisons that decided it."""

    hypothesis: str
    statement: str
    a: str | None
    b: str | None
    rule: str
    status: Status
    reason: str
    monte_carlo: MonteCarloComparison | None = None
    fixed_split: FixedSplitComparison | None = None
    balanced_monte_carlo: MonteCarloComparison | None = None
    rate_checks: list[RateCheck] = Field(default_factory=list)
    estimate: EffectEstimate | None = Field(default=None, description="H1-H4: bootstrap interval and needs")


class Evidence(BaseModel):
    """Every hypothesis status of one results store."""

    alpha: float = ALPHA
    runs: int
    hypotheses: list[HypothesisResult]


def sign_flip_p_value(differences: Sequence[float], seed: int = 0) -> tuple[float, str]:
    """One-sided p-value that the mean difference is > 0 under random sign flips; (p, test description)."""
    d = np.asarray(differences, dtype=float)
    exact = len(d) <= EXACT_LIMIT
    result = permutation_test((d,), np.mean, permutation_type="samples", alternative="greater",
                              n_resamples=np.inf if exact else 99_999, rng=np.random.default_rng(seed))
    test = (f"exact one-sided paired sign-flip test over {len(d)} resamples ({2 ** len(d)} sign assignments)"
            if exact else f"one-sided paired sign-flip test over {len(d)} resamples (99,999 random assignments, "
            f"seed {seed})")
    return float(result.pvalue), test


def _by_split(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[run.val_hash].append(run)
    return grouped


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def monte_carlo_comparison(records: Sequence[RunRecord], a: str, b: str, regime: str = MONTE_CARLO
                           ) -> MonteCarloComparison:
    """Paired per-resample differences of A and B and whether MC-confirmed(A > B) holds."""
    runs_a, runs_b = _by_split(runs_of(records, a, regime)), _by_split(runs_of(records, b, regime))
    split_ids = {h: runs[0].spec.split.split_id for h, runs in (*runs_a.items(), *runs_b.items())}
    shared = [h for h in split_ids if h in runs_a and h in runs_b]
    missing = sorted(split_ids[h] for h in split_ids if h not in shared)
    resamples = []
    for h in sorted(shared, key=lambda h: (runs_a[h][0].spec.split.index, h)):
        ra, rb = runs_a[h], runs_b[h]
        a_ba, b_ba = _mean([r.metrics.balanced_accuracy for r in ra]), _mean([r.metrics.balanced_accuracy for r in rb])
        a_f1, b_f1 = _mean([r.metrics.macro_f1 for r in ra]), _mean([r.metrics.macro_f1 for r in rb])
        resamples.append(ResampleDifference(
            split_id=split_ids[h], val_hash=h, a_balanced_accuracy=a_ba, b_balanced_accuracy=b_ba, a_macro_f1=a_f1,
            b_macro_f1=b_f1, d_balanced_accuracy=a_ba - b_ba, d_macro_f1=a_f1 - b_f1,
            a_run_ids=sorted(r.spec.run_id for r in ra), b_run_ids=sorted(r.spec.run_id for r in rb)))
    if not resamples:
        return MonteCarloComparison(a=a, b=b, resamples=[], missing=missing, mean_d_balanced_accuracy=None,
                                    mean_d_macro_f1=None, p_value=None, test="no paired resamples", confirmed=False)
    d_ba = [r.d_balanced_accuracy for r in resamples]
    mean_ba, mean_f1 = _mean(d_ba), _mean([r.d_macro_f1 for r in resamples])
    p_value, test = sign_flip_p_value(d_ba)
    confirmed = not missing and mean_ba > 0 and mean_f1 > 0 and p_value <= ALPHA
    return MonteCarloComparison(a=a, b=b, resamples=resamples, missing=missing, mean_d_balanced_accuracy=mean_ba,
                                mean_d_macro_f1=mean_f1, p_value=p_value, test=test, confirmed=confirmed)


def fixed_split_comparison(records: Sequence[RunRecord], a: str, b: str) -> FixedSplitComparison:
    """Mean BA over the fixed split's seeds for A and B, and whether A's exceeds B's."""
    runs_a, runs_b = runs_of(records, a, FIXED), runs_of(records, b, FIXED)
    mean_a = _mean([r.metrics.balanced_accuracy for r in runs_a]) if runs_a else None
    mean_b = _mean([r.metrics.balanced_accuracy for r in runs_b]) if runs_b else None
    return FixedSplitComparison(
        a=a, b=b, a_mean_balanced_accuracy=mean_a, b_mean_balanced_accuracy=mean_b,
        a_seeds=sorted(r.spec.seed for r in runs_a), b_seeds=sorted(r.spec.seed for r in runs_b),
        a_run_ids=sorted(r.spec.run_id for r in runs_a), b_run_ids=sorted(r.spec.run_id for r in runs_b),
        advantage=mean_a is not None and mean_b is not None and mean_a > mean_b)


BOOTSTRAP_REPLICATES = 2000
Z_ONE_SIDED_ALPHA = float(norm.ppf(1 - ALPHA))
Z_POWER_80 = float(norm.ppf(0.80))


def _patient_counts(runs: list[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
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


def _balanced_accuracy(totals: np.ndarray) -> np.ndarray:
    """BA from [..., 4] count totals (tp, fn, tn, fp); a class without cases contributes nothing."""
    tp, fn, tn, fp = np.moveaxis(totals, -1, 0)
    sensitivity = np.divide(tp, tp + fn, out=np.full_like(tp, np.nan), where=(tp + fn) > 0)
    specificity = np.divide(tn, tn + fp, out=np.full_like(tn, np.nan), where=(tn + fp) > 0)
    return np.nanmean(np.stack([sensitivity, specificity]), axis=0)


def patient_bootstrap(records: Sequence[RunRecord], comparison: MonteCarloComparison,
                      replicates: int = BOOTSTRAP_REPLICATES, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean BA difference: resample the resamples, then patients within each
    (positives and negatives separately, so every validation set keeps its one negative)."""
    rng = np.random.default_rng(seed)
    differences = []
    for resample in comparison.resamples:
        d = np.zeros(replicates)
        for sign, ids in ((1, resample.a_run_ids), (-1, resample.b_run_ids)):
            wanted = set(ids)
            positive, counts = _patient_counts([r for r in records if r.spec.run_id in wanted])
            totals = np.zeros((replicates, 4))
            for group in (counts[positive], counts[~positive]):
                if len(group):
                    draws = rng.integers(0, len(group), size=(replicates, len(group)))
                    totals += group[draws].sum(axis=1)
            d += sign * _balanced_accuracy(totals)
        differences.append(d)
    matrix = np.array(differences)  # (resamples, replicates)
    chosen = rng.integers(0, len(matrix), size=(replicates, len(matrix)))
    means = matrix[chosen, np.arange(replicates)[:, None]].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def effect_estimate(records: Sequence[RunRecord], comparison: MonteCarloComparison,
                    admissible: int | None) -> EffectEstimate | None:
    """Bootstrap interval of an MC effect and the resamples a confirmation would need (80% power, one-sided 5%)."""
    d = np.array([r.d_balanced_accuracy for r in comparison.resamples])
    if len(d) < 2:
        return None
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    low, high = patient_bootstrap(records, comparison)
    if mean <= 0:
        needed, needs = None, "the observed mean difference is <= 0: no number of resamples is expected to confirm it"
    elif sd == 0:
        needed = 5
        needs = "every resample agrees; 5 resamples are the fewest with which the sign-flip test can reach p <= 0.05"
    else:
        needed = max(5, math.ceil(((Z_ONE_SIDED_ALPHA + Z_POWER_80) * sd / mean) ** 2))
        needs = (f"about {needed} resamples for 80% power at the observed mean {mean:.3f} and sd {sd:.3f} "
                 "(normal approximation)")
        if admissible is not None and needed > admissible:
            needs += f"; the cohort has only {admissible} distinct validation sets: more patients are needed"
    return EffectEstimate(
        mean_d_balanced_accuracy=mean, sd_d_balanced_accuracy=sd, bootstrap_low=low, bootstrap_high=high,
        level=0.95, replicates=BOOTSTRAP_REPLICATES,
        method="percentile interval over resamples resampled with replacement and, within each, validation patients "
               "resampled with replacement by class (seed 0)", resamples_needed=needed, resamples_available=admissible,
        needs=needs)


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


def _absent(records: Sequence[RunRecord], names: Sequence[str]) -> list[str]:
    return [n for n in names if not runs_of(records, n, MONTE_CARLO)]


def _decide(h: Hypothesis, records: Sequence[RunRecord], decided: dict[str, HypothesisResult],
            admissible: int | None) -> HypothesisResult:
    base = {"hypothesis": h.key, "statement": h.statement, "a": h.a, "b": h.b, "rule": h.rule}
    needed = [h.a, h.b] + (["plain-ct-kd", "student-only"] if h.key == "H5" else [])
    absent = _absent(records, [n for n in needed if n])
    if absent:
        return HypothesisResult(**base, status=Status.NOT_EVALUABLE,
                                reason=f"no Monte Carlo runs of {', '.join(absent)} in the store")
    assert h.a is not None and h.b is not None
    mc = monte_carlo_comparison(records, h.a, h.b)
    if h.key == "H5":
        h1 = decided["H1"]
        rates = [RateCheck(configuration=name, split_id=r.spec.split.split_id, run_id=r.spec.run_id,
                           positive_prediction_rate=r.metrics.positive_prediction_rate,
                           inside=0 < r.metrics.positive_prediction_rate < 1)
                 for name in ("plain-ct-kd", "plain-ct-kd@balanced") for r in runs_of(records, name, MONTE_CARLO)]
        failures = [f"H1 is {h1.status.value}"] if h1.status != Status.SUPPORTED else []
        if not mc.confirmed:
            failures.append("plain-ct-kd@balanced is not MC-confirmed over student-only@balanced")
        outside = [c for c in rates if not c.inside]
        if outside:
            failures.append(f"positive prediction rate at 0 or 1 on {len(outside)} resample run(s)")
        status = Status.NOT_SUPPORTED if failures else Status.SUPPORTED
        return HypothesisResult(**base, status=status, reason="; ".join(failures) or "all three conditions hold",
                                balanced_monte_carlo=mc, rate_checks=rates)
    fixed = fixed_split_comparison(records, h.a, h.b) if h.key in ("H1", "H4") else None
    if h.key == "H4":
        supported = mc.confirmed and fixed is not None and fixed.advantage
        reason = ("MC-confirmed and fixed-split advantage" if supported else
                  f"MC-confirmed: {mc.confirmed}; fixed-split advantage: {bool(fixed and fixed.advantage)}")
        status = Status.SUPPORTED if supported else Status.NOT_SUPPORTED
    elif mc.confirmed:
        status, reason = Status.SUPPORTED, "MC-confirmed"
    elif h.key == "H1" and fixed is not None and fixed.advantage:
        status, reason = Status.TENTATIVE, "not MC-confirmed; fixed-split advantage only"
    else:
        status, reason = Status.NOT_SUPPORTED, "not MC-confirmed" + (
            "; no fixed-split advantage" if h.key == "H1" else "")
    if not mc.confirmed and mc.missing:
        reason += f" (resamples missing a run: {', '.join(mc.missing)})"
    return HypothesisResult(**base, status=status, reason=reason, monte_carlo=mc, fixed_split=fixed,
                            estimate=effect_estimate(records, mc, admissible))


def evaluate_hypotheses(records: Sequence[RunRecord], admissible: int | None = None) -> Evidence:
    """The status of H1-H5 on these runs, each with the numbers and the rule it was decided by.

    `admissible`: the number of distinct Monte Carlo validation sets of the cohort, to say whether
    the resamples a confirmation would need exist."""
    decided: dict[str, HypothesisResult] = {}
    for hypothesis in HYPOTHESES:
        decided[hypothesis.key] = _decide(hypothesis, records, decided, admissible)
    return Evidence(runs=len(records), hypotheses=list(decided.values()))


def store_evidence(manifest: StoreManifest, records: Sequence[RunRecord]) -> Evidence:
    """The evidence of a store's runs, with the cohort's number of admissible Monte Carlo validation sets."""
    admissible = next((r.admissible_sets for r in manifest.regimes if r.name == MONTE_CARLO), None)
    return evaluate_hypotheses(records, admissible)
