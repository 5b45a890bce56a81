"""metadata.csv loading and row filtering: every bad row is skipped, counted and named, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.data.collection import image_label, is_todo_finding, read_metadata
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import load_cohort
from benchmark.errors import MetadataError
from benchmark.schemas import FilterReason
from tests.conftest import CohortWriter, row, write_image


def _skipped(cohort, reason: FilterReason) -> list:
    return [s for s in cohort.filter_report.skipped if s.reason == reason]


def test_missing_required_column_is_an_error_naming_it(write_cohort: CohortWriter) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "a.png")],
                        columns=["patientid", "offset", "finding", "modality", "folder", "filename"])
    with pytest.raises(MetadataError, match=r"metadata\.csv, line 1: required column\(s\) missing: view"):
        read_metadata(root / "metadata.csv")


def test_zero_byte_metadata_is_an_error(tmp_path: Path, cache: ImageCache) -> None:
    (tmp_path / "metadata.csv").write_bytes(b"")
    with pytest.raises(MetadataError, match="metadata file is empty"):
        load_cohort(tmp_path, cache)


def test_missing_metadata_is_an_error(tmp_path: Path, cache: ImageCache) -> None:
    with pytest.raises(MetadataError, match="metadata file not found"):
        load_cohort(tmp_path, cache)


def test_header_only_metadata_gives_an_empty_cohort(write_cohort: CohortWriter, cache: ImageCache) -> None:
    cohort = load_cohort(write_cohort([]), cache)
    assert cohort.records == [] and cohort.filter_report.total_rows == 0


def test_non_utf8_metadata_is_an_error(tmp_path: Path, cache: ImageCache) -> None:
    (tmp_path / "metadata.csv").write_bytes(b"patientid,offset\n\xff\xfe,1\n")
    with pytest.raises(MetadataError, match="UTF-8"):
        load_cohort(tmp_path, cache)


def test_missing_image_is_skipped_with_its_line(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "here.png"),
                         row("2", "X-ray", "No Finding", "gone.png", write=False)])
    cohort = load_cohort(root, cache)
    [skipped] = _skipped(cohort, FilterReason.MISSING_FILE)
    assert (skipped.line, skipped.patient_id, skipped.path) == (3, "2", "images/gone.png")
    assert [r.patient_id for r in cohort.records] == ["1"]


def test_truncated_jpeg_is_counted_as_corrupt(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "cut.jpg", write=False)])
    full = write_image(root / "images" / "full.jpg", mode="RGB", size=(64, 64))
    (root / "images" / "cut.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    cohort = load_cohort(root, cache)
    [skipped] = _skipped(cohort, FilterReason.CORRUPT_IMAGE)
    assert skipped.line == 2 and "cut.jpg" in skipped.detail


def test_text_file_named_png_is_counted_as_corrupt(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "notes.png", write=False)])
    (root / "images" / "notes.png").write_text("not an image")
    assert len(_skipped(load_cohort(root, cache), FilterReason.CORRUPT_IMAGE)) == 1


def test_empty_image_file_is_counted_as_empty(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "empty.png", write=False)])
    (root / "images" / "empty.png").write_bytes(b"")
    assert len(_skipped(load_cohort(root, cache), FilterReason.EMPTY_FILE)) == 1


def test_sixteen_bit_png_is_kept_and_rescaled_to_unit_range(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "deep.png", write=False)])
    write_image(root / "images" / "deep.png", mode="I;16")
    [record] = load_cohort(root, cache).records
    array = cache.load(record.content_sha256)
    assert array.shape == (16, 16) and array.dtype == np.float32
    assert 0.0 <= array.min() < 0.2 and 0.8 < array.max() <= 1.0


def test_rgba_png_is_kept_as_grayscale(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "rgba.png", write=False)])
    write_image(root / "images" / "rgba.png", mode="RGBA")
    [record] = load_cohort(root, cache).records
    assert cache.load(record.content_sha256).shape == (16, 16)


@pytest.mark.parametrize("folder, filename", [
    ("images", "../../outside.png"),
    ("..", "outside.png"),
    ("images", "/etc/hostname"),
])
def test_paths_leaving_the_data_root_are_refused(write_cohort: CohortWriter, cache: ImageCache,
                                                 folder: str, filename: str) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", filename, folder=folder, write=False)])
    write_image(root.parent / "outside.png")
    write_image(root.parent.parent / "outside.png")
    cohort = load_cohort(root, cache)
    assert len(_skipped(cohort, FilterReason.OUTSIDE_DATA_ROOT)) == 1 and cohort.records == []


def test_symlink_pointing_outside_the_data_root_is_refused(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "link.png", write=False)])
    os.symlink(write_image(root.parent / "secret.png"), root / "images" / "link.png")
    assert len(_skipped(load_cohort(root, cache), FilterReason.OUTSIDE_DATA_ROOT)) == 1


def test_volume_rows_are_counted_without_reading_them(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "CT", "Pneumonia/Viral/COVID-19", "scan.nii.gz", folder="volumes", write=False)])
    assert len(_skipped(load_cohort(root, cache), FilterReason.VOLUME_NOT_2D)) == 1


def test_second_reference_to_the_same_file_is_a_duplicate(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "a.png"), row("1", "X-ray", "No Finding", "a.png")])
    [dup] = _skipped(load_cohort(root, cache), FilterReason.DUPLICATE_IMAGE)
    assert dup.line == 3 and "line 2" in dup.detail


def test_empty_patient_id_is_an_invalid_row(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("", "X-ray", "No Finding", "a.png")])
    [bad] = _skipped(load_cohort(root, cache), FilterReason.INVALID_ROW)
    assert "patientid" in bad.detail


def test_todo_findings_are_dropped_including_hierarchical_ones(write_cohort: CohortWriter,
                                                                 cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "todo", "a.png"), row("2", "X-ray", "Pneumonia/todo", "b.png"),
                         row("3", "X-ray", "Pneumonia", "c.png")])
    cohort = load_cohort(root, cache)
    assert cohort.filter_report.counts[FilterReason.TODO_FINDING] == 2
    assert [r.patient_id for r in cohort.records] == ["3"]


def test_other_modalities_are_dropped(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "MRI", "No Finding", "a.png"), row("2", "X-ray", "No Finding", "b.png")])
    [other] = _skipped(load_cohort(root, cache), FilterReason.OTHER_MODALITY)
    assert other.detail == "MRI"


def test_a_missing_todo_row_is_counted_once_as_missing(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "MRI", "todo", "gone.png", write=False)])
    report = load_cohort(root, cache).filter_report
    assert report.counts[FilterReason.MISSING_FILE] == 1 and sum(report.counts.values()) == 1


def test_every_row_is_either_kept_or_counted_once(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "a.png"), row("2", "CT", "todo", "b.png"),
                         row("3", "X-ray", "No Finding", "c.png", write=False), row("", "CT", "x", "d.png"),
                         row("5", "PET", "No Finding", "e.png")])
    report = load_cohort(root, cache).filter_report
    assert report.kept_rows + sum(report.counts.values()) == report.total_rows == 5
    assert sorted(s.line for s in report.skipped) == [3, 4, 5, 6]


def test_nan_and_unparsable_offsets_are_unknown(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "a.png", offset="NaN"),
                         row("1", "X-ray", "No Finding", "b.png", offset="day five"),
                         row("1", "X-ray", "No Finding", "c.png", offset="-3")])
    cohort = load_cohort(root, cache)
    assert [r.offset for r in cohort.records] == [None, None, -3.0]
    assert len(cohort.filter_report.warnings) == 1 and "line 3" in cohort.filter_report.warnings[0]


@pytest.mark.parametrize("raw, expected", [("X-ray", "xray"), ("x-ray", "xray"), (" CT ", "ct"), ("ct", "ct"),
                                           ("MRI", None), ("", None)])
def test_collection_modalities_map_to_the_default_roles(raw: str, expected: str | None) -> None:
    from benchmark.config import CohortSettings

    assert CohortSettings().role_of(raw) == expected


@pytest.mark.parametrize("finding, label", [("Pneumonia/Viral/COVID-19", 1), ("COVID-19, ARDS", 1),
                                            ("No Finding", 0), ("Pneumonia/Viral/SARS", 0)])
def test_image_label_is_one_iff_finding_mentions_covid(finding: str, label: int) -> None:
    assert image_label(finding) == label


@pytest.mark.parametrize("finding, todo", [("todo", True), ("Pneumonia/todo", True), (" TODO ", True),
                                           ("Pneumonia", False), ("todo-list", False)])
def test_todo_detection(finding: str, todo: bool) -> None:
    assert is_todo_finding(finding) is todo


def test_records_carry_ids_labels_and_content_hashes(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("7", "X-ray", "Pneumonia/Viral/COVID-19", "a.png", offset="4", view="AP")])
    [record] = load_cohort(root, cache).records
    assert (record.image_id, record.patient_id, record.modality, record.label, record.offset, record.view,
            record.line) == ("images/a.png", "7", "xray", 1, 4.0, "AP", 2)
    assert len(record.content_sha256) == 64


def test_image_list_hash_changes_when_a_pixel_changes(write_cohort: CohortWriter, cache: ImageCache) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "a.png")])
    before = load_cohort(root, cache).image_list_sha256
    write_image(root / "images" / "a.png", seed=99)
    assert load_cohort(root, cache).image_list_sha256 != before
