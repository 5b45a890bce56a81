"""Every configuration is rerun (issue 22 item 2): claim 7 reproduces one run of each configuration of a store, its
candidates included, so a candidate whose network draws from the global RNG cannot pass the claims."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.methods.models import Classifier, NetworkConfig, build_classifier

REPO = Path(__file__).resolve().parent.parent
NOISE = "CTXRAY_TEST_GLOBAL_RNG"  # set: the network below draws from the global RNG after initialising


def network_with_switchable_noise(config: NetworkConfig, generator: torch.Generator) -> Classifier:
    """The student backbone; with $CTXRAY_TEST_GLOBAL_RNG set, plus noise from the global RNG (not deterministic)."""
    model = build_classifier(config, generator)
    if os.environ.get(NOISE):
        with torch.no_grad():
            first = next(model.parameters())
            first.add_(torch.randn(first.shape) * 0.05)
    return model


CANDIDATE = """
[[configurations]]
name = "ct-kd-switchable"
role = "candidate: plain CT KD on a network plugin whose noise an environment variable switches on"
tier = 1
manifest = "paired"
network = { base = "student", architecture = "tests.test_rerun_every_configuration:network_with_switchable_noise" }
teacher = { modality = "ct", network = "teacher" }
candidate = true
"""


@pytest.fixture(scope="module")
def candidate_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke store on a synthetic cohort with the candidate, made while the plugin was deterministic."""
    from benchmark.data.synthetic import write_synthetic_cohort
    from benchmark.experiment.study import RunRequest, run_profile
    from benchmark.report.render import write_store_outputs

    root = tmp_path_factory.mktemp("candidate-store")
    data = write_synthetic_cohort(root / "data", size=48)
    (root / "settings.toml").write_text("[data]\nimage_size = 32\n")
    (root / "configurations.toml").write_text(CANDIDATE)
    out = root / "store"
    outcome = run_profile(RunRequest(cohort=data, profile="smoke", out=out, workers=2, progress=False,
                                     settings_path=root / "settings.toml", cache_root=root / "cache",
                                     configurations_path=root / "configurations.toml"))
    assert not outcome.failures, outcome.failures
    write_store_outputs(out)
    return out


def _claim7(store: Path, noisy: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != NOISE} | ({NOISE: "1"} if noisy else {})
    return subprocess.run([sys.executable, "-m", "pytest", "claims/", "--results", str(store), "-q", "-p",
                           "no:cacheprovider", "-k", "claim7"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_claim7_reruns_the_candidate_and_states_its_time(candidate_store: Path) -> None:
    done = _claim7(candidate_store, noisy=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "candidates included" in done.stdout and " s: all bit for bit" in done.stdout


def test_claim7_fails_when_a_candidate_network_draws_from_the_global_rng(candidate_store: Path) -> None:
    done = _claim7(candidate_store, noisy=True)
    failure = next((line for line in done.stdout.splitlines()
                    if "AssertionError" in line and "did not reproduce" in line), "")
    assert done.returncode == 1 and "ct-kd-switchable" in failure, done.stdout[-3000:]
