"""Patient-level splits (PROTOCOL.md section 3): reference, paired fixed, Monte Carlo and exhaustive.

Each split is a pure function of the cohort and the seed, so any run's data can be rebuilt exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping

import numpy as np
from sklearn.model_selection import StratifiedKFold

from benchmark.config import SplitSettings
from benchmark.errors import SplitError
from benchmark.schemas import OPTIONAL_REGIMES, Manifest, Regime, RegimeName, Split, SplitRole

# Every split is drawn from the sorted patient ids with its own `numpy.random.Generator`, so it depends only on the
# cohort and the seed, never on global state, process or dict order.
# Choices where the protocol is silent (also stated in the report):
# - Stratified 80/20: each class sends floor(f * n_c + 1/2) of its n_c patients to validation, so a class with a
#   single patient stays in training (the all-ct cohort has one negative patient).
# - Paired fixed split: round(f * N) validation patients (at least 2), exactly one of them negative.
# - Monte Carlo: resample r draws one negative and k-1 positives with seed base + r; a draw that repeats an earlier
#   validation set is redrawn from the same generator, so the sets stay distinct and the whole sequence remains a
#   pure function of (cohort, R, k, base).
# - Exhaustive: every admissible validation set (one negative, k-1 positives) in lexicographic order, or, when there
#   are more than `max_sets`, a uniform sample of `max_sets` of them drawn without replacement with
#   `numpy.random.default_rng(exhaustive_seed)` and kept in lexicographic order. Split i of the regime is trained
#   (its teachers and its students) with seed `exhaustive_seed + i`, as Monte Carlo resample r is with base + r.
#   The regime records how many sets are admissible, whether it sampled and with which seed, so the report can say so.
# - K-fold (the seed authors' follow-up protocol): for each repeat seed, scikit-learn's StratifiedKFold (shuffled with
#   that seed) over the sorted paired patients, stratified by patient label; split index = repeat * k + fold, and the
#   split's seed (the repeat seed) trains its teachers and students. Each repeat's validation sets partition the
#   cohort. With fewer negative patients than folds, some folds hold no negative (BA is undefined there): the
#   regime's role says how many; a class with a single patient is refused (its fold would train without it).


def _by_class(labels: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(sorted positive patient ids, sorted negative patient ids)."""
    positives = sorted(pid for pid, label in labels.items() if label == 1)
    negatives = sorted(pid for pid, label in labels.items() if label == 0)
    return positives, negatives


def _make_split(manifest: Manifest, role: SplitRole, index: int, seed: int, val: set[str]) -> Split:
    patients = set(manifest.patient_labels())
    return Split(manifest=manifest.name, role=role, index=index, seed=seed,
                 train_patients=tuple(sorted(patients - val)), val_patients=tuple(sorted(val)))


def stratified_split(manifest: Manifest, val_fraction: float, seed: int) -> Split:
    """80/20-style patient-level split stratified by patient label (the reference splits)."""
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for group in _by_class(manifest.patient_labels()):
        n_val = math.floor(val_fraction * len(group) + 0.5)
        if n_val >= len(group) and len(group) > 1:
            n_val = len(group) - 1
        val.update(str(p) for p in rng.permutation(np.array(group, dtype=object))[:n_val])
    if not val or len(val) == len(manifest.patient_labels()):
        raise SplitError(f"{manifest.name}: {len(manifest.patient_labels())} patient(s) cannot be split "
                         f"{1 - val_fraction:.0%}/{val_fraction:.0%} with both sides non-empty")
    return _make_split(manifest, SplitRole.REFERENCE, 0, seed, val)


def _draw_negatives(rng: np.random.Generator, negatives: list[str], count: int) -> set[str]:
    """`count` distinct negative patients; for one, the single integer draw every earlier store used."""
    if count == 1:
        return {negatives[int(rng.integers(len(negatives)))]}
    return {negatives[int(i)] for i in rng.choice(len(negatives), size=count, replace=False)}


def _check_held_out(manifest: Manifest, what: str, k: int, held_negatives: int) -> tuple[list[str], list[str]]:
    """(positives, negatives) when `held_negatives` negatives and k - held_negatives positives can be held out
    with at least one patient of each class left to train on; SplitError saying what is missing otherwise."""
    positives, negatives = _by_class(manifest.patient_labels())
    if held_negatives >= k:
        raise SplitError(f"{manifest.name}: {what} of {k} patients with {held_negatives} negative leaves no positive")
    if len(negatives) < held_negatives + 1:
        raise SplitError(f"{manifest.name}: {what} needs >= {held_negatives + 1} negative patients ({held_negatives} "
                         f"held out, one to train on); the cohort has {len(negatives)}")
    if len(positives) < k - held_negatives + 1:
        raise SplitError(f"{manifest.name}: k = {k} holds out {k - held_negatives} positive patient(s) and needs one "
                         f"more to train on; the cohort has {len(positives)}")
    return positives, negatives


