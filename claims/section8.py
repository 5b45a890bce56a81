"""PROTOCOL.md section 8, written again for claim 6 from the protocol's text: it imports nothing from
`benchmark.evidence`, so the claim compares evidence.json and the report with rules that did not write them.

Read from the stored per-case predictions of each run (threshold 0.5):
- BA = (sensitivity + specificity) / 2, undefined when a class is absent; macro-F1 = mean of the two classes'
  F1 (an F1 with a zero denominator counts 0); collapsed = one class predicted for every case; PPR.
- MC-confirmed(A > B) over the Monte Carlo resamples, a configuration with several runs on a resample taking
  their mean: every resample that has either has both (none missing), every resample's BA difference defined,
  not degenerate (a collapsed run of A or B on more than half of the resamples), mean BA difference > 0, mean
  macro-F1 difference > 0, and the exact one-sided sign-flip p <= 0.05 over the defined differences (every one of
  the 2^n sign assignments, ties decided as scipy decides them; fewer than two differences: no test). With more
  than 16 resamples the stored p comes from random assignments and is not compared here.
- Fixed-split advantage(A > B): the mean BA over A's fixed-split runs exceeds B's (both defined).
- H1-H5 and each candidate against each control by the section 8 table, decided as far as the present runs
  decide them ("not evaluable" only for what no present run decides); H5 reads H1, the class-balanced comparison
  and plain-ct-kd's PPR strictly inside (0, 1) on every Monte Carlo run with either sampler.
- Again at every student training length of the training-length block (its runs renamed to their base name),
  and on every test set's scores (PROTOCOL.md section 13).
- Section 14, beside the rule: over a comparison's defined differences d (R of them, R >= 2) and its resamples'
  mean training and validation patient counts, the corrected resampled t-test (Nadeau and Bengio: t = mean(d) /
  sqrt((1/R + n_val/n_train) var(d)), R - 1 df, one-sided) and the Bayesian correlated t-test (Benavoli et al.
  2017: posterior t with R - 1 df, location mean(d), scale sqrt((1/R + rho/(1 - rho)) var(d)), rho = n_val/(n_val
  + n_train); P(mean > rope), P(|mean| <= rope), P(mean < -rope)). A candidate's headline "beats every control":
  p = the largest of its control comparisons' p, Holm-adjusted over the declared candidates (a missing p is 1);
  supported iff every control comparison is supported and the adjusted p <= 0.05.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05
ROPE = 0.05  # section 14's default region of practical equivalence, +-0.05 BA (a store may set another)
# the protocol's names written again here, not imported: these rules share nothing with the code they check
MONTE_CARLO, FIXED = "paired-monte-carlo", "paired-fixed"
LENGTH_BLOCK, CANDIDATE_BLOCK = "training-length", "candidates"
EXACT_UP_TO = 16
CONTROLS = ("student-only", "same-modality-kd", "late-fusion", "plain-ct-kd")
HYPOTHESES = {"H1": ("plain-ct-kd", "student-only"), "H2": ("plain-ct-kd", "same-modality-kd"),
              "H3": ("plain-ct-kd", "late-fusion"), "H4": ("jdcnet", "plain-ct-kd"),
              "H5": ("plain-ct-kd@balanced", "student-only@balanced")}
SUPPORTED, TENTATIVE = "supported", "tentative (fixed split only)"
NOT_SUPPORTED, NOT_EVALUABLE = "not supported", "not evaluable"


@dataclass(frozen=True)
class Run:
    """What the rules read of one run: its names, regime, resample and its numbers on the cases at hand."""

    names: tuple[str, ...]
    regime: str
    split: str
    index: int
    ba: float | None
    mf1: float
    collapsed: bool
    ppr: float
    sizes: tuple[int, int]  # training and validation patients of its split


def run_from(names: Sequence[str], regime: str, split: str, index: int, cases: Iterable[Any],
             sizes: tuple[int, int]) -> Run:
    """A run's numbers from its per-case predictions (objects with `label` and `score`)."""
    tp = fp = tn = fn = 0
    for case in cases:
        called = case.score >= 0.5
        if case.label == 1:
            tp, fn = tp + called, fn + (not called)
        else:
            fp, tn = fp + called, tn + (not called)
    total = tp + fp + tn + fn
    ba = (tp / (tp + fn) + tn / (tn + fp)) / 2 if tp + fn and tn + fp else None
    f1 = [2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0, 2 * tn / (2 * tn + fp + fn) if 2 * tn + fp + fn
          else 0.0]
    return Run(tuple(names), regime, split, index, ba, (f1[0] + f1[1]) / 2, tp + fp in (0, total), (tp + fp) / total,
               sizes)


