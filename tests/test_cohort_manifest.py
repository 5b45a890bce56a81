"""The cohort manifest (patient_id, modality, label, path [, offset, image_id, view, finding]): what is kept, what is
skipped and why, and which errors stop the build."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.config import CohortSettings, Settings
from benchmark.data.cohort import build_manifests
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import load_cohort, prepare_data
from benchmark.errors import ConfigError, MetadataError
from benchmark.schemas import FilterReason
from tests.conftest import write_image

HEADER = ["patient_id", "modality", "label", "path", "offset", "view", "finding"]


def write_manifest(folder: Path, rows: list[dict[str, object]], header: list[str] | None = None,
                   images: bool = True) -> Path:
    """Write rows as folder/manifest.csv; with `images`, a PNG for every row whose path is under the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header or HEADER, extrasaction="ignore")
        writer.writeheader()
        for n, r in enumerate(rows):
            writer.writerow(r)
            if not (images and r.get("path")):
                continue
            target = (folder / str(r["path"])).resolve()
            if target.is_relative_to(folder.resolve()) and not target.exists() and target.suffix == ".png":
                write_image(target, seed=n)
    return manifest


def entry(patient: str, modality: str, label: object, path: str, **extra: object) -> dict[str, object]:
    return {"patient_id": patient, "modality": modality, "label": label, "path": path, **extra}


def paired_entries(positives: int = 4, negatives: int = 2) -> list[dict[str, object]]:
    rows = []
    for p in range(positives + negatives):
        label = int(p < positives)
        rows += [entry(f"p{p}", "xray", label, f"img/p{p}-xr.png", offset=2),
                 entry(f"p{p}", "ct", label, f"img/p{p}-ct.png", offset=1)]
    return rows


def skipped(cohort, reason: FilterReason) -> list:
    return [s for s in cohort.filter_report.skipped if s.reason == reason]


def test_a_valid_manifest_keeps_every_row_with_its_label_and_role(tmp_path: Path, cache: ImageCache) -> None:
    cohort = load_cohort(write_manifest(tmp_path / "c", paired_entries()), cache)
    assert cohort.filter_report.kept_rows == cohort.filter_report.total_rows == 12
    assert {(r.image_id, r.modality, r.label) for r in cohort.records} >= {("img/p0-xr.png", "xray", 1),
                                                                           ("img/p5-ct.png", "ct", 0)}
    assert cohort.source.kind == "manifest" and cohort.source.table_sha256 == cohort.metadata_sha256


def test_a_patient_with_only_one_modality_is_kept_but_not_paired(tmp_path: Path, cache: ImageCache) -> None:
    rows = [*paired_entries(), entry("solo", "xray", 1, "img/solo.png")]
    manifests = build_manifests(load_cohort(write_manifest(tmp_path / "c", rows), cache).records)
    assert "solo" in {r.patient_id for r in manifests["all-xray"].records}
    assert "solo" not in manifests["paired"].patient_labels()


@pytest.mark.parametrize("label", ["2", "-1", "yes", "0.5"])
def test_a_label_outside_0_1_is_skipped_naming_row_column_and_value(tmp_path: Path, cache: ImageCache,
                                                                    label: str) -> None:
    rows = [*paired_entries(), entry("bad", "xray", label, "img/bad.png")]
    [bad] = skipped(load_cohort(write_manifest(tmp_path / "c", rows), cache), FilterReason.INVALID_LABEL)
    assert bad.line == len(rows) + 1 and "column label" in bad.detail and repr(label) in bad.detail


def test_labels_written_as_floats_are_read(tmp_path: Path, cache: ImageCache) -> None:
    rows = [entry("a", "xray", "1.0", "img/a.png"), entry("b", "xray", "0.0", "img/b.png")]
    assert [r.label for r in load_cohort(write_manifest(tmp_path / "c", rows), cache).records] == [1, 0]


def test_a_second_row_with_the_same_path_is_a_duplicate_of_the_first(tmp_path: Path, cache: ImageCache) -> None:
    rows = [*paired_entries(), entry("p0", "xray", 1, "img/../img/p0-xr.png")]
    cohort = load_cohort(write_manifest(tmp_path / "c", rows), cache)
    [dup] = skipped(cohort, FilterReason.DUPLICATE_IMAGE)
    assert dup.detail == "same file as line 2" and cohort.filter_report.kept_rows == 12


def test_a_repeated_image_id_is_a_duplicate(tmp_path: Path, cache: ImageCache) -> None:
    rows = [entry("a", "xray", 1, "img/a.png", image_id="A"), entry("b", "xray", 0, "img/b.png", image_id="A")]
    cohort = load_cohort(write_manifest(tmp_path / "c", rows, header=[*HEADER, "image_id"]), cache)
    [dup] = skipped(cohort, FilterReason.DUPLICATE_IMAGE)
    assert dup.line == 3 and "'A'" in dup.detail and [r.image_id for r in cohort.records] == ["A"]