def fixed_paired_split(manifest: Manifest, val_fraction: float, seed: int, held_negatives: int = 1) -> Split:
    """The paired feasibility split: round(f * N) validation patients, exactly `held_negatives` of them negative."""
    positives, negatives = _by_class(manifest.patient_labels())
    n_val = max(held_negatives + 1, math.floor(val_fraction * (len(positives) + len(negatives)) + 0.5))
    positives, negatives = _check_held_out(manifest, "the fixed split", n_val, held_negatives)
    rng = np.random.default_rng(seed)
    val = _draw_negatives(rng, negatives, held_negatives)
    val |= {positives[int(i)] for i in rng.choice(len(positives), size=n_val - held_negatives, replace=False)}
    return _make_split(manifest, SplitRole.FIXED, 0, seed, val)


def admissible_set_count(manifest: Manifest, k: int, held_negatives: int = 1) -> int:
    """Number of validation sets with exactly `held_negatives` negative and k - held_negatives positive patients."""
    positives, negatives = _by_class(manifest.patient_labels())
    return math.comb(len(negatives), held_negatives) * math.comb(len(positives), k - held_negatives)


def monte_carlo_splits(manifest: Manifest, resamples: int, k: int, seed_base: int,
                       held_negatives: int = 1) -> list[Split]:
    """R distinct validation sets of k patients, exactly `held_negatives` negative; resample r uses seed base + r."""
    positives, negatives = _check_held_out(manifest, "a Monte Carlo validation set", k, held_negatives)
    available = admissible_set_count(manifest, k, held_negatives)
    if available < resamples:
        raise SplitError(f"{manifest.name}: only {available} distinct validation sets of k = {k} exist; "
                         f"{resamples} resamples were asked for")
    splits: list[Split] = []
    seen: set[frozenset[str]] = set()
    for r in range(resamples):
        rng = np.random.default_rng(seed_base + r)
        while True:
            held = _draw_negatives(rng, negatives, held_negatives)
            held |= {positives[int(i)] for i in rng.choice(len(positives), size=k - held_negatives, replace=False)}
            val = frozenset(held)
            if val not in seen:
                break
        seen.add(val)
        splits.append(_make_split(manifest, SplitRole.MONTE_CARLO, r, seed_base + r, set(val)))
    return splits


def _unrank_combination(rank: int, n: int, k: int) -> list[int]:
    """The `rank`-th k-subset of range(n) in lexicographic order (combinatorial number system)."""
    chosen: list[int] = []
    start = 0
    for remaining in range(k, 0, -1):
        for candidate in range(start, n):
            block = math.comb(n - candidate - 1, remaining - 1)
            if rank < block:
                chosen.append(candidate)
                start = candidate + 1
                break
            rank -= block
    return chosen


