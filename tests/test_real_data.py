"""Checks on the shared real data (CTXRAY_DATA): every count is computed from the data itself."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmark.data.cohort import Cohort, build_manifests
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import load_cohort
from benchmark.schemas import FilterReason

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real_cohort(tmp_path_factory: pytest.TempPathFactory, real_data_root: Path) -> Cohort:
    return load_cohort(real_data_root, ImageCache(tmp_path_factory.mktemp("cache"), 32))


def test_every_paired_xray_is_matched_to_a_ct_of_the_same_patient(real_cohort: Cohort) -> None:
    paired = build_manifests(real_cohort.records)["paired"]
    cts = {(r.patient_id, r.image_id) for r in real_cohort.records if r.modality == "ct"}
    assert paired.pairs and len(paired.pairs) == len(paired.records)
    for pair in paired.pairs:
        assert pair.xray.modality == "xray" and pair.ct.modality == "ct"
        assert pair.xray.patient_id == pair.ct.patient_id
        assert (pair.ct.patient_id, pair.ct.image_id) in cts


def test_paired_cohort_is_every_patient_with_both_modalities(real_cohort: Cohort) -> None:
    by_modality = {m: {r.patient_id for r in real_cohort.records if r.modality == m} for m in ("xray", "ct")}
    paired = build_manifests(real_cohort.records)["paired"]
    assert set(paired.patient_labels()) == by_modality["xray"] & by_modality["ct"]


def test_files_listed_as_missing_by_the_copy_are_counted_missing(real_cohort: Cohort, real_data_root: Path) -> None:
    listed = real_data_root / "MISSING.txt"
    if not listed.is_file():
        pytest.skip("this data root has no MISSING.txt")
    with listed.open(encoding="utf-8") as handle:
        missing = {r["filename"] for r in csv.DictReader(handle, delimiter="\t")}
    counted = {Path(s.path).name for s in real_cohort.filter_report.skipped if s.reason == FilterReason.MISSING_FILE}
    assert counted == missing


def test_every_metadata_row_is_kept_or_counted(real_cohort: Cohort, real_data_root: Path) -> None:
    with (real_data_root / "metadata.csv").open(encoding="utf-8", newline="") as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    report = real_cohort.filter_report
    assert report.total_rows == rows == report.kept_rows + sum(report.counts.values())
