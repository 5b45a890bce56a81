"""Plugins are checked before training (issue 22 item 3): a network or objective that is not deterministic stops the
command in one line naming the configuration and the plugin, before any run is stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from benchmark.errors import ConfigError
from benchmark.methods.configurations import load_configurations, with_added_configurations
from benchmark.methods.losses import DistillationTerm, TermContext
from benchmark.methods.models import Classifier, ModelOutput, NetworkConfig, build_classifier
from benchmark.methods.preflight import check_configuration

REPO = Path(__file__).resolve().parent.parent


class _NoisyForward(nn.Module):
    """The student backbone whose forward pass adds global-RNG noise to its logits."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__()
        self.inner = inner
        self.stage_channels = inner.stage_channels

    def forward(self, images: Tensor) -> ModelOutput:
        out = self.inner(images)
        return ModelOutput(out.logits + torch.rand(out.logits.shape), out.features)


def noisy_forward_network(config: NetworkConfig, generator: torch.Generator) -> nn.Module:
    """A network plugin that draws from the global RNG on every forward pass."""
    return _NoisyForward(build_classifier(config, generator))


class RandomScale(DistillationTerm):
    """An objective plugin whose trainable scale starts from the global RNG."""

    def __init__(self, params: dict, context: TermContext) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.randn(1))

    def forward(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> Tensor:
        return self.scale * (student.logits - teacher.logits.detach()).pow(2).mean()


def _configuration(tmp_path: Path, network: str = '"student"', terms: str = "") -> object:
    path = tmp_path / "configurations.toml"
    path.write_text(f"""
[[configurations]]
name = "plugged"
role = "candidate"
tier = 1
manifest = "paired"
network = {network}
teacher = {{ modality = "ct", network = "teacher" }}
{terms}
candidate = true
""")
    return with_added_configurations(path)["plugged"]


def test_every_packaged_configuration_is_deterministic() -> None:
    for configuration in load_configurations().values():
        check_configuration(configuration, 32)


def test_a_network_drawing_from_the_global_rng_at_build_is_named(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.syspath_prepend(str(REPO / "examples" / "nondeterministic"))
    configuration = _configuration(
        tmp_path, '{ base = "student", architecture = "ctxray_noisy_network:build_noisy_classifier" }')
    with pytest.raises(ConfigError, match=r"'plugged' is not deterministic: its network "
                                          r"'ctxray_noisy_network:build_noisy_classifier' gets other values"):
        check_configuration(configuration, 32)


def test_a_network_drawing_from_the_global_rng_in_forward_is_named(tmp_path: Path) -> None:
    configuration = _configuration(
        tmp_path, '{ base = "student", architecture = "tests.test_preflight:noisy_forward_network" }')
    with pytest.raises(ConfigError, match="a second forward pass gives other logits"):
        check_configuration(configuration, 32)


def test_an_objective_drawing_from_the_global_rng_is_named(tmp_path: Path) -> None:
    configuration = _configuration(tmp_path, terms='loss = { terms = [{ objective = '
                                                   '"tests.test_preflight:RandomScale", weight = 1.0 }] }')
    with pytest.raises(ConfigError, match=r"objective terms .*'tests.test_preflight:RandomScale'"):
        check_configuration(configuration, 32)


def test_run_stops_the_example_before_any_run_is_stored(write_cohort, paired_rows, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "examples" / "nondeterministic"), str(REPO)])}
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", "--data", str(write_cohort(paired_rows)),
                           "--profile", "smoke", "--out", str(out), "--cache", str(tmp_path / "cache"),
                           "--configurations", str(REPO / "examples" / "nondeterministic" / "configurations.toml"),
                           "--quiet"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("ctxray-bench: note:")]
    assert len(lines) == 1 and "'ct-kd-noisy-network' is not deterministic" in lines[0]
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())
