"""The paired k-fold regime: stratified patient-level folds, one repeat per seed (the seed authors' protocol)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmark.config import SplitSettings
from benchmark.data.splits import default_regimes, kfold_splits
from benchmark.errors import SplitError
from benchmark.schemas import Manifest, RegimeName, SplitRole
from tests.test_splits import cohort, cohorts

seed_lists = st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=3, unique=True)


def _by_repeat(splits, folds: int) -> dict[int, list]:
    repeats: dict[int, list] = {}
    for split in splits:
        repeats.setdefault(split.index // folds, []).append(split)
    return repeats


@given(manifest=cohorts, folds=st.integers(2, 5), seeds=seed_lists)
def test_each_repeat_partitions_the_patients_with_no_patient_in_train_and_val(manifest: Manifest, folds: int,
                                                                             seeds: list[int]) -> None:
    patients = set(manifest.patient_labels())
    repeats = _by_repeat(kfold_splits(manifest, folds, seeds), folds)
    assert sorted(repeats) == list(range(len(seeds)))
    for splits in repeats.values():
        assert len(splits) == folds
        held = [set(s.val_patients) for s in splits]
        assert sum(map(len, held)) == len(patients) and set().union(*held) == patients
        for split in splits:
            assert not set(split.train_patients) & set(split.val_patients)
            assert set(split.train_patients) | set(split.val_patients) == patients


@given(manifest=cohorts, folds=st.integers(2, 5), seeds=seed_lists)
def test_every_fold_holds_floor_or_ceil_of_each_class_share(manifest: Manifest, folds: int, seeds: list[int]) -> None:
    labels = manifest.patient_labels()
    totals = {c: sum(1 for v in labels.values() if v == c) for c in (0, 1)}
    for split in kfold_splits(manifest, folds, seeds):
        for c, total in totals.items():
            count = sum(1 for p in split.val_patients if labels[p] == c)
            assert total // folds <= count <= -(-total // folds)


@given(manifest=cohorts, folds=st.integers(2, 5), seeds=seed_lists)
def test_the_folds_are_a_pure_function_of_cohort_k_and_seeds(manifest: Manifest, folds: int,
                                                             seeds: list[int]) -> None:
    assert kfold_splits(manifest, folds, seeds) == kfold_splits(manifest, folds, list(seeds))


def test_split_index_is_repeat_times_k_plus_fold_and_carries_the_repeat_seed() -> None:
    splits = kfold_splits(cohort(12, 6), 3, [11, 22])
    assert [(s.index, s.seed, s.role) for s in splits] == [(i, 11 if i < 3 else 22, SplitRole.KFOLD)
                                                           for i in range(6)]


def test_different_seeds_draw_different_folds() -> None:
    first, second = _by_repeat(kfold_splits(cohort(20, 8), 5, [1, 2]), 5).values()
    assert {s.val_hash for s in first} != {s.val_hash for s in second}


def test_a_class_with_one_patient_is_refused_naming_it() -> None:
    with pytest.raises(SplitError, match="needs >= 2 negative patients"):
        kfold_splits(cohort(10, 1), 5, [0])


def test_more_folds_than_patients_of_either_class_is_refused() -> None:
    with pytest.raises(SplitError, match="5 stratified folds need >= 5 patients of one class"):
        kfold_splits(cohort(4, 3), 5, [0])


def test_the_regime_is_built_only_when_asked_and_names_folds_without_a_negative() -> None:
    manifests = {"all-xray": cohort(13, 4, name="all-xray"), "all-ct": cohort(13, 4, name="all-ct"),
                 "paired": cohort(13, 4)}
    plain, _ = default_regimes(manifests, SplitSettings())
    assert RegimeName.PAIRED_KFOLD not in {r.name for r in plain}
    regimes, errors = default_regimes(manifests, SplitSettings(), optional=[RegimeName.PAIRED_KFOLD])
    kfold = next(r for r in regimes if r.name == RegimeName.PAIRED_KFOLD)
    assert len(kfold.splits) == 15 and kfold.training_seeds is None and not errors
    labels = manifests["paired"].patient_labels()
    without = [s.split_id for s in kfold.splits if all(labels[p] == 1 for p in s.val_patients)]
    assert len(without) == 3 and "3 of them hold no negative patient" in kfold.role
    assert all(split_id in kfold.role for split_id in without)


def test_settings_refuse_repeated_kfold_seeds() -> None:
    with pytest.raises(ValueError, match="seeds repeat"):
        SplitSettings(kfold_seeds=[1, 1])
