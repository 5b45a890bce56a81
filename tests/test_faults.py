"""Faults say what happened, in one line (issue 23 items 4 and 5): errors cross processes, a teacher's failure names
its cause, a full disk stops storing with 'no space left on PATH', a settings/profile conflict and a failed run are
one line each, and a loss that becomes NaN says where."""

from __future__ import annotations

import errno
import inspect
import os
import pickle
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.errors import CtxrayError, OutputError, TrainingError
from benchmark.experiment import study
from benchmark.experiment.worker import run_job
from benchmark.methods.losses import LossConfig, Objective, inverse_frequency_weights
from benchmark.methods.stacking import fit_stacked
from benchmark.methods.training import TrainingConfig, fit
from tests.test_stacking import CPU, STUDENT, _datasets, _networks

ARGUMENTS = {"path": "/data/cohort/manifest.csv", "message": "bad cell", "reason": "corrupt_image",
             "cause": "No space left on device"}


def _all_error_types() -> list[type[CtxrayError]]:
    found, todo = [], [CtxrayError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


@pytest.mark.parametrize("cls", _all_error_types(), ids=lambda c: c.__name__)
def test_every_error_type_survives_pickling_with_its_message_and_fields(cls: type[CtxrayError]) -> None:
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    error = cls(*[ARGUMENTS[n] for n in names if n in ARGUMENTS]) if "path" in names else cls("what went wrong")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls and str(again) == str(error)
    assert {k: getattr(again, k) for k in vars(error)} == vars(error)


def test_an_output_error_knows_a_full_disk_across_processes() -> None:
    full = pickle.loads(pickle.dumps(OutputError("/out/runs/x.json", "No space left on device", errno=errno.ENOSPC)))
    assert full.no_space and not OutputError("/out", "Permission denied", errno=errno.EACCES).no_space


class _InProcess:
    """An executor running each job here, at once (monkeypatch reaches it; workers are separate processes)."""

    def submit(self, context, kind, specs) -> Future:  # noqa: ANN001
        future: Future = Future()
        try:
            future.set_result(run_job(context, kind, specs))
        except Exception as exc:  # noqa: BLE001 - the pool would carry it to the driver the same way
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        """Nothing to stop."""


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(study, "make_executor", lambda *args, **kwargs: _InProcess())


def _run(tmp_path: Path, settings: str = "[data]\nimage_size = 32\n", *extra: str) -> int:
    from benchmark.data.synthetic import write_synthetic_cohort

    data = write_synthetic_cohort(tmp_path / "data", size=48)
    (tmp_path / "settings.toml").write_text(settings)
    return main(["run", "--data", str(data), "--profile", "smoke", "--out", str(tmp_path / "out"), "--config",
                 str(tmp_path / "settings.toml"), "--cache", str(tmp_path / "cache"), "--quiet", *extra])


def test_a_full_disk_under_the_teacher_store_stops_storing_in_one_line(
        tmp_path: Path, in_process: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.methods import teachers

    def full(target: Path, payload: bytes) -> None:
        raise OutputError(target, "cannot write: No space left on device", errno=errno.ENOSPC)

    monkeypatch.setattr(teachers, "write_atomically", full)
    assert _run(tmp_path, "[data]\nimage_size = 32\n[engine]\npath = \"per-run\"\n") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ctxray-bench: error: ") and "storing stopped: no space left on " in err[-1]
    assert str(tmp_path / "out" / "teachers") in err[-1]
    assert not any("BrokenProcessPool" in line or "Traceback" in line for line in err)


def test_a_teacher_that_fails_names_its_cause_on_each_dependent_run(
        tmp_path: Path, in_process: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.methods.teachers import TeacherStore

    original = TeacherStore.get_many

    def broken(self, requests, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if requests:
            raise RuntimeError("teacher weights diverged")
        return original(self, requests, *args, **kwargs)

    monkeypatch.setattr(TeacherStore, "get_many", broken)
    assert _run(tmp_path, "[data]\nimage_size = 32\n[engine]\npath = \"per-run\"\n") == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if "FAILED" in line]
    assert failed and all("its teacher failed to train: RuntimeError: teacher weights diverged" in line
                          for line in failed)


def test_a_failed_run_is_one_line_naming_configuration_split_and_cause(
        tmp_path: Path, in_process: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.experiment import worker

    def fails(spec, *args):  # noqa: ANN001, ANN002, ANN202
        raise ValueError(f"cannot record {spec.name}\nsecond line of the cause")

    monkeypatch.setattr(worker, "run_record", fails)
    assert _run(tmp_path) == 1
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert failed and "Traceback" not in err
    assert all(", seed " in line and "(" in line and "ValueError: cannot record" in line
               and "second line of the cause" in line for line in failed)


def test_a_settings_value_that_conflicts_with_the_profile_is_one_line(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "[splits]\nvalidation_negatives = 4\n") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "conflicts with profile 'smoke'" in err[0] and "validation_negatives = 4" in err[0]


class _NanAfter(Objective):
    """The protocol's objective, whose loss becomes NaN from the given step on (a diverging plugin)."""

    def __init__(self, labels: torch.Tensor, step: int) -> None:
        super().__init__(LossConfig(), inverse_frequency_weights(labels), has_teacher=False)
        self.calls, self.bad_from = 0, step

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loss, terms = super().forward(*args, **kwargs)
        self.calls += 1
        return (loss * float("nan") if self.calls >= self.bad_from else loss), terms


def test_a_loss_that_becomes_nan_says_epoch_and_step_on_the_per_run_path() -> None:
    [data] = _datasets(1)
    [model] = _networks(STUDENT, 1)
    with pytest.raises(TrainingError, match=r"^loss is NaN at epoch 2, step 1$"):
        fit(model, _NanAfter(data.labels, 4), data, TrainingConfig(epochs=3, batch_size=16), 7, CPU)


def test_a_loss_that_becomes_nan_says_which_run_epoch_and_step_on_the_stacked_path() -> None:
    datasets = _datasets(3)
    objectives = [Objective(LossConfig(), inverse_frequency_weights(d.labels), has_teacher=False) for d in datasets]
    objectives[1] = _NanAfter(datasets[1].labels, 2)
    with pytest.raises(TrainingError, match=r"^run 2 of 3: loss is NaN at epoch 1, step 2$"):
        fit_stacked(_networks(STUDENT, 3), objectives, datasets, TrainingConfig(epochs=2, batch_size=16),
                    [7, 8, 9], CPU)


def test_debug_adds_the_workers_traceback_under_each_failed_run(
        tmp_path: Path, in_process: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.experiment import worker

    def fails(spec, *args):  # noqa: ANN001, ANN002, ANN202
        raise ValueError(f"cannot record {spec.name}")

    monkeypatch.setattr(worker, "run_record", fails)
    assert _run(tmp_path, "[data]\nimage_size = 32\n", "--debug") == 1
    err = capsys.readouterr().err.splitlines()
    failed = [n for n, line in enumerate(err) if "FAILED" in line]
    assert failed and all("ValueError: cannot record" in err[n] and err[n + 1].startswith("Traceback")
                          for n in failed)
    assert any('in fails' in line for line in err)  # the frame that raised, in the worker


@pytest.mark.parametrize("path", ["per-run", "stacked"])
def test_a_run_whose_loss_becomes_nan_fails_in_one_line_saying_where(
        tmp_path: Path, in_process: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        path: str) -> None:
    original = Objective.forward

    def diverged(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        loss, terms = original(self, *args, **kwargs)
        return loss * float("nan"), terms

    monkeypatch.setattr(Objective, "forward", diverged)
    monkeypatch.setattr(study, "check_configurations", lambda *args: None)  # diverges in training, not on the
    assert _run(tmp_path, f"[data]\nimage_size = 32\n[engine]\npath = \"{path}\"\n") == 1
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert failed and "Traceback" not in err and "CasePrediction" not in err
    assert all(line.endswith("TrainingError: loss is NaN at epoch 1, step 1") for line in failed), failed


def test_a_worker_that_cannot_start_names_its_cause_instead_of_breaking_the_pool(tmp_path: Path) -> None:
    from benchmark.config import Settings
    from benchmark.errors import StoreError
    from benchmark.experiment.executors import LocalExecutor
    from benchmark.experiment.store import DataIdentity
    from benchmark.experiment.worker import CohortShipment, WorkerContext

    gone = tmp_path / "prepared" / "removed-since-the-driver-wrote-it.pickle"
    context = WorkerContext(cohort=CohortShipment("0" * 64, str(gone)), settings=Settings(),
                            cache_root=str(tmp_path / "cache"), teacher_root=str(tmp_path / "teachers"), device="cpu",
                            threads=1, code_version="test",
                            data=DataIdentity(location=str(tmp_path), metadata_sha256="0" * 64,
                                              image_list_sha256="0" * 64))
    executor = LocalExecutor(1, warm=context)  # the worker warms its engine on this context, and cannot
    try:
        error = executor.submit(context, "run", ()).exception(timeout=120)
    finally:
        executor.shutdown()
    assert isinstance(error, StoreError), repr(error)
    assert str(error).startswith(f"{gone}: the driver's prepared cohort cannot be read: ")


def test_a_worker_refuses_a_prepared_cohort_that_is_not_the_drivers(tmp_path: Path) -> None:
    from benchmark.errors import StoreError
    from benchmark.experiment.worker import CohortShipment

    path = tmp_path / "prepared.pickle"
    path.write_bytes(pickle.dumps({"not": "the driver's"}))
    with pytest.raises(StoreError, match="not the prepared cohort the driver shipped"):
        CohortShipment("0" * 64, str(path)).load()


@pytest.fixture(params=["no-blocks", "no-inodes"])
def full_teacher_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A teacher store on a real, full file system (a tiny tmpfs): no room for a file's bytes, or for a new file or
    folder at all; skipped where this user may not mount."""
    point = tmp_path / "teachers"
    point.mkdir()
    options = "size=4k" if request.param == "no-blocks" else "size=1m,nr_inodes=2"
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_a_full_disk_under_the_teacher_store_stops_worker_processes_in_one_line(
        tmp_path: Path, full_teacher_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(tmp_path, "[data]\nimage_size = 32\n", "--teachers", str(full_teacher_store), "--workers", "2")
    out, err = capsys.readouterr()
    assert code == 1 and "report:" not in out
    assert err.strip().splitlines()[-1].startswith(f"ctxray-bench: error: {tmp_path / 'out'}: storing stopped: no "
                                                   f"space left on {full_teacher_store}")
    assert not any(word in err for word in ("Traceback", "BrokenProcessPool", "CacheError", "its teacher failed"))