@pytest.mark.parametrize("path", ["../outside.png", "img/../../outside.png", "/etc/hostname"])
def test_a_path_leaving_the_manifest_folder_is_skipped(tmp_path: Path, cache: ImageCache, path: str) -> None:
    write_image(tmp_path / "outside.png")
    rows = [*paired_entries(), entry("x", "xray", 1, path)]
    [out] = skipped(load_cohort(write_manifest(tmp_path / "c", rows), cache), FilterReason.OUTSIDE_DATA_ROOT)
    assert out.path == path and out.line == len(rows) + 1


def test_a_symlink_out_of_the_manifest_folder_is_skipped(tmp_path: Path, cache: ImageCache) -> None:
    write_image(tmp_path / "secret.png")
    folder = tmp_path / "c"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "link.png").symlink_to(tmp_path / "secret.png")
    cohort = load_cohort(write_manifest(folder, [entry("x", "xray", 1, "img/link.png")]), cache)
    assert [s.reason for s in cohort.filter_report.skipped] == [FilterReason.OUTSIDE_DATA_ROOT]


@pytest.mark.parametrize("path", ["img/nul\x00byte.png", "img/" + "n" * 5000 + ".png"])
def test_a_path_no_file_system_accepts_is_an_invalid_row(tmp_path: Path, cache: ImageCache, path: str) -> None:
    rows = [*paired_entries(), entry("q", "xray", 1, path)]
    [bad] = skipped(load_cohort(write_manifest(tmp_path / "c", rows, images=False), cache), FilterReason.INVALID_ROW)
    assert "cannot be used as a file name" in bad.detail


def test_an_empty_required_cell_is_an_invalid_row_naming_the_column(tmp_path: Path, cache: ImageCache) -> None:
    rows = [*paired_entries(), entry("", "xray", 1, "img/nobody.png"), entry("q", "xray", "", "img/q.png")]
    bad = skipped(load_cohort(write_manifest(tmp_path / "c", rows), cache), FilterReason.INVALID_ROW)
    assert [b.detail for b in bad] == ["empty required cell(s): patient_id", "empty required cell(s): label"]


def test_an_offset_that_is_not_a_number_is_an_invalid_row(tmp_path: Path, cache: ImageCache) -> None:
    rows = [*paired_entries(), entry("q", "xray", 1, "img/q.png", offset="day 3")]
    [bad] = skipped(load_cohort(write_manifest(tmp_path / "c", rows), cache), FilterReason.INVALID_ROW)
    assert "column offset" in bad.detail and "'day 3'" in bad.detail


def test_an_undeclared_modality_is_skipped_naming_the_declared_ones(tmp_path: Path, cache: ImageCache) -> None:
    rows = [*paired_entries(), entry("q", "MR", 1, "img/q.png")]
    [other] = skipped(load_cohort(write_manifest(tmp_path / "c", rows), cache), FilterReason.OTHER_MODALITY)
    assert "'MR'" in other.detail and "'xray'" in other.detail and "'ct'" in other.detail


def test_declared_modality_names_map_to_the_target_and_privileged_roles(tmp_path: Path, cache: ImageCache) -> None:
    rows = [{**r, "modality": "CR" if r["modality"] == "xray" else "MR"} for r in paired_entries()]
    declared = CohortSettings(target_modality="cr", privileged_modality="MR")
    cohort = load_cohort(write_manifest(tmp_path / "c", rows), cache, declared)
    assert {r.modality for r in cohort.records if r.image_id.endswith("xr.png")} == {"xray"}
    assert build_manifests(cohort.records)["paired"].support.patients == 6
    assert (cohort.source.target_modality, cohort.source.privileged_modality) == ("cr", "MR")


def test_swapping_the_roles_deploys_the_other_modality(tmp_path: Path, cache: ImageCache) -> None:
    swapped = CohortSettings(target_modality="ct", privileged_modality="xray")
    cohort = load_cohort(write_manifest(tmp_path / "c", paired_entries()), cache, swapped)
    paired = build_manifests(cohort.records)["paired"]
    assert all(r.image_id.endswith("-ct.png") for r in paired.records)


def test_target_and_privileged_modality_must_differ() -> None:
    with pytest.raises(ValueError, match="name the same modality"):
        CohortSettings(target_modality="X-ray", privileged_modality="xray")


def test_a_missing_required_column_names_the_file_and_the_columns(tmp_path: Path, cache: ImageCache) -> None:
    manifest = write_manifest(tmp_path / "c", paired_entries(), header=["patient_id", "modality", "path"])
    with pytest.raises(MetadataError, match="label") as info:
        load_cohort(manifest, cache)
    assert str(manifest.resolve()) in str(info.value) and "line 1" in str(info.value)


def test_unknown_columns_are_ignored_with_a_warning(tmp_path: Path, cache: ImageCache) -> None:
    rows = [{**r, "scanner": "A"} for r in paired_entries()]
    cohort = load_cohort(write_manifest(tmp_path / "c", rows, header=[*HEADER, "scanner"]), cache)
    assert cohort.filter_report.kept_rows == 12 and any("scanner" in w for w in cohort.filter_report.warnings)


