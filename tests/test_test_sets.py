"""Held-out and external test sets (PROTOCOL.md section 13): what they hold, what is refused, and that no model or
teacher trains on them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmark.config import Settings
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import cohort_summary, prepare_data
from benchmark.data.test_sets import ExternalSpec, parse_external, scoring_identity
from benchmark.errors import LeakageError, StoreError, TestSetError
from benchmark.experiment.study import build_engine
from benchmark.methods.configurations import load_configurations
from benchmark.methods.engine import Engine
from benchmark.schemas import FilterReason
from tests.conftest import paired_cohort_rows, write_image


def _settings(held_out: bool = True) -> Settings:
    return Settings.model_validate({"data": {"image_size": 16}, "test_sets": {"held_out": held_out},
                                    "splits": {"monte_carlo_resamples": 2, "monte_carlo_val_patients": 3}})


def _external(folder: Path, rows: list[tuple[str, str, int, str]], *, seed: int = 500) -> Path:
    """A cohort manifest (patient, modality, label, file) with fresh random images; returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "modality", "label", "path"])
        for n, (patient, modality, label, path) in enumerate(rows):
            writer.writerow([patient, modality, label, path])
            if not (folder / path).exists():
                write_image(folder / path, seed=seed + n)
    return folder / "manifest.csv"


@pytest.fixture
def cohort_root(write_cohort) -> Path:  # noqa: ANN001
    """6 positive and 3 negative paired patients, 2 CT-only and 3 X-ray-only patients (xr0, xr1, xr2)."""
    return write_cohort(paired_cohort_rows())


def test_the_held_out_set_holds_the_target_patients_outside_the_paired_cohort(cohort_root: Path, cache) -> None:
    prepared = prepare_data(cohort_root, _settings(), cache)
    held = prepared.test_sets[0]
    paired = set(prepared.manifests["paired"].patient_labels())
    assert held.name == held.kind == "held-out"
    assert {c.patient_id for c in held.cases} == {"xr0", "xr1", "xr2"}
    assert not paired & {c.patient_id for c in held.cases}
    assert (held.support.images, held.support.patients, held.support.negative_patients) == (3, 3, 2)
    summary = cohort_summary(prepared)
    assert summary.test_sets[0].support == held.support and summary.test_sets[0].cases_sha256 == held.cases_sha256


def test_the_held_out_set_is_switched_off_by_a_setting_and_says_so(cohort_root: Path, cache) -> None:
    prepared = prepare_data(cohort_root, _settings(held_out=False), cache)
    assert prepared.test_sets == ()
    assert "held_out = false" in prepared.test_set_notes[0]


def test_a_held_out_image_showing_a_training_picture_is_left_out_and_listed(write_cohort, cache) -> None:  # noqa: ANN001
    rows = paired_cohort_rows()
    root = write_cohort(rows)
    shutil.copy(root / "images" / "x0-a.png", root / "images" / "xr0.png")  # xr0's X-ray is p0's, under another name
    prepared = prepare_data(root, _settings(), cache)
    held = prepared.test_sets[0]
    assert "xr0" not in {c.patient_id for c in held.cases}
    [excluded] = held.excluded
    assert excluded.image_id == "images/xr0.png" and "images/x0-a.png" in excluded.reason


def test_an_external_manifest_is_read_by_the_cohorts_filter_and_keeps_the_target_modality(
        cohort_root: Path, cache, tmp_path: Path) -> None:
    manifest = _external(tmp_path / "site2", [("S1", "xray", 1, "a.png"), ("S2", "xray", 0, "b.png"),
                                              ("S2", "ct", 0, "c.png"), ("S3", "xray", 7, "d.png")])
    prepared = prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("site2", manifest)])
    external = prepared.test_sets[1]
    assert (external.name, external.kind) == ("site2", "external")
    assert [c.patient_id for c in external.cases] == ["S1", "S2"]
    counts = external.filter_report.counts
    assert counts[FilterReason.OTHER_MODALITY] == 1 and counts[FilterReason.INVALID_LABEL] == 1
    assert external.filter_report.kept_rows + sum(counts.values()) == external.filter_report.total_rows