def exhaustive_splits(manifest: Manifest, k: int, max_sets: int, seed: int, held_negatives: int = 1) -> list[Split]:
    """Every admissible validation set, or a seeded uniform sample of `max_sets` when there are more.

    The sets come in lexicographic order (negative first, then positives); split i carries seed `seed + i`, the
    seed its teachers and students train with (one seed per split, like Monte Carlo). The sample is a pure
    function of (cohort, k, max_sets, seed)."""
    positives, negatives = _check_held_out(manifest, "an exhaustive validation set", k, held_negatives)
    per_negative = math.comb(len(positives), k - held_negatives)  # positive sets per set of negatives
    total = math.comb(len(negatives), held_negatives) * per_negative
    if total <= max_sets:
        ranks = list(range(total))
    else:
        if total >= 2**62:
            raise SplitError(f"{manifest.name}: {total} admissible validation sets are too many to sample from")
        ranks = sorted(int(x) for x in np.random.default_rng(seed).choice(total, size=max_sets, replace=False))
    splits = []
    for index, rank in enumerate(ranks):
        held_out = _unrank_combination(rank // per_negative, len(negatives), held_negatives)
        held = _unrank_combination(rank % per_negative, len(positives), k - held_negatives)
        val = {negatives[i] for i in held_out} | {positives[i] for i in held}
        splits.append(_make_split(manifest, SplitRole.EXHAUSTIVE, index, seed + index, val))
    return splits


def kfold_splits(manifest: Manifest, folds: int, seeds: Collection[int]) -> list[Split]:
    """Patient-level stratified k-fold splits, one repeat per seed: each repeat's validation sets partition the
    patients, and split repeat * k + fold carries the repeat's seed."""
    by_patient = manifest.patient_labels()
    positives, negatives = _by_class(by_patient)
    for word, group in (("positive", positives), ("negative", negatives)):
        if len(group) < 2:
            raise SplitError(f"{manifest.name}: {folds}-fold cross-validation needs >= 2 {word} patients (one held "
                             f"out, one to train on); the cohort has {len(group)}")
    if max(len(positives), len(negatives)) < folds:
        raise SplitError(f"{manifest.name}: {folds} stratified folds need >= {folds} patients of one class; the "
                         f"cohort has {len(positives)} positive and {len(negatives)} negative")
    patients = sorted(by_patient)
    labels = np.array([by_patient[p] for p in patients])
    splits = []
    for repeat, seed in enumerate(seeds):
        folding = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # fewer negatives than folds: said in the regime's role instead
            warnings.simplefilter("ignore", UserWarning)
            held_out = [held for _, held in folding.split(np.zeros(len(patients)), labels)]
        for fold, held in enumerate(held_out):
            splits.append(_make_split(manifest, SplitRole.KFOLD, repeat * folds + fold, seed,
                                      {patients[int(i)] for i in held}))
    return splits


def _kfold_role(splits: list[Split], manifest: Manifest, folds: int, seeds: Collection[int]) -> str:
    """The k-fold regime's role in words, with the folds that hold no negative patient (BA undefined there)."""
    labels = manifest.patient_labels()
    without = [s for s in splits if all(labels[p] == 1 for p in s.val_patients)]
    role = (f"the seed authors' follow-up protocol: patient-level stratified {folds}-fold cross-validation x "
            f"{len(seeds)} repeat(s) (seeds {', '.join(map(str, seeds))}), {len(splits)} fold-seed splits")
    if without:
        role += (f"; {len(without)} of them hold no negative patient (fewer negatives than folds), so BA is "
                 f"undefined there: {', '.join(s.split_id for s in without)}")
    return role


_RESAMPLED = (RegimeName.PAIRED_MONTE_CARLO, RegimeName.PAIRED_EXHAUSTIVE)


def default_regimes(manifests: Mapping[str, Manifest], settings: SplitSettings,
                    *, optional: Collection[RegimeName] = ()) -> tuple[list[Regime], dict[str, str]]:
    """The protocol's regimes for these manifests (with the `optional` ones asked for), and, per regime that cannot
    be drawn, why not."""
    s = settings
    k, n = s.monte_carlo_val_patients, s.validation_negatives
    each = "one negative each" if n == 1 else f"{n} negatives each"
    builders = [
        (RegimeName.REFERENCE_ALL_XRAY, "reference: all-X-ray cohort, 80/20 stratified", "all-xray", [s.reference_seed],
         lambda m: [stratified_split(m, s.val_fraction, s.reference_seed)]),
        (RegimeName.REFERENCE_ALL_CT, "data-availability reference: all-CT cohort, 80/20 stratified", "all-ct",
         [s.reference_seed], lambda m: [stratified_split(m, s.val_fraction, s.reference_seed)]),
        (RegimeName.PAIRED_FIXED, "feasibility screen: one paired 80/20 split, "
         f"{'one negative' if n == 1 else f'{n} negatives'} held out, {len(s.training_seeds)} training seeds",
         "paired", list(s.training_seeds),
         lambda m: [fixed_paired_split(m, s.val_fraction, s.fixed_seed, n)]),
        (RegimeName.PAIRED_MONTE_CARLO,
         f"primary same-case evidence: {s.monte_carlo_resamples} paired resamples of k = {k}, {each}", "paired", None,
         lambda m: monte_carlo_splits(m, s.monte_carlo_resamples, k, s.monte_carlo_seed_base, n)),
    ]
    unknown = set(optional) - OPTIONAL_REGIMES
    if unknown:
        raise ValueError(f"not an optional regime: {sorted(unknown)}")
    if RegimeName.PAIRED_EXHAUSTIVE in optional:
        builders.append((
            RegimeName.PAIRED_EXHAUSTIVE, "", "paired", None,  # role written once the sample is known
            lambda m: exhaustive_splits(m, k, s.exhaustive_max_sets, s.exhaustive_seed, n)))
    if RegimeName.PAIRED_KFOLD in optional:
        builders.append((RegimeName.PAIRED_KFOLD, "", "paired", None,  # role written once the folds are known
                         lambda m: kfold_splits(m, s.kfold_folds, s.kfold_seeds)))
    regimes: list[Regime] = []
    errors: dict[str, str] = {}
    for name, role, manifest_name, seeds, build in builders:
        manifest = manifests[manifest_name]
        try:
            splits = build(manifest)
        except SplitError as exc:
            errors[name] = str(exc)
            continue
        admissible = admissible_set_count(manifest, k, n) if name in _RESAMPLED else None
        sample_seed: int | None = None
        if name == RegimeName.PAIRED_EXHAUSTIVE:
            assert admissible is not None
            sample_seed = s.exhaustive_seed if admissible > len(splits) else None
            role = _exhaustive_role(len(splits), admissible, k, sample_seed, each)
        if name == RegimeName.PAIRED_KFOLD:
            role = _kfold_role(splits, manifest, s.kfold_folds, s.kfold_seeds)
        regimes.append(Regime(name=name, role=role, manifest=manifest.name, splits=splits,
                              training_seeds=seeds, admissible_sets=admissible, sampled=sample_seed is not None,
                              sample_seed=sample_seed))
    return regimes, errors


def _exhaustive_role(count: int, admissible: int, k: int, sample_seed: int | None, each: str) -> str:
    """The exhaustive regime's role in words: all admissible sets, or which sample of them."""
    if sample_seed is None:
        return f"every admissible paired validation set: all {admissible} of k = {k}, {each}"
    return (f"a seeded uniform sample of {count} of the {admissible} admissible paired validation sets of k = {k}, "
            f"{each} (sample seed {sample_seed})")
