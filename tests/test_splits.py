"""Patient-level splits: examples and hypothesis properties over random cohorts."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmark.config import SplitSettings
from benchmark.data.splits import (
    _unrank_combination,
    admissible_set_count,
    default_regimes,
    exhaustive_splits,
    fixed_paired_split,
    monte_carlo_splits,
    stratified_split,
)
from benchmark.errors import SplitError
from benchmark.schemas import ImageRecord, Manifest, Split, SplitRole, validation_set_hash


def cohort(positives: int, negatives: int, images_per_patient: int = 2, name: str = "paired") -> Manifest:
    """A manifest of synthetic records (no files needed): patient ids P000.., N000.."""
    records = []
    for prefix, count, label in (("P", positives, 1), ("N", negatives, 0)):
        for p in range(count):
            for i in range(images_per_patient):
                records.append(ImageRecord(image_id=f"images/{prefix}{p:03d}-{i}.png", patient_id=f"{prefix}{p:03d}",
                                           modality="xray", finding="x", label=label, offset=None,
                                           content_sha256="0" * 64, line=2))
    return Manifest(name=name, modality="xray", records=records)  # type: ignore[arg-type]


def negatives_in(split: Split, manifest: Manifest) -> int:
    labels = manifest.patient_labels()
    return sum(1 for p in split.val_patients if labels[p] == 0)


cohorts = st.builds(cohort, positives=st.integers(5, 40), negatives=st.integers(2, 12),
                    images_per_patient=st.integers(1, 3))


# --- properties over random cohorts ---------------------------------------------------------------

@given(manifest=cohorts, seed=st.integers(0, 2**32 - 1))
def test_no_patient_is_in_both_train_and_val_of_any_split(manifest: Manifest, seed: int) -> None:
    all_patients = set(manifest.patient_labels())
    for split in [stratified_split(manifest, 0.2, seed), fixed_paired_split(manifest, 0.2, seed),
                  *monte_carlo_splits(manifest, 4, 3, seed), *exhaustive_splits(manifest, 3, 20, seed)]:
        assert not set(split.train_patients) & set(split.val_patients)
        assert set(split.train_patients) | set(split.val_patients) == all_patients


@given(manifest=cohorts, resamples=st.integers(1, 10), k=st.integers(2, 5), base=st.integers(0, 10_000))
def test_every_monte_carlo_validation_set_has_k_patients_and_one_negative(
        manifest: Manifest, resamples: int, k: int, base: int) -> None:
    for split in monte_carlo_splits(manifest, resamples, k, base):
        assert len(split.val_patients) == k and negatives_in(split, manifest) == 1


@given(manifest=cohorts, resamples=st.integers(1, 10), base=st.integers(0, 10_000))
def test_monte_carlo_validation_sets_are_distinct(manifest: Manifest, resamples: int, base: int) -> None:
    splits = monte_carlo_splits(manifest, resamples, 2, base)  # >= 2 * 5 = 10 admissible sets exist
    assert len({s.val_hash for s in splits}) == len(splits) == resamples


@given(manifest=cohorts, seed=st.integers(0, 2**32 - 1))
def test_the_same_seed_gives_the_same_splits(manifest: Manifest, seed: int) -> None:
    assert stratified_split(manifest, 0.2, seed) == stratified_split(manifest, 0.2, seed)
    assert fixed_paired_split(manifest, 0.2, seed) == fixed_paired_split(manifest, 0.2, seed)
    assert monte_carlo_splits(manifest, 3, 3, seed) == monte_carlo_splits(manifest, 3, 3, seed)
    assert exhaustive_splits(manifest, 3, 7, seed) == exhaustive_splits(manifest, 3, 7, seed)


@given(manifest=cohorts, seed=st.integers(0, 2**32 - 1))
def test_fixed_split_holds_exactly_one_negative(manifest: Manifest, seed: int) -> None:
    assert negatives_in(fixed_paired_split(manifest, 0.2, seed), manifest) == 1


@given(manifest=cohorts, held=st.integers(1, 4), resamples=st.integers(1, 6), base=st.integers(0, 10_000),
       data=st.data())
def test_every_paired_validation_set_holds_the_declared_number_of_negatives_and_no_training_patient(
        manifest: Manifest, held: int, resamples: int, base: int, data: st.DataObject) -> None:
    positives, negatives = (sum(1 for v in manifest.patient_labels().values() if v == label) for label in (1, 0))
    held = min(held, negatives - 1)
    k = data.draw(st.integers(held + 1, min(held + 4, held + positives - 1)), label="k")
    admissible = admissible_set_count(manifest, k, held)
    assert admissible == math.comb(negatives, held) * math.comb(positives, k - held)
    splits = [fixed_paired_split(manifest, 0.2, base, held), *exhaustive_splits(manifest, k, 12, base, held),
              *monte_carlo_splits(manifest, min(resamples, admissible), k, base, held)]
    for split in splits:
        assert negatives_in(split, manifest) == held
        assert not set(split.train_patients) & set(split.val_patients)
        assert {0, 1} <= {manifest.patient_labels()[p] for p in split.train_patients}
    resampled = [s for s in splits if s.role != SplitRole.FIXED]
    assert all(len(s.val_patients) == k for s in resampled)
    assert len({s.val_hash for s in resampled if s.role == SplitRole.MONTE_CARLO}) == min(resamples, admissible)


def test_one_declared_negative_draws_the_splits_every_earlier_store_drew() -> None:
    manifest = cohort(positives=13, negatives=4)
    splits = [fixed_paired_split(manifest, 0.2, 42, 1), *monte_carlo_splits(manifest, 8, 5, 1000, 1),
              *exhaustive_splits(manifest, 5, 16, 2000, 1)]
    # pinned from the code before validation_negatives existed (one negative was then the only choice)
    assert hashlib.sha256("".join(s.val_hash for s in splits).encode()).hexdigest() == (
        "18fd2a6ae736f9f6e053cf32ccc9caf888fac5a4a18f18bb61ddf224cfe9d61c")


def test_settings_refuse_as_many_negatives_as_validation_patients() -> None:
    with pytest.raises(ValueError, match="leaves no positive patient"):
        SplitSettings(monte_carlo_val_patients=3, validation_negatives=3)


@given(manifest=cohorts, seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.1, 0.5))
def test_reference_split_is_stratified_within_one_patient_per_class(manifest: Manifest, seed: int,
                                                                  fraction: float) -> None:
    split = stratified_split(manifest, fraction, seed)
    labels = manifest.patient_labels()
    for label in (0, 1):
        n_class = sum(1 for v in labels.values() if v == label)
        n_val = sum(1 for p in split.val_patients if labels[p] == label)
        assert abs(n_val - fraction * n_class) <= 1 and n_val < n_class


@given(n=st.integers(1, 12), data=st.data())
def test_unranking_follows_lexicographic_combination_order(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    combos = list(itertools.combinations(range(n), k))
    rank = data.draw(st.integers(0, len(combos) - 1))
    assert tuple(_unrank_combination(rank, n, k)) == combos[rank]


# --- examples --------------------------------------------------------------------------------------

def test_monte_carlo_resample_r_is_drawn_with_seed_base_plus_r() -> None:
    splits = monte_carlo_splits(cohort(13, 4), 8, 5, 1000)
    assert [s.seed for s in splits] == list(range(1000, 1008)) and [s.index for s in splits] == list(range(8))
    assert monte_carlo_splits(cohort(13, 4), 3, 5, 1000) == splits[:3]


def test_monte_carlo_refuses_more_resamples_than_distinct_sets() -> None:
    manifest = cohort(3, 2)  # 2 * C(3, 1) = 6 admissible sets of k = 2
    assert len(monte_carlo_splits(manifest, 6, 2, 0)) == 6
    with pytest.raises(SplitError, match="only 6 distinct validation sets"):
        monte_carlo_splits(manifest, 7, 2, 0)


def test_monte_carlo_needs_two_negatives() -> None:
    with pytest.raises(SplitError, match="needs >= 2 negative patients.*has 1"):
        monte_carlo_splits(cohort(10, 1), 2, 3, 0)


def test_monte_carlo_needs_a_positive_left_to_train_on() -> None:
    with pytest.raises(SplitError, match="k = 5 holds out 4 positive"):
        monte_carlo_splits(cohort(4, 3), 1, 5, 0)


def test_fixed_split_needs_two_negatives() -> None:
    with pytest.raises(SplitError, match="fixed split needs >= 2 negative"):
        fixed_paired_split(cohort(10, 1), 0.2, 42)


def test_exhaustive_mode_enumerates_every_admissible_set_when_few() -> None:
    manifest = cohort(5, 3)
    splits = exhaustive_splits(manifest, 3, 1000, 0)
    assert len(splits) == admissible_set_count(manifest, 3) == 3 * math.comb(5, 2)
    assert len({s.val_hash for s in splits}) == len(splits)
    assert all(negatives_in(s, manifest) == 1 and len(s.val_patients) == 3 for s in splits)


def test_exhaustive_mode_samples_the_stated_number_when_too_many() -> None:
    manifest = cohort(30, 5)
    splits = exhaustive_splits(manifest, 5, 50, 7)
    assert len(splits) == 50 and len({s.val_hash for s in splits}) == 50
    assert splits != exhaustive_splits(manifest, 5, 50, 8)
    assert all(s.role == SplitRole.EXHAUSTIVE for s in splits)


def test_stratified_split_keeps_a_single_patient_class_in_training() -> None:
    manifest = cohort(20, 1)
    split = stratified_split(manifest, 0.2, 42)
    assert "N000" in split.train_patients and len(split.val_patients) == 4


def test_split_refuses_overlapping_patients() -> None:
    with pytest.raises(ValueError, match="both train and val"):
        Split(manifest="paired", role=SplitRole.FIXED, index=0, seed=1, train_patients=("a", "b"),
              val_patients=("b",))


def test_default_regimes_report_what_cannot_be_drawn_instead_of_failing() -> None:
    manifests = {"all-xray": cohort(10, 5, name="all-xray"), "all-ct": cohort(5, 1, name="all-ct"),
                 "paired": cohort(4, 1)}
    regimes, errors = default_regimes(manifests, SplitSettings())
    assert [r.name for r in regimes] == ["reference-all-xray", "reference-all-ct"]
    assert set(errors) == {"paired-fixed", "paired-monte-carlo"}


def test_monte_carlo_regime_trains_each_resample_with_its_own_seed() -> None:
    manifests = {"all-xray": cohort(10, 5, name="all-xray"), "all-ct": cohort(5, 2, name="all-ct"),
                 "paired": cohort(13, 4)}
    regimes = {r.name: r for r in default_regimes(manifests, SplitSettings())[0]}
    mc = regimes["paired-monte-carlo"]
    assert [mc.seeds_for(s) for s in mc.splits] == [[1000 + r] for r in range(8)]
    fixed = regimes["paired-fixed"]
    assert fixed.seeds_for(fixed.splits[0]) == [42, 43, 44, 45]


def test_validation_set_hash_is_stable_across_processes() -> None:
    ids = ["p3", "p1", "p20"]
    code = ("import json,sys; from benchmark.schemas import validation_set_hash as h; "
            "print(h(json.loads(sys.argv[1])))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert other == validation_set_hash(ids) == validation_set_hash(sorted(ids))
