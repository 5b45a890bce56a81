"""A restructuring leaves the evidence unchanged: evidence.json of the shared collection's `smoke` and `paper` profiles
has the sha256 recorded for this torch version and CPU kernel set (tests/evidence_digests.toml)."""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

import pytest
import torch

from benchmark.experiment.study import RunRequest, run_profile
from benchmark.report.render import write_store_outputs

DIGESTS = Path(__file__).with_name("evidence_digests.toml")


def machine_key() -> str:
    """What the bits of a run depend on besides the code: torch's version and the CPU kernels it dispatches to."""
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


@pytest.fixture(scope="module", params=["smoke", "paper"])
def evidence_sha256(request: pytest.FixtureRequest, real_data_root: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(profile, sha256 of its evidence.json) from a fresh store: 2 workers of 1 thread, the default settings."""
    out = tmp_path_factory.mktemp(f"digest-{request.param}")
    outcome = run_profile(RunRequest(cohort=real_data_root, profile=request.param, out=out, workers=2, threads=1,
                                     progress=False))
    assert not outcome.failures, next(iter(outcome.failures.values()))
    write_store_outputs(out)
    return request.param, hashlib.sha256((out / "evidence.json").read_bytes()).hexdigest()


def test_evidence_json_has_the_recorded_sha256(evidence_sha256: tuple[str, str]) -> None:
    profile, digest = evidence_sha256
    recorded = tomllib.loads(DIGESTS.read_text(encoding="utf-8"))
    key = machine_key()
    if os.environ.get("CTXRAY_RECORD_DIGESTS") == "1":
        print(f'\n["{key}"]\n{profile} = "{digest}"')
    if key not in recorded:
        pytest.skip(f"no digest recorded for {key!r} (recorded: {', '.join(recorded)}): floating-point results differ "
                    "between kernel sets; see tests/evidence_digests.toml to record this one")
    assert digest == recorded[key][profile], (
        f"{profile}: evidence.json has sha256 {digest}, recorded {recorded[key][profile]} for {key}: the evidence "
        "changed")
