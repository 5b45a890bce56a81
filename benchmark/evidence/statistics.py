"""Statistics beside section 8's rule (PROTOCOL.md section 14): overlap-aware companions and Holm's adjustment.

Monte Carlo resamples share most training patients, so their differences are correlated; the companions say
how much that weakens a comparison, and never decide one. Holm adjusts the candidates' headline p-values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import t as student_t

from benchmark.evidence.results import BayesianCorrelatedTTest, Companions, CorrectedTTest


def corrected_resampled_t_test(differences: Sequence[float], n_train: float, n_val: float) -> CorrectedTTest:
    """Nadeau and Bengio's (2003) corrected resampled t-test of mean difference > 0: the variance of the mean is
    inflated from 1/R to 1/R + n_val/n_train, because the resamples' training sets overlap."""
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
    """Benavoli et al.'s (2017) Bayesian correlated t-test: the posterior of the mean difference is Student t with
    R - 1 degrees of freedom, location the mean and scale sd * sqrt(1/R + rho/(1 - rho)), rho = n_val/(n_val +
    n_train); returned as the probabilities of A better beyond the ROPE, equivalent within it, B better beyond it."""
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
    """Both companions of one comparison from its defined per-resample differences and the resamples' training and
    validation patient counts (their means are used); None with fewer than two differences."""
    if len(differences) < 2:
        return None
    n_train, n_val = float(np.mean(train_sizes)), float(np.mean(val_sizes))
    return Companions(resamples=len(differences), mean_train_patients=n_train, mean_val_patients=n_val,
                      corrected_t=corrected_resampled_t_test(differences, n_train, n_val),
                      bayesian=bayesian_correlated_t_test(differences, n_train, n_val, rope))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the given order: the family-wise error stays at alpha when a
    family of m claims is judged by adjusted p <= alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
