"""The synthetic cohort generator: the real loader reads it; planted and null modes differ where they should."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from benchmark.data.cohort import build_manifests
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import load_cohort
from benchmark.data.synthetic import SyntheticSpec, write_synthetic_cohort


def _cohort(tmp_path: Path, **spec):
    root = write_synthetic_cohort(tmp_path / "data", **spec)
    return load_cohort(root, ImageCache(tmp_path / "cache", 16)), root


def test_every_generated_image_loads_through_the_real_loader(tmp_path: Path) -> None:
    cohort, _ = _cohort(tmp_path, paired_patients=8, size=24)
    assert cohort.filter_report.kept_rows == cohort.filter_report.total_rows > 0
    paired = build_manifests(cohort.records)["paired"]
    assert paired.support.patients == 8 and all(p.offset_gap == 0.0 for p in paired.pairs or [])


def test_negative_fraction_sets_the_negative_paired_patients(tmp_path: Path) -> None:
    cohort, _ = _cohort(tmp_path, paired_patients=12, negative_fraction=0.25, size=16)
    assert build_manifests(cohort.records)["paired"].support.negative_patients == 3
    assert SyntheticSpec(paired_patients=12, negative_fraction=0.25).negative_patients == 3


def test_in_null_mode_the_ct_is_a_copy_of_the_xray_read_the_same_way(tmp_path: Path) -> None:
    cohort, root = _cohort(tmp_path, mode="null", paired_patients=6, xray_miss_rate=0.5, size=16)
    for pair in build_manifests(cohort.records)["paired"].pairs or []:
        assert pair.xray.content_sha256 == pair.ct.content_sha256
        assert pair.xray.label == pair.ct.label


def test_in_planted_mode_the_ct_is_its_own_image_and_its_read_is_the_diagnosis(tmp_path: Path) -> None:
    cohort, _ = _cohort(tmp_path, mode="planted", paired_patients=12, xray_miss_rate=0.6, size=16, seed=3)
    pairs = build_manifests(cohort.records)["paired"].pairs or []
    assert all(p.xray.content_sha256 != p.ct.content_sha256 for p in pairs)
    missed = [p for p in pairs if p.xray.label == 0 and p.ct.label == 1]
    assert missed, "with a 60% miss rate some X-ray reads must miss a lesion the CT read reports"
    assert all(p.xray.label <= p.ct.label for p in pairs)


def test_the_same_seed_writes_the_same_cohort(tmp_path: Path) -> None:
    def digest(root: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()
    first = write_synthetic_cohort(tmp_path / "a", paired_patients=5, size=16, seed=9)
    second = write_synthetic_cohort(tmp_path / "b", paired_patients=5, size=16, seed=9)
    third = write_synthetic_cohort(tmp_path / "c", paired_patients=5, size=16, seed=10)
    assert digest(first) == digest(second) != digest(third)


def test_bad_knobs_are_refused() -> None:
    with pytest.raises(ValueError):
        SyntheticSpec(xray_miss_rate=1.5)
    with pytest.raises(ValueError):
        SyntheticSpec(mode="maybe")