def test_an_external_set_sharing_a_patient_with_the_cohort_is_refused_in_one_line(
        cohort_root: Path, cache, tmp_path: Path) -> None:
    manifest = _external(tmp_path / "site2", [("S1", "xray", 1, "a.png"), ("p3", "xray", 1, "b.png")])
    with pytest.raises(TestSetError) as caught:
        prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("site2", manifest)])
    message = str(caught.value)
    assert f"{manifest}, line 3" in message and "'p3'" in message and "\n" not in message


def test_a_held_out_patient_counts_as_the_cohorts(cohort_root: Path, cache, tmp_path: Path) -> None:
    manifest = _external(tmp_path / "site2", [("xr1", "xray", 1, "a.png")])
    with pytest.raises(TestSetError, match="'xr1'"):
        prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("site2", manifest)])


def test_an_external_image_with_a_cohort_images_pixels_is_refused_whatever_its_format(
        cohort_root: Path, cache, tmp_path: Path) -> None:
    folder = tmp_path / "site2"
    folder.mkdir()
    pixels = np.asarray(Image.open(cohort_root / "images" / "c2-a.png"))  # a CT picture, saved again as TIFF
    Image.fromarray(pixels).save(folder / "copy.tif")
    manifest = _external(folder, [("S1", "xray", 1, "a.png"), ("S9", "xray", 0, "copy.tif")])
    with pytest.raises(TestSetError, match=r"line 3: .*'copy.tif' has the same decoded pixels as images/c2-a.png"):
        prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("site2", manifest)])


def test_two_external_sets_may_not_share_a_patient_or_a_name(cohort_root: Path, cache, tmp_path: Path) -> None:
    first = _external(tmp_path / "a", [("S1", "xray", 1, "a.png")])
    second = _external(tmp_path / "b", [("S1", "xray", 0, "b.png")], seed=900)
    with pytest.raises(TestSetError, match="external test set site2"):
        prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("site2", first),
                                                                 ExternalSpec("site3", second)])
    with pytest.raises(TestSetError, match="named twice"):
        prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("x", first), ExternalSpec("x", second)])


@pytest.mark.parametrize("text", ["site2", "=a.csv", "site 2=a.csv", "held-out=a.csv", "a="])
def test_a_bad_external_argument_says_what_is_wrong(text: str) -> None:
    with pytest.raises(TestSetError, match="--external"):
        parse_external(text)


def test_an_external_set_that_keeps_no_image_is_refused(cohort_root: Path, cache, tmp_path: Path) -> None:
    manifest = _external(tmp_path / "ct-only", [("S1", "ct", 1, "a.png")])
    with pytest.raises(TestSetError, match="keeps no image of the target modality"):
        prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("ct", manifest)])


def _engine(prepared, cache: ImageCache) -> Engine:  # noqa: ANN001
    return build_engine(prepared, Settings(), cache, None, "cpu")


def test_teachers_train_without_any_test_patient(cohort_root: Path, cache) -> None:
    prepared = prepare_data(cohort_root, _settings(), cache)
    engine = _engine(prepared, cache)
    configurations = load_configurations()
    split = next(r for r in prepared.regimes if r.name == "paired-monte-carlo").splits[0]
    xray = engine.teacher_request(configurations["same-modality-kd"], split)
    ct = engine.teacher_request(configurations["plain-ct-kd"], split)
    assert {r.patient_id for r in xray.records} == set(split.train_patients)  # the paired training patients only
    assert {r.patient_id for r in ct.records} == set(split.train_patients) | {"ct0", "ct1"}
    without = _engine(prepare_data(cohort_root, _settings(held_out=False), cache), cache)
    assert {r.patient_id for r in without.teacher_request(configurations["same-modality-kd"], split).records} == (
        set(split.train_patients) | {"xr0", "xr1", "xr2"})