@dataclass(frozen=True)
class Comparison:
    """MC-confirmed(A > B) with the numbers it was decided on."""

    resamples: int
    collapsed: int
    mean_ba: float | None
    mean_mf1: float | None
    p_value: float | None
    exact: bool
    confirmed: bool
    companions: tuple[float | None, float, float, float] | None = None  # corrected t p, P(A), P(rope), P(B)

    @property
    def tag(self) -> str | None:
        """The degenerate-evidence tag, when more than half of the resamples have a collapsed run."""
        if 2 * self.collapsed > self.resamples:
            return f"degenerate evidence: {self.collapsed} of {self.resamples} resamples collapsed"
        return None


def sign_flip(differences: Sequence[float]) -> float | None:
    """Exact one-sided p: the share of the 2^n sign assignments whose mean reaches the observed mean; None for fewer
    than two differences. Ties are decided as scipy.stats.permutation_test decides them (the protocol names no
    convention, and differences that tie in exact arithmetic can differ in their last bits): each assignment's values
    summed left to right, then divided by n, reach the observed mean (numpy's) within 100 machine epsilons of it."""
    if len(differences) < 2:
        return None
    d = np.asarray(differences, dtype=float)
    signs = 1.0 - 2.0 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    total = np.zeros(2 ** len(d))
    for j in range(len(d)):
        total = total + signs[:, j] * d[j]
    observed = float(np.mean(d))
    reached = total / len(d) >= observed - abs(np.finfo(float).eps * 100 * observed)
    return float(np.count_nonzero(reached) / 2 ** len(d))


