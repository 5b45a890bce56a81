"""What every bench stage shares: a measurement against its target, a timed command line, the CPU's name and peak."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    """One timed stage and the target it is held to."""

    stage: str
    seconds: float
    target_seconds: float

    @property
    def ratio(self) -> float:
        """Measured time over target: below 1 meets the target."""
        return self.seconds / self.target_seconds


def _time_cli(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmark.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def matmul_peak_gflops(n: int = 2048, dtype: str = "float32", repeats: int = 20) -> float:
    """Best achieved GFLOP/s of an n x n matmul: the machine's practical compute ceiling."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for naming what a timing was measured on."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
