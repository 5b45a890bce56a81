"""Bring your own cohort: a generated DICOM/NIfTI cohort with a manifest goes through cohorts, run, the claims and
the report; the collection goes through its adapter unchanged (pinned against the dedicated loader's digests)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest

from benchmark.cli import main
from benchmark.config import CohortSettings, Settings, load_settings
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import image_cache, load_cohort, prepare_data
from benchmark.data.synthetic import write_medical_cohort, write_synthetic_cohort
from benchmark.experiment.store import ResultsStore
from benchmark.schemas import FilterReason, ReaderPolicy, RegimeName
from tests.collection_digest import collection_digests
from tests.conftest import claim_count

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "covid-chestxray-collection.json"
SMALL = "[data]\nimage_size = 32\n"


@pytest.fixture(scope="session")
def medical_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated DICOM/NIfTI cohort with two unreadable files in its manifest, run through the smoke profile by the
    command line: (manifest, store)."""
    root = tmp_path_factory.mktemp("own-cohort")
    recipe = root / "recipe.toml"
    recipe.write_text('layout = "medical"\n[spec]\npaired_patients = 10\nsize = 48\nseed = 3\n')
    assert main(["synthetic", "--recipe", str(recipe), "--out", str(root / "cohort")]) == 0
    manifest = root / "cohort" / "manifest.csv"
    (root / "cohort" / "broken.dcm").write_text("not DICOM at all\n" * 10)
    nibabel.save(nibabel.Nifti1Image(np.ones((4, 4, 3, 2), np.float32), np.eye(4)), root / "cohort" / "4d.nii.gz")
    with manifest.open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["pair000", "xray", "0", "broken.dcm", "0", "PA", ""],
                                      ["pair001", "ct", "0", "4d.nii.gz", "0", "Axial", ""]])
    (root / "settings.toml").write_text(SMALL)
    out = root / "store"
    code = main(["run", "--cohort", str(manifest), "--profile", "smoke", "--out", str(out), "--workers", "2",
                 "--config", str(root / "settings.toml"), "--cache", str(root / "cache"), "--quiet"])
    assert code == 0
    return manifest, out


def test_the_generated_cohort_mixes_dicom_and_nifti_as_declared(tmp_path: Path) -> None:
    manifest = write_medical_cohort(tmp_path / "c", paired_patients=4, ct_only_patients=0, xray_only_patients=0,
                                    size=24)
    cohort = load_cohort(manifest, ImageCache(tmp_path / "cache", 24))
    policies = " | ".join(use.policy for use in cohort.source.readers)
    assert {use.reader for use in cohort.source.readers} == {"pydicom", "nibabel"}
    for wording in ("dicom DX", "dicom CR", "MONOCHROME1 inverted", "intercept -1024", "axial slice 3 of 5"):
        assert wording in policies
    assert cohort.filter_report.kept_rows == cohort.filter_report.total_rows == 16


def test_a_generated_image_reads_back_as_the_pixels_it_was_made_from(tmp_path: Path) -> None:
    from benchmark.data.readers import read_image
    from benchmark.data.synthetic import SyntheticSpec, generate_images

    spec = SyntheticSpec(paired_patients=3, ct_only_patients=0, xray_only_patients=0, size=24)
    manifest = write_medical_cohort(tmp_path / "c", spec)
    with manifest.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for image, row in zip(generate_images(spec), rows, strict=True):
        array, _ = read_image(manifest.parent / row["path"])
        assert np.corrcoef(array.ravel(), image.pixels.ravel())[0, 1] > 0.999, row["path"]


def test_cohorts_names_the_manifest_its_hash_and_the_readers(medical_store: tuple[Path, Path],
                                                            capsys: pytest.CaptureFixture) -> None:
    manifest, _ = medical_store
    assert main(["cohorts", "--cohort", str(manifest), "--cache", str(manifest.parent.parent / "cache"),
                 "--config", str(manifest.parent.parent / "settings.toml"), "--list-skipped"]) == 0
    out = capsys.readouterr().out
    assert f"cohort manifest {manifest.resolve()}" in out and "manifest sha256" in out
    assert "by pydicom" in out and "by nibabel" in out
    assert "not_dicom" in out and "volume_4d" in out