def test_a_manifest_that_is_not_utf8_is_one_error_naming_it(tmp_path: Path, cache: ImageCache) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes("patient_id,modality,label,path\nä,xray,1,a.png\n".encode("latin-1"))
    with pytest.raises(MetadataError, match="UTF-8") as info:
        load_cohort(manifest, cache)
    assert str(manifest) in str(info.value)


def test_a_manifest_saved_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path, cache: ImageCache) -> None:
    manifest = write_manifest(tmp_path / "c", paired_entries())
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes().replace(b"\n", b"\r\n"))
    assert load_cohort(manifest, cache).filter_report.kept_rows == 12


def test_a_header_only_manifest_says_nothing_was_kept(tmp_path: Path, cache: ImageCache) -> None:
    with pytest.raises(MetadataError, match="no row was kept"):
        prepare_data(write_manifest(tmp_path / "c", []), Settings(), ImageCache(tmp_path / "k", 128))


def test_the_cohort_flag_refuses_a_folder(tmp_path: Path) -> None:
    from benchmark.data.pipeline import resolve_cohort_file

    with pytest.raises(ConfigError, match="not a folder"):
        resolve_cohort_file(tmp_path)


def test_unreadable_files_are_skipped_with_their_readers_reason(tmp_path: Path, cache: ImageCache) -> None:
    from tests.test_readers import write_dicom

    folder = tmp_path / "c"
    (folder / "bad").mkdir(parents=True)
    (folder / "bad" / "text.dcm").write_text("this is not DICOM\n" * 20)
    write_dicom(folder / "bad" / "nopixels.dcm", np.zeros((4, 4), np.uint16), pixels=False)
    nibabel.save(nibabel.Nifti1Image(np.ones((4, 4, 3, 2), np.float32), np.eye(4)), folder / "bad" / "4d.nii.gz")
    (folder / "bad" / "scan.mha").write_bytes(b"ObjectType = Image\n")
    rows = [*paired_entries(), entry("b1", "xray", 1, "bad/text.dcm"), entry("b2", "ct", 1, "bad/nopixels.dcm"),
            entry("b3", "ct", 0, "bad/4d.nii.gz"), entry("b4", "ct", 0, "bad/scan.mha")]
    cohort = load_cohort(write_manifest(folder, rows), cache)
    reasons = {s.path: s.reason for s in cohort.filter_report.skipped}
    assert reasons == {"bad/text.dcm": FilterReason.NOT_DICOM, "bad/nopixels.dcm": FilterReason.NO_PIXEL_DATA,
                       "bad/4d.nii.gz": FilterReason.VOLUME_4D, "bad/scan.mha": FilterReason.UNSUPPORTED_TYPE}
    assert cohort.filter_report.kept_rows == 12
    assert cohort.filter_report.counts[FilterReason.VOLUME_4D] == 1


_CELLS = st.sampled_from(["0", "1", "2", "", "x", "1.0"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "", "c"]), st.sampled_from(["xray", "ct", "MR", ""]),
                               _CELLS, st.sampled_from(["img/1.png", "img/2.png", "../o.png", "img/none.png", ""]),
                               st.sampled_from(["", "3", "x"])), max_size=12))
def test_every_manifest_row_is_kept_or_counted_once(tmp_path_factory: pytest.TempPathFactory,
                                                    rows: list[tuple[str, str, str, str, str]]) -> None:
    folder = tmp_path_factory.mktemp("m")
    write_image(folder / "img" / "1.png", seed=1)
    write_image(folder / "img" / "2.png", seed=2)
    manifest = write_manifest(folder, [entry(p, m, lab, path, offset=o) for p, m, lab, path, o in rows],
                              images=False)
    cohort = load_cohort(manifest, ImageCache(folder / "cache", 8))
    report = cohort.filter_report
    assert report.total_rows == len(rows) == report.kept_rows + sum(report.counts.values())
    lines = sorted([s.line for s in report.skipped] + [r.line for r in cohort.records])
    assert lines == list(range(2, len(rows) + 2))  # each line once: kept or skipped, never both
    assert len({r.image_id for r in cohort.records}) == len(cohort.records)
    for record in cohort.records:
        assert record.label in (0, 1) and record.patient_id and (folder / record.image_id).is_file()


def test_a_column_named_twice_is_refused_naming_line_1_and_the_column(tmp_path: Path, cache: ImageCache) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    manifest = folder / "manifest.csv"
    manifest.write_text("patient_id,modality,label,path,label\np1,xray,1,a.png,0\n", encoding="utf-8")
    with pytest.raises(MetadataError, match=r"manifest\.csv, line 1: column\(s\) named twice: label"):
        load_cohort(manifest, cache)


@pytest.mark.parametrize("name", ["   ", "\t", "x\x1bray"])
def test_a_blank_or_unprintable_modality_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="modality name may not"):
        CohortSettings(target_modality=name)
