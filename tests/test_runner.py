"""The runner end to end on a synthetic cohort: stored runs, summary, resume after kill -9."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.data.synthetic import write_synthetic_cohort
from benchmark.errors import ConfigError, StoreError
from benchmark.evidence.summary import summary_frame
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import ResultsStore
from benchmark.experiment.study import RunRequest, parallelism, run_profile


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_cohort(tmp_path_factory.mktemp("synthetic") / "data", size=48)


@pytest.fixture(scope="module")
def small_settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "settings.toml"
    path.write_text("[data]\nimage_size = 32\n")
    return path


@pytest.fixture(scope="module")
def smoke_store(synthetic_root: Path, small_settings: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("smoke-out")
    cache = tmp_path_factory.mktemp("cache")
    request = RunRequest(cohort=synthetic_root, profile="smoke", out=out, workers=2, settings_path=small_settings,
                         cache_root=cache, progress=False)
    return request, run_profile(request)


def test_the_smoke_profile_stores_every_run(smoke_store) -> None:
    request, outcome = smoke_store
    store = ResultsStore(request.out)
    assert outcome.failures == {} and outcome.executed == outcome.total > 0
    assert store.finished_ids() == set(store.manifest().run_ids)


def test_a_stored_run_holds_everything_needed_to_trace_and_recompute_it(smoke_store) -> None:
    request, _ = smoke_store
    store = ResultsStore(request.out)
    manifest = store.manifest()
    for record in store.load_all():
        assert record.val_hash == record.spec.split.val_hash
        assert record.data.same_data(manifest.data) and record.code_version == manifest.code_version
        assert record.metrics == compute_metrics(record.predictions)
        assert {p.patient_id for p in record.predictions} == set(record.spec.split.val_patients)
        assert not set(record.train_patients) & set(record.spec.split.val_patients)
        if record.teacher is not None:
            assert not set(record.teacher.training_patients) & set(record.spec.split.val_patients)
        assert record.timings["total"] > 0 and record.threads >= 1


def test_a_rerun_skips_every_finished_run(smoke_store) -> None:
    request, outcome = smoke_store
    again = run_profile(request)
    assert (again.skipped, again.executed) == (outcome.total, 0)


def test_summary_has_a_row_per_configuration_and_regime_with_support(smoke_store) -> None:
    request, _ = smoke_store
    records = ResultsStore(request.out).load_all()
    summary = summary_frame(records)
    expected = {(n, r.spec.regime) for r in records for n in r.spec.names}
    assert set(zip(summary["configuration"], summary["regime"], strict=True)) == expected
    row = summary[(summary.configuration == "plain-ct-kd") & (summary.regime == "paired-monte-carlo")].iloc[0]
    runs = [r for r in records if "plain-ct-kd" in r.spec.names and r.spec.regime == "paired-monte-carlo"]
    assert row["runs"] == len(runs) and row["val_images_total"] == sum(r.metrics.cases for r in runs)
    assert row["balanced_accuracy_mean"] == pytest.approx(sum(r.metrics.balanced_accuracy for r in runs) / len(runs))


def test_a_store_of_other_data_is_refused(smoke_store, tmp_path: Path, small_settings: Path) -> None:
    request, _ = smoke_store
    other = write_synthetic_cohort(tmp_path / "other", size=48, seed=5)
    with pytest.raises(StoreError, match="computed on other data"):
        run_profile(RunRequest(cohort=other, profile="smoke", out=request.out, settings_path=small_settings,
                               cache_root=tmp_path / "cache", progress=False))


def test_a_killed_run_loses_only_runs_in_flight_and_a_rerun_finishes(synthetic_root: Path, small_settings: Path,
                                                                   tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        '[profiles.slow]\ndescription = "slow enough to kill"\ntraining = { epochs = 12 }\n'
        'teacher_training = { epochs = 2 }\nsettings = { splits = { monte_carlo_resamples = 4, '
        'monte_carlo_val_patients = 3 } }\n[[profiles.slow.blocks]]\nname = "b"\npurpose = "p"\n'
        'configurations = ["student-only", "plain-ct-kd", "late-fusion"]\n'
        'regimes = ["paired-fixed", "paired-monte-carlo"]\n')
    out = tmp_path / "out"
    command = [sys.executable, "-m", "benchmark.cli", "run", "--data", str(synthetic_root), "--profile", "slow",
               "--matrix", str(matrix), "--config", str(small_settings), "--out", str(out), "--workers", "1",
               "--cache", str(tmp_path / "cache"), "--quiet"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = out / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(runs.glob("*.json"))) < 3:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survivors = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    total = len(ResultsStore(out).manifest().run_ids)
    assert 3 <= len(survivors) < total

    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"{len(survivors)} already stored, {total - len(survivors)} run now, 0 failed" in finished.stdout
    assert len(list(runs.glob("*.json"))) == total and not list(runs.glob(".*.tmp"))
    assert all((runs / name).read_bytes() == content for name, content in survivors.items())
    assert not pd.read_csv(out / "summary.csv").empty


def _prediction_bits(record) -> list[tuple[str, str, float]]:
    return [(p.patient_id, p.image_id, p.score) for p in record.predictions]


@pytest.fixture
def copied_store(smoke_store, tmp_path: Path):
    """A copy of the finished smoke store (teachers included) and a request that resumes into it."""
    request, _ = smoke_store
    out = tmp_path / "copy"
    shutil.copytree(request.out, out)
    return dataclasses.replace(request, out=out)


def test_threads_come_from_the_request_never_from_the_work_left() -> None:
    cpus = os.cpu_count() or 1
    assert parallelism(2) == (2, max(1, cpus // 2))
    assert parallelism(1) == (1, cpus)
    assert parallelism(2, threads=3) == (2, 3)


@pytest.mark.parametrize("workers", [0, -1])
def test_fewer_than_one_worker_is_an_error(workers: int) -> None:
    with pytest.raises(ConfigError, match=f"--workers must be at least 1, not {workers}"):
        parallelism(workers)


def test_a_resume_with_one_run_left_reproduces_the_uninterrupted_run_bit_for_bit(copied_store) -> None:
    store = ResultsStore(copied_store.out)
    victim = sorted(store.finished_ids())[0]
    original = store.load(victim)
    store.run_path(victim).unlink()
    outcome = run_profile(copied_store)
    assert (outcome.executed, outcome.failures) == (1, {})
    again = store.load(victim)
    assert again.threads == original.threads
    assert _prediction_bits(again) == _prediction_bits(original)
    assert again.metrics == original.metrics


def test_a_truncated_run_record_is_set_aside_and_computed_again(copied_store) -> None:
    store = ResultsStore(copied_store.out)
    victim = sorted(store.finished_ids())[-1]
    original = store.load(victim)
    path = store.run_path(victim)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match=f"{victim}.json: not a valid run record"):
        store.load_all()
    outcome = run_profile(copied_store)
    assert outcome.set_aside == [path.with_name(path.name + ".corrupt")]
    assert outcome.executed == 1 and outcome.failures == {}
    assert path.with_name(path.name + ".corrupt").read_bytes() == original.model_dump_json().encode()[:100]
    assert _prediction_bits(store.load(victim)) == _prediction_bits(original)


def test_a_full_disk_lists_every_run_not_stored_and_keeps_what_was_stored(
        copied_store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import benchmark.atomic

    store = ResultsStore(copied_store.out)
    removed = sorted(store.finished_ids())[:4]
    for run_id in removed:
        store.run_path(run_id).unlink()
    real_mkstemp = benchmark.atomic.tempfile.mkstemp
    written: list[str] = []

    def filling_disk(*args, **kwargs):
        if Path(kwargs["dir"]).name == "runs":
            if len(written) >= 1:
                raise OSError(errno.ENOSPC, "No space left on device", str(Path(kwargs["dir"]) / ".x.tmp"))
            written.append(kwargs["prefix"])
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(benchmark.atomic.tempfile, "mkstemp", filling_disk)
    code = main(["run", "--data", str(copied_store.cohort), "--profile", "smoke", "--out", str(copied_store.out),
                 "--config", str(copied_store.settings_path), "--cache", str(copied_store.cache_root),
                 "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("FAILED ") == 3 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"ctxray-bench: error: {copied_store.out}: storing stopped: "
                                                   f"no space left on {store.runs_dir} (1 run(s) stored); ")
    assert len(store.load_all()) == len(store.manifest().run_ids) - 3  # what was stored still loads
    assert not list(store.runs_dir.glob(".*.tmp"))
    monkeypatch.undo()
    assert run_profile(copied_store).executed == 3


def test_a_store_of_other_images_names_the_hash_that_differs(smoke_store, tmp_path: Path,
                                                              synthetic_root: Path) -> None:
    request, _ = smoke_store
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    image = sorted((other / "images").iterdir())[0]
    image.write_bytes((sorted((other / "images").iterdir())[1]).read_bytes())
    with pytest.raises(StoreError, match=r"kept-image list sha256 \w+\.\.\. stored, \w+\.\.\. now\)") as caught:
        run_profile(dataclasses.replace(request, cohort=other, cache_root=tmp_path / "cache"))
    assert "metadata.csv sha256" not in str(caught.value)


def test_a_resume_with_another_thread_count_says_its_bits_can_differ(copied_store,
                                                                      capsys: pytest.CaptureFixture) -> None:
    store = ResultsStore(copied_store.out)
    stored_threads = store.load(sorted(store.finished_ids())[0]).threads
    store.run_path(sorted(store.finished_ids())[0]).unlink()
    code = main(["run", "--data", str(copied_store.cohort), "--profile", "smoke", "--out", str(copied_store.out),
                 "--config", str(copied_store.settings_path), "--cache", str(copied_store.cache_root),
                 "--workers", "1", "--threads", str(stored_threads + 1), "--quiet"])
    assert code == 0
    assert (f"the runs already stored used {stored_threads} thread(s) per worker, the runs of this resume "
            f"{stored_threads + 1}") in capsys.readouterr().err
