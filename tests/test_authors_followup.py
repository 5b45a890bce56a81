"""The packaged `authors-followup` profile end to end on a generated cohort: k-fold runs, the claims, teacher
head-room recomputed from the teachers themselves, and the gate beside section 8 in evidence and report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import load_settings
from benchmark.data.synthetic import write_medical_cohort, write_synthetic_cohort
from benchmark.evidence.rules import MONTE_CARLO, monte_carlo_comparison
from benchmark.experiment.matrix import load_profile
from benchmark.experiment.store import ResultsStore
from benchmark.experiment.study import RunRequest, Study, run_profile
from benchmark.methods.training import forward_all, positive_scores
from benchmark.report.render import write_store_outputs
from benchmark.schemas import RegimeName
from tests.conftest import claim_count

REPO = Path(__file__).resolve().parent.parent
FOLDS, SEEDS = 3, [7, 8]
SETTINGS = f"""[data]
image_size = 16
[splits]
monte_carlo_resamples = 3
monte_carlo_val_patients = 3
kfold_folds = {FOLDS}
kfold_seeds = {SEEDS}
"""
CONTROLS = ["student-only", "late-fusion", "same-modality-kd", "plain-ct-kd"]


@pytest.fixture(scope="module")
def followup(tmp_path_factory: pytest.TempPathFactory) -> RunRequest:
    root = tmp_path_factory.mktemp("followup")
    settings = root / "settings.toml"
    settings.write_text(SETTINGS)
    request = RunRequest(cohort=write_synthetic_cohort(root / "data", size=48), profile="authors-followup",
                         out=root / "store", workers=2, settings_path=settings, cache_root=root / "cache",
                         progress=False)
    outcome = run_profile(request)
    assert outcome.failures == {} and outcome.executed == outcome.total
    write_store_outputs(request.out)
    return request


def test_the_profile_is_the_seeds_controls_and_the_candidate_on_kfold_and_monte_carlo() -> None:
    profile = load_profile("authors-followup")
    assert profile.candidates == ["ct-confidence-gated"]
    assert [(b.configurations, b.regimes) for b in profile.blocks] == [
        (CONTROLS, [RegimeName.PAIRED_FIXED, RegimeName.PAIRED_MONTE_CARLO, RegimeName.PAIRED_KFOLD])]


def test_every_configuration_runs_on_the_same_folds(followup: RunRequest) -> None:
    records = ResultsStore(followup.out).load_all()
    kfold = [r for r in records if r.spec.regime == RegimeName.PAIRED_KFOLD]
    folds = {name: {r.spec.split.split_id for r in kfold if name in r.spec.names}
             for name in [*CONTROLS, "ct-confidence-gated"]}
    assert len(next(iter(folds.values()))) == FOLDS * len(SEEDS)
    assert all(ids == folds["student-only"] for ids in folds.values())
    assert {r.spec.seed for r in kfold} == set(SEEDS)


def test_the_claims_hold_on_the_store(followup: RunRequest) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--results", str(followup.out), "-q",
                             "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and f"{claim_count()} passed" in result.stdout, result.stdout[-3000:]


def test_the_kfold_claim_catches_a_fold_moved_to_another_repeat(followup: RunRequest, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(followup.out, copy)
    for path in sorted((copy / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if record["spec"]["regime"] == "paired-kfold" and record["spec"]["split"]["index"] == 0:
            record["spec"]["split"]["index"] = FOLDS  # repeat 0's first fold now claims to be repeat 1's
            path.write_text(json.dumps(record))
            break
    result = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--results", str(copy), "-q", "-p",
                             "no:cacheprovider", "-k", "claim2_every_kfold"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout[-3000:]


def test_a_teachers_stored_validation_scores_are_its_predictions_on_the_matched_ct(followup: RunRequest) -> None:
    record = next(r for r in ResultsStore(followup.out).load_all()
                  if "plain-ct-kd" in r.spec.names and r.spec.regime == MONTE_CARLO)
    settings = load_settings(followup.settings_path)
    engine = Study.of_cohort(followup.cohort, settings, followup.cache_root).engine(followup.out / "teachers")
    teacher = engine.teacher_for(record.spec.configuration, record.spec.split)
    val = engine.prepared.manifests["paired"].records_of(record.spec.split.val_patients)
    inputs = engine.inputs_for(record.spec.configuration, val)
    with torch.no_grad():
        scores = positive_scores(forward_all(teacher.model, inputs["ct"]).logits).numpy()
    stored = record.teacher.validation_predictions
    assert [p.image_id for p in stored] == [p.image_id for p in record.predictions]
    np.testing.assert_allclose([p.score for p in stored], scores, rtol=0, atol=1e-12)


def test_the_headroom_is_the_teacher_against_student_only_by_section_8s_rule(followup: RunRequest) -> None:
    evidence = json.loads((followup.out / "evidence.json").read_text())
    records = ResultsStore(followup.out).load_all()
    (row,) = evidence["headroom"]
    assert row["configurations"] == ["plain-ct-kd", "ct-confidence-gated"]
    # recomputed by hand: per resample, the teacher's BA from its stored scores minus student-only's mean BA
    student = monte_carlo_comparison(records, "student-only", "student-only")
    teacher_ba = {}
    for r in records:
        if r.spec.regime == MONTE_CARLO and r.teacher is not None and r.teacher.validation_predictions:
            cases = r.teacher.validation_predictions
            sens = np.mean([p.score >= 0.5 for p in cases if p.label == 1])
            spec = np.mean([p.score < 0.5 for p in cases if p.label == 0])
            teacher_ba[r.val_hash] = (sens + spec) / 2
    expected = np.mean([teacher_ba[d.val_hash] - d.a_balanced_accuracy for d in student.resamples])
    assert row["result"]["monte_carlo"]["mean_d_balanced_accuracy"] == pytest.approx(expected)
    assert row["result"]["status"] in ("supported", "not supported")
    assert ("beats student-only" in row["statement"]) == (row["result"]["status"] == "supported")


def test_the_report_shows_headroom_before_the_hypotheses_and_the_gate_beside_section_8(followup: RunRequest) -> None:
    html = (followup.out / "report.html").read_text()
    evidence = json.loads((followup.out / "evidence.json").read_text())
    assert html.index('id="headroom"') < html.index('id="transfer-hypotheses"') < html.index('id="gate"')
    shown = {v["comparison"] for v in evidence["gate"]["verdicts"]}
    assert shown >= {"H1", "H2", "H3", *(f"ct-confidence-gated vs {c}" for c in CONTROLS)}
    for verdict in evidence["gate"]["verdicts"]:
        assert f'data-gate-outcome="{verdict["comparison"]}">{verdict["outcome"]}<' in html


@pytest.mark.parametrize("corrupt", ["gate", "headroom"])
def test_claim6_catches_a_gate_outcome_or_headroom_status_its_rule_does_not_give(followup: RunRequest,
                                                                                  tmp_path: Path, corrupt: str) -> None:
    copy = tmp_path / "store"
    shutil.copytree(followup.out, copy)
    evidence = json.loads((copy / "evidence.json").read_text())
    if corrupt == "gate":
        verdict = evidence["gate"]["verdicts"][0]
        verdict["outcome"] = "fails" if verdict["outcome"] == "passes" else "passes"
    else:
        result = evidence["headroom"][0]["result"]
        result["status"] = "not supported" if result["status"] == "supported" else "supported"
    (copy / "evidence.json").write_text(json.dumps(evidence))
    result = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--results", str(copy), "-q", "-p",
                             "no:cacheprovider", "-k", "claim6_teacher_headroom"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout[-3000:]


def test_the_profile_runs_on_3d_privileged_volumes_read_as_three_slices(tmp_path: Path) -> None:
    cohort = write_medical_cohort(tmp_path / "data", size=24, ct_volumes="all")
    settings = tmp_path / "settings.toml"
    settings.write_text(SETTINGS + '[cohort.readers]\nprivileged_slices = "middle-three-axial"\n')
    request = RunRequest(cohort=cohort, profile="authors-followup", out=tmp_path / "store", workers=2,
                         settings_path=settings, cache_root=tmp_path / "cache", progress=False)
    outcome = run_profile(request)
    assert outcome.failures == {} and outcome.executed == outcome.total
    write_store_outputs(request.out)
    teachers = [json.loads(p.read_text()) for p in (request.out / "teachers").glob("*/*.json")]
    channels = {(t["modality"], t["network"]["in_channels"]) for t in teachers}
    assert channels == {("ct", 3), ("xray", 1)}
    result = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--results", str(request.out), "-q",
                             "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and f"{claim_count()} passed" in result.stdout, result.stdout[-3000:]
    evidence = json.loads((request.out / "evidence.json").read_text())
    assert evidence["headroom"] and evidence["gate"]["verdicts"]
