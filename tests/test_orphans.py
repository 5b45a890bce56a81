"""No orphans (issue 23 item 9): when the driver is killed with -9, its worker processes exit within seconds instead
of holding their memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from Linux /proc")
def test_workers_exit_within_seconds_of_the_driver_being_killed(tmp_path: Path) -> None:
    from benchmark.data.synthetic import write_synthetic_cohort

    data = write_synthetic_cohort(tmp_path / "data", size=48)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXRAY_")}
    driver = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "run", "--data", str(data), "--profile", "smoke",
                               "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--workers", "2",
                               "--quiet"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and len(workers) < 2:  # the pool's spawned workers (and its tracker)
            workers = {pid for pid in _children(driver.pid)
                       if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()}
            time.sleep(0.2)
        assert workers, "the driver started no worker process"
        time.sleep(1.0)  # let them start working
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # do not leave them behind whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} worker(s) still alive 10 s after the driver was killed"