def test_a_deployable_run_is_scored_on_every_test_case_from_xray_alone(cohort_root: Path, cache, tmp_path) -> None:
    manifest = _external(tmp_path / "site2", [("S1", "xray", 1, "a.png"), ("S2", "xray", 0, "b.png")])
    prepared = prepare_data(cohort_root, _settings(), cache, externals=[ExternalSpec("site2", manifest)])
    engine = _engine(prepared, cache)
    configurations = load_configurations()
    split = next(r for r in prepared.regimes if r.name == "paired-fixed").splits[0]
    output = engine.run(configurations["plain-ct-kd"], split, 42)
    assert set(output.tests) == {"held-out", "site2"}
    for test_set in prepared.test_sets:
        scored = output.tests[test_set.name]
        assert [p.image_id for p in scored.predictions] == [c.image_id for c in test_set.cases]
        assert scored.probe.ct_removed_max_abs_diff == scored.probe.ct_noise_max_abs_diff == 0.0
    assert engine.run(configurations["late-fusion"], split, 42).tests == {}


def test_scoring_refuses_a_run_whose_lineage_holds_a_test_patient(cohort_root: Path, cache) -> None:
    prepared = prepare_data(cohort_root, _settings(), cache)
    engine = _engine(prepared, cache)
    split = next(r for r in prepared.regimes if r.name == "paired-fixed").splits[0]
    fitted = engine.fit(load_configurations()["student-only"], split, 42)
    fitted.train_patients = (*fitted.train_patients, "xr1")
    with pytest.raises(LeakageError, match="test patient"):
        engine.score_tests(fitted)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positives=st.integers(4, 7), negatives=st.integers(2, 4), ct_only=st.integers(0, 2),
       xray_only=st.integers(0, 4))
def test_no_test_patient_is_in_any_split_or_teacher_over_random_cohorts(
        tmp_path_factory, write_cohort, positives: int, negatives: int, ct_only: int, xray_only: int) -> None:  # noqa: ANN001
    root = write_cohort(paired_cohort_rows(positives, negatives, ct_only, xray_only),
                        name=f"c{positives}{negatives}{ct_only}{xray_only}")
    cache = ImageCache(tmp_path_factory.mktemp("cache"), size=16)
    prepared = prepare_data(root, _settings(), cache)
    tested = {c.patient_id for t in prepared.test_sets for c in t.cases}
    assert len(tested) == xray_only
    engine = _engine(prepared, cache)
    configurations = load_configurations()
    for regime in prepared.regimes:
        for split in regime.splits:
            if regime.manifest == "paired":
                assert not tested & (set(split.train_patients) | set(split.val_patients))
                for name in ("same-modality-kd", "plain-ct-kd"):
                    request = engine.teacher_request(configurations[name], split)
                    assert not tested & {r.patient_id for r in request.records}


def test_a_store_refuses_to_resume_with_other_test_sets(synthetic_store: Path) -> None:
    from benchmark.experiment.store import ResultsStore

    store = ResultsStore(synthetic_store)
    manifest = store.manifest()
    assert manifest.test_sets and scoring_identity(manifest.test_sets)
    with pytest.raises(StoreError, match="scored on test sets held-out"):
        store.open(manifest.model_copy(update={"test_sets": []}))


def test_run_refuses_an_external_set_sharing_a_patient_in_one_line_before_training(
        cohort_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    manifest = _external(tmp_path / "site2", [("p1", "xray", 1, "a.png")])
    out = tmp_path / "out"
    code = main(["run", "--data", str(cohort_root), "--profile", "smoke", "--out", str(out), "--cache",
                 str(tmp_path / "c"), "--external", f"site2={manifest}", "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and "shares patient 'p1'" in error
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())


def test_report_refuses_an_external_file_the_store_was_not_scored_on(
        synthetic_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    manifest = _external(tmp_path / "site2", [("S1", "xray", 1, "a.png")])
    assert main(["report", "--results", str(synthetic_store), "--out", str(tmp_path / "r.html"),
                 "--external", f"site2={manifest}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "has no external test set 'site2'" in error


def test_cohorts_prints_the_test_sets_support(cohort_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    manifest = _external(tmp_path / "site2", [("S1", "xray", 1, "a.png"), ("S2", "xray", 0, "b.png")])
    assert main(["cohorts", "--data", str(cohort_root), "--cache", str(tmp_path / "c"),
                 "--external", f"site2={manifest}"]) == 0
    printed = capsys.readouterr().out
    held = next(line for line in printed.splitlines() if line.strip().startswith("held-out  held-out"))
    assert held.split()[2:5] == ["3", "3", "1"]  # images, patients, positive images
    assert any(line.strip().startswith("site2") and "external" in line for line in printed.splitlines())