def test_run_on_a_cohort_manifest_stores_its_source_and_skips_bad_files(medical_store: tuple[Path, Path]) -> None:
    manifest, out = medical_store
    stored = ResultsStore(out).manifest()
    assert stored.data.source == "manifest" and stored.data.location == str(manifest.resolve())
    source = stored.cohort.source
    assert source is not None and source.kind == "manifest" and source.reader_policy == ReaderPolicy()
    counts = stored.cohort.filter_report.counts
    assert counts[FilterReason.NOT_DICOM] == 1 and counts[FilterReason.VOLUME_4D] == 1


def test_the_claims_pass_on_the_store_of_a_cohort_manifest(medical_store: tuple[Path, Path]) -> None:
    _, out = medical_store
    done = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--results", str(out), "-q",
                           "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"{claim_count()} passed" in done.stdout


def test_the_report_names_the_cohort_its_hash_and_the_reader_policy(medical_store: tuple[Path, Path]) -> None:
    manifest, out = medical_store
    html = (out / "report.html").read_text(encoding="utf-8")
    stored = ResultsStore(out).manifest()
    assert f"Cohort manifest <code>{manifest.resolve()}</code>" in html
    assert stored.data.metadata_sha256 in html and 'id="reader-policy"' in html
    assert "nibabel" in html and "intercept -1024" in html and 'id="own-cohort"' in html


def test_another_reader_policy_is_other_data_for_dicom_and_nifti(tmp_path: Path) -> None:
    manifest = write_medical_cohort(tmp_path / "c", paired_patients=4, size=24)
    hashes = set()
    for volume in ("middle-axial", "mip-axial"):
        settings = Settings(data={"image_size": 24}, cohort={"readers": {"volume": volume}})
        prepared = prepare_data(manifest, settings, image_cache(settings, tmp_path / "cache"))
        hashes.add(prepared.cohort.image_list_sha256)
        assert any("maximum-intensity" in u.policy for u in prepared.cohort.source.readers) == (volume == "mip-axial")
    assert len(hashes) == 2


def test_the_reader_policy_does_not_change_a_png_cohort(tmp_path: Path) -> None:
    root = write_synthetic_cohort(tmp_path / "d", paired_patients=4, size=24)
    hashes = {load_cohort(root, ImageCache(tmp_path / "k", 16, ReaderPolicy(window=w))).image_list_sha256
              for w in ("voi", "minmax")}
    assert len(hashes) == 1


def test_collection_volumes_are_skipped_unless_included(tmp_path: Path) -> None:
    root = write_synthetic_cohort(tmp_path / "d", paired_patients=4, size=24)
    (root / "volumes").mkdir()
    volume = np.random.default_rng(0).normal(size=(24, 24, 5)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), root / "volumes" / "case.nii.gz")
    with (root / "metadata.csv").open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(["pair003", "0", "Pneumonia/Viral/COVID-19", "CT", "volumes", "case.nii.gz",
                                     "Axial"])
    skipped = load_cohort(root, ImageCache(tmp_path / "k", 16))
    assert skipped.filter_report.counts[FilterReason.VOLUME_NOT_2D] == 1
    included = load_cohort(root, ImageCache(tmp_path / "k", 16), CohortSettings(include_volumes=True))
    assert "volumes/case.nii.gz" in {r.image_id for r in included.records}
    assert included.filter_report.kept_rows == skipped.filter_report.kept_rows + 1


def test_the_collection_through_its_adapter_is_what_the_dedicated_loader_gave(real_data_root: Path) -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    settings = load_settings()
    for variant, optional in (("default", ()), ("exhaustive", (RegimeName.PAIRED_EXHAUSTIVE,))):
        digests = collection_digests(prepare_data(real_data_root, settings, image_cache(settings),
                                                  optional_regimes=optional))
        pinned = golden[variant]
        if digests["metadata_sha256"] != pinned["metadata_sha256"]:
            pytest.skip(f"{real_data_root}: not the copy the digests were pinned on (metadata.csv differs)")
        assert {k: v for k, v in digests.items() if pinned[k] != v} == {}, variant