def _mean(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def _named(runs: Sequence[Run], name: str, regime: str) -> list[Run]:
    return [r for r in runs if name in r.names and r.regime == regime]


def compare(runs: Sequence[Run], a: str, b: str, rope: float) -> Comparison | None:
    """MC-confirmed(A > B); None when A or B has no Monte Carlo run."""
    by_a, by_b = defaultdict(list), defaultdict(list)
    for r in _named(runs, a, MONTE_CARLO):
        by_a[r.split].append(r)
    for r in _named(runs, b, MONTE_CARLO):
        by_b[r.split].append(r)
    if not by_a or not by_b:
        return None
    shared = [s for s in by_a if s in by_b]
    missing = len(set(by_a) ^ set(by_b))
    d_ba, d_mf1, collapsed = [], [], 0
    for split in shared:
        ba_a, ba_b = _mean(r.ba for r in by_a[split]), _mean(r.ba for r in by_b[split])
        d_ba.append(None if ba_a is None or ba_b is None else ba_a - ba_b)
        d_mf1.append(_mean(r.mf1 for r in by_a[split]) - _mean(r.mf1 for r in by_b[split]))  # type: ignore[operator]
        collapsed += any(r.collapsed for r in by_a[split] + by_b[split])
    if not shared:
        return Comparison(0, 0, None, None, None, True, False)
    defined = [d for d in d_ba if d is not None]
    sizes = [by_a[split][0].sizes for split, d in zip(shared, d_ba, strict=True) if d is not None]
    mean_ba, mean_mf1 = _mean(defined), _mean(d_mf1)
    p = sign_flip(defined) if len(defined) <= EXACT_UP_TO else None
    confirmed = (not missing and len(defined) == len(shared) and 2 * collapsed <= len(shared)
                 and mean_ba is not None and mean_ba > 0 and mean_mf1 is not None and mean_mf1 > 0
                 and p is not None and p <= ALPHA)
    return Comparison(len(shared), collapsed, mean_ba, mean_mf1, p, len(defined) <= EXACT_UP_TO, confirmed,
                      overlap_companions(defined, sizes, rope))


def overlap_companions(d: Sequence[float], sizes: Sequence[tuple[int, int]], rope: float
                       ) -> tuple[float | None, float, float, float] | None:
    """(corrected resampled t p, P(A better beyond the ROPE), P(equivalent), P(B better)); None below two values."""
    r = len(d)
    if r < 2:
        return None
    n_train = sum(s[0] for s in sizes) / r
    n_val = sum(s[1] for s in sizes) / r
    mean = sum(d) / r
    spread = sum((x - mean) ** 2 for x in d) / (r - 1)
    if spread > 0:
        corrected_p: float | None = float(stats.t.cdf(-mean / math.sqrt((1 / r + n_val / n_train) * spread), r - 1))
        rho = n_val / (n_val + n_train)
        scale = math.sqrt(spread * (1 / r + rho / (1 - rho)))
        b_better = float(stats.t.cdf((-rope - mean) / scale, r - 1))
        a_better = float(stats.t.sf((rope - mean) / scale, r - 1))
    else:
        corrected_p = 0.0 if mean > 0 else 1.0 if mean < 0 else None
        a_better, b_better = float(mean > rope), float(mean < -rope)
    return corrected_p, a_better, max(0.0, 1.0 - a_better - b_better), b_better


def fixed_advantage(runs: Sequence[Run], a: str, b: str) -> bool | None:
    """Fixed-split advantage(A > B); None when A or B has no fixed-split run."""
    runs_a, runs_b = _named(runs, a, FIXED), _named(runs, b, FIXED)
    if not runs_a or not runs_b:
        return None
    mean_a, mean_b = _mean(r.ba for r in runs_a), _mean(r.ba for r in runs_b)
    return mean_a is not None and mean_b is not None and mean_a > mean_b


@dataclass(frozen=True)
class Verdict:
    """A comparison's status and the numbers a reader checks it by."""

    status: str
    comparison: Comparison | None
    p_values: tuple[float | None, float] | None = None  # a candidate's headline: raw and Holm-adjusted p


def _mc_rule(runs: Sequence[Run], a: str, b: str, rope: float) -> Verdict:
    """H2, H3 and every candidate comparison: supported iff MC-confirmed."""
    mc = compare(runs, a, b, rope)
    if mc is None:
        return Verdict(NOT_EVALUABLE, None)
    return Verdict(SUPPORTED if mc.confirmed else NOT_SUPPORTED, mc)


def decide(runs: Sequence[Run], candidates: Sequence[str], rope: float) -> dict[str, Verdict]:
    """Every hypothesis and candidate comparison the section 8 table defines, by key (H1..H5, `X vs control`), and
    each candidate's headline (`X beats every control`, section 14)."""
    verdicts: dict[str, Verdict] = {}
    a, b = HYPOTHESES["H1"]
    mc, fixed = compare(runs, a, b, rope), fixed_advantage(runs, a, b)
    if mc is None:
        h1 = NOT_EVALUABLE
    elif mc.confirmed:
        h1 = SUPPORTED
    elif fixed is None:
        h1 = NOT_EVALUABLE
    else:
        h1 = TENTATIVE if fixed else NOT_SUPPORTED
    verdicts["H1"] = Verdict(h1, mc)
    for key in ("H2", "H3"):
        verdicts[key] = _mc_rule(runs, *HYPOTHESES[key], rope)
    a, b = HYPOTHESES["H4"]
    mc, fixed = compare(runs, a, b, rope), fixed_advantage(runs, a, b)
    if mc is not None and fixed is not None:
        h4 = SUPPORTED if mc.confirmed and fixed else NOT_SUPPORTED
    elif mc is None:
        h4 = NOT_SUPPORTED if fixed is False else NOT_EVALUABLE
    else:
        h4 = NOT_SUPPORTED if not mc.confirmed else NOT_EVALUABLE
    verdicts["H4"] = Verdict(h4, mc)
    a, b = HYPOTHESES["H5"]
    balanced = compare(runs, a, b, rope)
    rates = [r.ppr for name in ("plain-ct-kd", a) for r in _named(runs, name, MONTE_CARLO)]
    failing = h1 not in (SUPPORTED, NOT_EVALUABLE) or (balanced is not None and not balanced.confirmed) or any(
        not 0 < rate < 1 for rate in rates)
    unknown = h1 == NOT_EVALUABLE or balanced is None or not _named(runs, "plain-ct-kd", MONTE_CARLO) or not _named(
        runs, a, MONTE_CARLO)
    verdicts["H5"] = Verdict(NOT_SUPPORTED if failing else NOT_EVALUABLE if unknown else SUPPORTED, balanced)
    for candidate in candidates:  # a declared candidate without runs is not evaluable, never left out
        for control in CONTROLS:
            if control != candidate:
                verdicts[f"{candidate} vs {control}"] = _mc_rule(runs, candidate, control, rope)
    verdicts.update(candidate_headlines(verdicts, candidates))
    return verdicts


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: the i-th smallest of m is max over the first i of (m - j) p_(j), capped
    at 1 (tied values share one, whichever comes first)."""
    ordered = sorted(p_values)
    m = len(ordered)
    running, stepped = 0.0, []
    for j, p in enumerate(ordered):
        running = max(running, min(1.0, (m - j) * p))
        stepped.append(running)
    return [stepped[ordered.index(p)] for p in p_values]


def candidate_headlines(verdicts: dict[str, Verdict], candidates: Sequence[str]) -> dict[str, Verdict]:
    """`X beats every control` for each candidate: the intersection-union p (the largest of its control comparisons'
    sign-flip p) Holm-adjusted over the candidates, supported iff every control comparison is and adjusted p <= 0.05;
    not evaluable while one is not evaluable and none is not supported."""
    raw: list[float | None] = []
    for candidate in candidates:
        parts = [verdicts[f"{candidate} vs {c}"] for c in CONTROLS if c != candidate]
        ps = [v.comparison.p_value if v.comparison is not None else None for v in parts]
        raw.append(None if any(p is None for p in ps) else max(p for p in ps if p is not None))
    adjusted = holm([1.0 if p is None else p for p in raw])
    headlines = {}
    for candidate, p, p_adjusted in zip(candidates, raw, adjusted, strict=True):
        statuses = [verdicts[f"{candidate} vs {c}"].status for c in CONTROLS if c != candidate]
        if NOT_SUPPORTED in statuses:
            status = NOT_SUPPORTED
        elif NOT_EVALUABLE in statuses or p is None:
            status = NOT_EVALUABLE
        else:
            status = SUPPORTED if p_adjusted <= ALPHA else NOT_SUPPORTED
        headlines[f"{candidate} beats every control"] = Verdict(status, None, (p, p_adjusted))
    return headlines


def at_lengths(records: Sequence[Any], scored: dict[str, list[Any]]) -> dict[int, list[Run]]:
    """The training-length block's runs of each student length, under their base names (`X@epochs=E` is X)."""
    lengths: dict[int, list[Run]] = defaultdict(list)
    for record in records:
        declared = [d.name for d in record.spec.declarations if d.block == LENGTH_BLOCK]
        if declared and record.spec.run_id in scored:
            base = declared[0].rsplit("@epochs=", 1)[0]
            lengths[record.spec.configuration.training.epochs].append(run_from(
                (base,), record.spec.regime, record.spec.split.val_hash, record.spec.split.index,
                scored[record.spec.run_id], _sizes(record)))
    return dict(sorted(lengths.items()))


def candidates_of(records: Sequence[Any]) -> list[str]:
    """The candidate methods: the names the candidates block declared, in declaration order."""
    return list(dict.fromkeys(d.name for r in records for d in r.spec.declarations if d.block == CANDIDATE_BLOCK))


Scope = tuple[str | None, int | None]  # (test set or None for validation, student epochs or None for the headline)


def _sizes(record: Any) -> tuple[int, int]:
    return len(record.spec.split.train_patients), len(record.spec.split.val_patients)


def all_verdicts(records: Sequence[Any], test_sets: Sequence[str],
                 declared: Sequence[str] = (), rope: float = ROPE) -> dict[Scope, dict[str, Verdict]]:
    """Every verdict of a store: on the validation cases and on each test set, headline and at every length; the
    candidates are those `declared` (the store's profile) and any with runs; `rope` is the store's setting."""
    candidates = list(dict.fromkeys([*declared, *candidates_of(records)]))
    result: dict[Scope, dict[str, Verdict]] = {}
    for test_set in [None, *test_sets]:
        scored = {r.spec.run_id: (r.predictions if test_set is None else r.tests[test_set].predictions)
                  for r in records if test_set is None or test_set in r.tests}
        runs = [run_from(r.spec.names, r.spec.regime, r.spec.split.val_hash, r.spec.split.index,
                         scored[r.spec.run_id], _sizes(r)) for r in records if r.spec.run_id in scored]
        result[(test_set, None)] = decide(runs, candidates, rope)
        for epochs, view in at_lengths(records, scored).items():
            result[(test_set, epochs)] = decide(view, candidates, rope)
    return result


def stated_verdicts(evidence: dict[str, Any]) -> dict[Scope, dict[str, dict[str, Any]]]:
    """What evidence.json states, by the same scopes and keys: each comparison's result as stored."""
    def comparisons(part: dict[str, Any]) -> dict[str, dict[str, Any]]:
        found = {h["hypothesis"]: h for h in [*part["hypotheses"],
                                              *(c for cand in part.get("candidates", []) for c in cand["comparisons"])]}
        found.update({f"{cand['name']} beats every control": cand for cand in part.get("candidates", [])})
        return found

    stated: dict[Scope, dict[str, dict[str, Any]]] = {}
    for test_set, part in [(None, evidence), *((t["test_set"], t) for t in evidence.get("test_sets", []))]:
        stated[(test_set, None)] = comparisons(part)
        for length in part.get("training_lengths", []):
            stated[(test_set, length["epochs"])] = comparisons(length)
    return stated


def disagreements(verdicts: dict[Scope, dict[str, Verdict]], stated: dict[Scope, dict[str, dict[str, Any]]]
                  ) -> list[str]:
    """Every place evidence.json differs from the rules: a comparison missing or extra, its status, p-value, mean
    differences, collapsed resamples or degenerate tag."""
    problems = []
    for scope in sorted(set(verdicts) | set(stated), key=lambda s: (s[0] or "", s[1] or 0)):
        where = f"{'validation' if scope[0] is None else scope[0]}" + (f" at {scope[1]} epochs" if scope[1] else "")
        mine, theirs = verdicts.get(scope, {}), stated.get(scope, {})
        if set(mine) != set(theirs):
            problems.append(f"{where}: comparisons {sorted(set(mine) ^ set(theirs))} only on one side")
        for key in sorted(set(mine) & set(theirs)):
            v, h = mine[key], theirs[key]
            mc = h.get("monte_carlo") or h.get("balanced_monte_carlo")
            if h["status"] != v.status:
                problems.append(f"{where}: {key} is {h['status']!r}, the rules give {v.status!r}")
            if v.p_values is not None:
                for field, mine_p in zip(("p_value", "adjusted_p_value"), v.p_values, strict=True):
                    if not _same(h.get(field), mine_p):
                        problems.append(f"{where}: {key} has {field} {h.get(field)}, the rules give {mine_p}")
            c = v.comparison
            if (mc is None) != (c is None):
                problems.append(f"{where}: {key} has {'no' if mc is None else 'a'} Monte Carlo comparison stored")
                continue
            if c is None:
                continue
            if h.get("degenerate") != c.tag:
                problems.append(f"{where}: {key} carries tag {h.get('degenerate')!r}, the rules give {c.tag!r}")
            if mc["collapsed_resamples"] != c.collapsed:
                problems.append(f"{where}: {key} counts {mc['collapsed_resamples']} collapsed resamples, the runs "
                                f"{c.collapsed}")
            if c.exact and mc["p_value"] != c.p_value:
                problems.append(f"{where}: {key} has p = {mc['p_value']}, the sign-flip enumeration {c.p_value}")
            for field, mine_value in (("mean_d_balanced_accuracy", c.mean_ba), ("mean_d_macro_f1", c.mean_mf1)):
                stored = mc[field]
                if (stored is None) != (mine_value is None) or (
                        stored is not None and not math.isclose(stored, mine_value, rel_tol=1e-9, abs_tol=1e-12)):
                    problems.append(f"{where}: {key} has {field} {stored}, the runs give {mine_value}")
            problems += [f"{where}: {key} {p}" for p in _companion_problems(mc.get("companions"), c.companions)]
    return problems


def _same(stored: float | None, mine: float | None) -> bool:
    return (stored is None) == (mine is None) and (
        stored is None or mine is None or math.isclose(stored, mine, rel_tol=1e-9, abs_tol=1e-9))


def _companion_problems(stored: dict[str, Any] | None, mine: tuple[float | None, float, float, float] | None
                        ) -> list[str]:
    """Where evidence.json's companions differ from the ones recomputed here."""
    if (stored is None) != (mine is None):
        return [f"has {'no' if stored is None else 'a'} companion stored, the rules give {mine}"]
    if stored is None or mine is None:
        return []
    given = (stored["corrected_t"]["p_value"], stored["bayesian"]["p_a_better"], stored["bayesian"]["p_equivalent"],
             stored["bayesian"]["p_b_better"])
    names = ("corrected t p", "P(A better)", "P(equivalent)", "P(B better)")
    return [f"has {name} {g}, the rules give {m}" for name, g, m in zip(names, given, mine, strict=True)
            if not _same(g, m)]
