"""Reference computations of the section 14 companions, transcribed (not imported) for parity tests.

- `sklearn_corrected_std` and `sklearn_corrected_ttest`: the Nadeau-Bengio corrected resampled t-test as written in
  scikit-learn's example "Statistical comparison of models using grid search"
  (examples/model_selection/plot_grid_search_stats.py, BSD-3-Clause, (c) the scikit-learn developers), which takes
  the right tail of |t|.
- `benavoli_correlated_bayesian_ttest`: the Bayesian correlated t-test of Benavoli, Corani, Demsar and Zaffalon
  (2017, JMLR 18(77)) as written in R in their tutorial repository BayesianTestsML/tutorial
  (R/correlatedBayesianTtest.R), transcribed line by line: pt() is scipy's t.cdf.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import t


def sklearn_corrected_std(differences: np.ndarray, n_train: float, n_test: float) -> float:
    """scikit-learn example: the Nadeau-Bengio corrected standard deviation of the differences."""
    kr = len(differences)
    corrected_var = np.var(differences, ddof=1) * (1 / kr + n_test / n_train)
    return float(np.sqrt(corrected_var))


def sklearn_corrected_ttest(differences: np.ndarray, df: int, n_train: float, n_test: float) -> tuple[float, float]:
    """scikit-learn example: (t statistic, right-tailed p of |t|)."""
    mean = np.mean(differences)
    std = sklearn_corrected_std(differences, n_train, n_test)
    t_stat = mean / std
    p_val = t.sf(np.abs(t_stat), df)
    return float(t_stat), float(p_val)


def benavoli_correlated_bayesian_ttest(diff_a_b: np.ndarray, rho: float, rope_min: float, rope_max: float
                                       ) -> dict[str, float]:
    """BayesianTestsML/tutorial's correlatedBayesianTtest: posterior probabilities left of, in and right of the ROPE."""
    if rope_max < rope_min:
        raise ValueError("rope_max should be larger than rope_min")
    delta = np.mean(diff_a_b)
    n = len(diff_a_b)
    df = n - 1
    sp = np.std(diff_a_b, ddof=1) * np.sqrt(1 / n + rho / (1 - rho))
    p_left = t.cdf((rope_min - delta) / sp, df)
    p_rope = t.cdf((rope_max - delta) / sp, df) - p_left
    return {"left": float(p_left), "rope": float(p_rope), "right": float(1 - p_left - p_rope)}
