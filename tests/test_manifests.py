"""The three manifests, the paired matching rule and the label audit."""

from __future__ import annotations

import pytest

from benchmark.data.cohort import audit_labels, build_manifests, match_ct
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import load_cohort
from benchmark.schemas import ImageRecord, Manifest, PairedRecord, SupportCounts
from tests.conftest import CohortWriter


def record(image_id: str, patient: str = "1", modality: str = "ct", offset: float | None = None,
           label: int = 1) -> ImageRecord:
    return ImageRecord(image_id=image_id, patient_id=patient, modality=modality, finding="x", label=label,
                       offset=offset, content_sha256="0" * 64, line=2)


def test_match_takes_the_ct_closest_in_offset() -> None:
    xray = record("images/x.png", modality="xray", offset=10)
    pair = match_ct(xray, [record("images/a.png", offset=1), record("images/b.png", offset=12),
                           record("images/c.png", offset=30)])
    assert pair.ct.image_id == "images/b.png" and pair.offset_gap == 2.0


def test_unknown_ct_offset_loses_to_any_known_one() -> None:
    xray = record("images/x.png", modality="xray", offset=10)
    pair = match_ct(xray, [record("images/a.png", offset=None), record("images/z.png", offset=300)])
    assert pair.ct.image_id == "images/z.png" and pair.offset_gap == 290.0


def test_unknown_xray_offset_falls_back_to_filename_order_with_no_gap() -> None:
    xray = record("images/x.png", modality="xray", offset=None)
    pair = match_ct(xray, [record("images/b.png", offset=1), record("images/a.png", offset=5)])
    assert pair.ct.image_id == "images/a.png" and pair.offset_gap is None


def test_equal_gaps_are_broken_by_filename_order_whatever_the_input_order() -> None:
    xray = record("images/x.png", modality="xray", offset=5)
    cts = [record("images/d.png", offset=3), record("images/c.png", offset=7)]
    assert match_ct(xray, cts).ct.image_id == match_ct(xray, cts[::-1]).ct.image_id == "images/c.png"


def test_match_refuses_a_patient_without_ct() -> None:
    with pytest.raises(ValueError, match="no CT image"):
        match_ct(record("images/x.png", modality="xray"), [])


def test_pairs_never_cross_patients() -> None:
    with pytest.raises(ValueError, match="another patient"):
        PairedRecord(xray=record("images/x.png", modality="xray"), ct=record("images/c.png", patient="2"),
                     offset_gap=None)


def test_paired_manifest_holds_only_xrays_of_patients_with_ct(write_cohort: CohortWriter, cache: ImageCache,
                                                               paired_rows: list) -> None:
    manifests = build_manifests(load_cohort(write_cohort(paired_rows), cache).records)
    paired = manifests["paired"]
    assert "xr0" not in paired.patient_labels() and "xr0" in manifests["all-xray"].patient_labels()
    assert all(p.xray.patient_id == p.ct.patient_id for p in paired.pairs or [])
    # x*-a (offset 2) matches c*-a (offset 1); x*-b (offset 9) matches c*-b (offset 8).
    assert {(p.xray.image_id[-6:], p.ct.image_id[-6:], p.offset_gap) for p in paired.pairs or []} == {
        ("-a.png", "-a.png", 1.0), ("-b.png", "-b.png", 1.0)}


def test_manifest_support_counts_images_and_patients_by_label() -> None:
    records = [record("images/1.png", "1", "xray", label=1), record("images/2.png", "1", "xray", label=0),
               record("images/3.png", "2", "xray", label=0)]
    assert Manifest(name="all-xray", modality="xray", records=records).support == SupportCounts(
        images=3, patients=2, positive_images=1, negative_images=2, positive_patients=1, negative_patients=1)


def test_manifest_refuses_records_of_another_modality() -> None:
    with pytest.raises(ValueError, match="is ct in the all-xray manifest"):
        Manifest(name="all-xray", modality="xray", records=[record("images/c.png", modality="ct")])


def _audit_cohort() -> list[ImageRecord]:
    return [
        record("images/x1.png", "1", "xray", label=1), record("images/c1.png", "1", "ct", label=1),
        record("images/x2.png", "2", "xray", label=0), record("images/c2.png", "2", "ct", label=1),
        record("images/x3.png", "3", "xray", label=0), record("images/c3.png", "3", "ct", label=0),
        record("images/x4.png", "4", "xray", label=1), record("images/c4.png", "4", "ct", label=0),
        record("images/x5.png", "5", "xray", label=0),
    ]


def test_audit_lists_patients_whose_xray_and_ct_labels_disagree() -> None:
    records = _audit_cohort()
    audit = audit_labels(records, build_manifests(records)["paired"], k=2)
    assert [(d.patient_id, d.xray_label, d.ct_label) for d in audit.disagreeing_patients] == [("2", 0, 1),
                                                                                                ("4", 1, 0)]
    assert audit.paired_negative_patients == ["2", "3"]
    assert audit.paired_negatives_with_covid_ct == ["2"]
    assert audit.paired_label_mismatched_pairs == 2


def test_audit_states_whether_monte_carlo_survives_a_patient_level_label() -> None:
    records = _audit_cohort()
    image_level, patient_level = audit_labels(records, build_manifests(records)["paired"], k=2).label_definitions
    assert (image_level.negative_patients, image_level.monte_carlo_feasible) == (2, True)
    assert (patient_level.negative_patients, patient_level.monte_carlo_feasible) == (1, False)
    assert "at least 2" in patient_level.why
