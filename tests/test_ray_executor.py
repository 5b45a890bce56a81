"""The Ray executor on a local Ray instance: same predictions as local processes; survives a dying worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from benchmark.experiment.study import RunRequest, run_profile

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


def predictions(store: Path) -> dict[str, list[tuple[str, float]]]:
    return {p.stem: [(c["image_id"], c["score"]) for c in json.loads(p.read_text())["predictions"]]
            for p in (store / "runs").glob("*.json")}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from benchmark.data.synthetic import write_synthetic_cohort

    root = tmp_path_factory.mktemp("ray")
    data = write_synthetic_cohort(root / "data", size=48)
    settings = root / "settings.toml"
    settings.write_text("[data]\nimage_size = 32\n")
    matrix = root / "matrix.toml"
    matrix.write_text(
        '[profiles.slow]\ndescription = "long enough to kill a worker mid-run"\ntraining = { epochs = 15 }\n'
        'teacher_training = { epochs = 2 }\nsettings = { splits = { monte_carlo_resamples = 3, '
        'monte_carlo_val_patients = 3 } }\n[[profiles.slow.blocks]]\nname = "b"\npurpose = "p"\n'
        'configurations = ["student-only", "plain-ct-kd", "ct-feature-hint", "late-fusion"]\n'
        'regimes = ["paired-fixed", "paired-monte-carlo"]\n')
    return data, settings, matrix


def request(synthetic, out: Path, executor: str, profile: str = "smoke") -> RunRequest:
    data, settings, matrix = synthetic
    return RunRequest(cohort=data, profile=profile, out=out, workers=2, settings_path=settings,
                      matrix_path=matrix if profile == "slow" else None, cache_root=out.parent / "cache",
                      progress=False, executor=executor)


def test_ray_gives_the_same_predictions_as_local_processes(synthetic, tmp_path: Path) -> None:
    local = run_profile(request(synthetic, tmp_path / "local", "local"))
    remote = run_profile(request(synthetic, tmp_path / "ray", "ray"))
    assert not local.failures and not remote.failures and remote.executed == local.executed > 0
    assert predictions(tmp_path / "ray") == predictions(tmp_path / "local")


def _kill_a_busy_worker(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker process seen executing a job."""
    while not stop.is_set() and not killed:
        for process in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if cmdline.startswith("ray::run_job"):
                os.kill(process.info["pid"], signal.SIGKILL)
                killed.append(process.info["pid"])
                return
        time.sleep(0.05)


def test_ray_retries_a_run_whose_worker_died(synthetic, tmp_path: Path) -> None:
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_busy_worker, args=(killed, stop), daemon=True)
    killer.start()
    try:
        outcome = run_profile(request(synthetic, tmp_path / "ray", "ray", profile="slow"))
    finally:
        stop.set()
        killer.join()
    assert killed, "no busy Ray worker was seen to kill"
    assert not outcome.failures and outcome.executed == outcome.total
    assert not list((tmp_path / "ray" / "runs").glob(".*.tmp"))
    run_profile(request(synthetic, tmp_path / "local", "local", profile="slow"))
    assert predictions(tmp_path / "ray") == predictions(tmp_path / "local")
