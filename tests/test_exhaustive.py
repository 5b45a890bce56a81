"""The exhaustive paired regime in a profile: built by the driver and every worker, run, stored and reported."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import Settings
from benchmark.data.imaging import ImageCache
from benchmark.data.pipeline import prepare_data
from benchmark.data.synthetic import write_synthetic_cohort
from benchmark.errors import ConfigError
from benchmark.evidence.summary import aggregate
from benchmark.experiment.matrix import EXHAUSTIVE_REGIME, load_profile, optional_regimes
from benchmark.experiment.store import ResultsStore
from benchmark.experiment.study import RunRequest, Study, run_profile
from benchmark.experiment.worker import ensure_worker
from benchmark.schemas import CohortSummary

# The synthetic cohort has 6 positive and 3 negative paired patients: 3 x C(6, 2) = 45 admissible sets of k = 3.
ADMISSIBLE, SAMPLE, SEED = 45, 4, 2000
MATRIX = f"""
[profiles.exh]
description = "exhaustive regime test"
settings = {{ splits = {{ monte_carlo_val_patients = 3, exhaustive_max_sets = {SAMPLE} }} }}
training = {{ epochs = 1 }}
teacher_training = {{ epochs = 1 }}

[[profiles.exh.blocks]]
name = "tier-1-exhaustive"
purpose = "students with and without a CT teacher on the exhaustive regime"
configurations = ["student-only", "plain-ct-kd", "late-fusion"]
regimes = ["paired-exhaustive"]
"""


@pytest.fixture(scope="module")
def exhaustive_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("exhaustive")
    data = write_synthetic_cohort(root / "data", size=48)
    settings = root / "settings.toml"
    settings.write_text("[data]\nimage_size = 32\n")
    matrix = root / "matrix.toml"
    matrix.write_text(MATRIX)
    request = RunRequest(cohort=data, profile="exh", out=root / "store", workers=2, settings_path=settings,
                         matrix_path=matrix, cache_root=root / "cache", progress=False)
    return request, run_profile(request)


def _regime(request: RunRequest):
    return next(r for r in ResultsStore(request.out).manifest().regimes if r.name == EXHAUSTIVE_REGIME)


def test_a_profile_with_an_exhaustive_block_runs_to_a_complete_store(exhaustive_run) -> None:
    request, outcome = exhaustive_run
    store = ResultsStore(request.out)
    records = store.load_all()
    assert outcome.failures == {} and outcome.executed == outcome.total == SAMPLE * 3
    assert store.finished_ids() == set(store.manifest().run_ids)
    assert {r.spec.regime for r in records} == {EXHAUSTIVE_REGIME}
    assert {r.spec.split.split_id for r in records} == {s.split_id for s in _regime(request).splits}
    assert all(r.teacher is not None and r.teacher.modality == "ct" for r in records if "plain-ct-kd" in r.spec.names)


def test_the_sample_has_the_stated_size_and_is_the_same_on_a_rerun(exhaustive_run) -> None:
    request, outcome = exhaustive_run
    regime = _regime(request)
    assert (len(regime.splits), regime.admissible_sets, regime.sampled, regime.sample_seed) == (
        SAMPLE, ADMISSIBLE, True, SEED)
    assert f"sample of {SAMPLE} of the {ADMISSIBLE} admissible" in regime.role
    again = run_profile(dataclasses.replace(request))
    assert (again.skipped, again.executed, again.failures) == (outcome.total, 0, {})
    assert _regime(request).splits == regime.splits


def test_each_exhaustive_split_trains_with_its_own_seed(exhaustive_run) -> None:
    request, _ = exhaustive_run
    regime = _regime(request)
    assert [regime.seeds_for(s) for s in regime.splits] == [[SEED + i] for i in range(SAMPLE)]
    for record in ResultsStore(request.out).load_all():
        assert record.spec.seed == record.spec.split.seed == SEED + record.spec.split.index
        assert len(record.spec.split.val_patients) == 3


def test_every_admissible_set_is_run_when_there_are_few(exhaustive_run, tmp_path: Path) -> None:
    request, _ = exhaustive_run
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(MATRIX.replace(f"exhaustive_max_sets = {SAMPLE}", "exhaustive_max_sets = 100"))
    study = Study.plan(dataclasses.replace(request, matrix_path=matrix))
    specs = study.specs
    regime = next(r for r in study.manifest().regimes if r.name == EXHAUSTIVE_REGIME)
    assert (len(regime.splits), regime.sampled, regime.sample_seed) == (ADMISSIBLE, False, None)
    assert len({s.val_hash for s in regime.splits}) == ADMISSIBLE and len(specs) == 3 * ADMISSIBLE


def test_workers_train_on_the_drivers_exhaustive_regime_without_preparing_the_cohort(exhaustive_run) -> None:
    request, _ = exhaustive_run
    study = Study.plan(request)
    context = study.worker_context(study.manifest(), request.out / "teachers", "cpu", 1)
    shipped = pickle.loads(pickle.dumps(context))  # what a local worker receives
    engine = ensure_worker(shipped)
    rebuilt = next(r for r in engine.prepared.regimes if r.name == EXHAUSTIVE_REGIME)  # type: ignore[attr-defined]
    assert rebuilt == _regime(request)
    assert pickle.loads(pickle.dumps(dataclasses.replace(context, cohort=context.cohort.with_payload()))).cohort.load(
        ).regimes == study.prepared.regimes  # what Ray ships: the bytes themselves


def test_the_report_renders_the_exhaustive_table(exhaustive_run) -> None:
    from benchmark.report.render import build_report_data, numbers_in_report, render_report

    request, _ = exhaustive_run
    store = ResultsStore(request.out)
    records = store.load_all()
    data = build_report_data(store)
    assert [row.configuration for row in data.exhaustive] == ["student-only", "plain-ct-kd", "late-fusion"]
    html = render_report(data)
    assert 'id="table-exhaustive"' in html
    assert re.search(rf"A seeded sample of {SAMPLE} of the {ADMISSIBLE} admissible\s+validation sets \(seed {SEED}\)",
                     html)
    section = html[html.index('id="exhaustive"'):html.index('<section id="stress">')]
    shown = [n for n in numbers_in_report(section) if n.attributes.get("data-metric") == "balanced_accuracy"
             and n.attributes.get("data-stat") == "mean"]
    assert len(shown) == 3
    for number in shown:
        ids = number.attributes["data-runs"].split()
        runs = [r for r in records if r.spec.run_id in ids]
        assert len(runs) == SAMPLE and {r.spec.regime for r in runs} == {EXHAUSTIVE_REGIME}
        row = aggregate(runs, runs[0].spec.name, EXHAUSTIVE_REGIME)
        assert row is not None and math.isclose(float(number.text), row.stats["balanced_accuracy"].mean, abs_tol=5e-4)


def test_a_block_on_an_exhaustive_regime_that_cannot_be_drawn_says_why(exhaustive_run, tmp_path: Path) -> None:
    request, _ = exhaustive_run
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(MATRIX.replace("monte_carlo_val_patients = 3", "monte_carlo_val_patients = 7"))
    with pytest.raises(ConfigError, match="regime 'paired-exhaustive' .* not available on this cohort: .*k = 7"):
        Study.plan(dataclasses.replace(request, matrix_path=matrix))


def test_the_packaged_exhaustive_profile_is_tier_1_on_a_stated_sample() -> None:
    profile = load_profile("exhaustive")
    assert optional_regimes(profile) == {EXHAUSTIVE_REGIME} and not optional_regimes(load_profile("paper"))
    assert optional_regimes(load_profile("authors-followup")) == {"paired-kfold"}
    assert [b.regimes for b in profile.blocks] == [["paired-exhaustive"]]
    assert profile.blocks[0].configurations == ["student-only", "late-fusion", "same-modality-kd", "plain-ct-kd"]
    stated = profile.apply_settings(Settings()).splits.exhaustive_max_sets
    assert f"sample of {stated} " in profile.description


def test_cohorts_exhaustive_still_lists_the_regime(exhaustive_run, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    request, _ = exhaustive_run
    target = tmp_path / "cohorts.json"
    assert main(["cohorts", "--data", str(request.cohort), "--config", str(request.settings_path), "--cache",
                 str(request.cache_root), "--exhaustive", "--json", str(target)]) == 0
    assert "paired-exhaustive" in capsys.readouterr().out
    summary = CohortSummary.model_validate(json.loads(target.read_text()))
    regime = next(r for r in summary.regimes if r.name == EXHAUSTIVE_REGIME)
    # default k = 5: 3 negatives x C(6, 4) positives = 45 sets, under the default cap of 500, so all are listed
    assert (regime.splits, regime.admissible_sets, regime.sampled) == (45, 45, False)
    assert sum(s.regime == EXHAUSTIVE_REGIME for s in summary.splits) == 45


def test_prepare_data_without_exhaustive_has_no_exhaustive_regime(exhaustive_run) -> None:
    request, _ = exhaustive_run
    settings = Settings.model_validate({"data": {"image_size": 32}})
    prepared = prepare_data(request.cohort, settings, ImageCache(request.cache_root, 32))
    assert EXHAUSTIVE_REGIME not in {r.name for r in prepared.regimes}
