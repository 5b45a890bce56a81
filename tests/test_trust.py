"""Plugin code is named before it runs: a --configurations file imports and runs code, and the tool says which
(issue 23 item 11; README, "Your own method": Trust)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.methods.configurations import load_configurations, with_added_configurations
from benchmark.methods.registry import plugin_code

NONDETERMINISTIC = Path(__file__).resolve().parents[1] / "examples" / "nondeterministic" / "configurations.toml"


def test_the_packaged_configurations_name_no_plugin_code() -> None:
    assert plugin_code(load_configurations().values()) == []


def test_a_module_attribute_network_is_named_as_plugin_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.methods.registry import NETWORKS

    monkeypatch.syspath_prepend(str(NONDETERMINISTIC.parent))
    NETWORKS.get("ctxray_noisy_network:build_noisy_classifier")  # resolved (and cached) earlier in this process
    found = plugin_code(with_added_configurations(NONDETERMINISTIC).values())
    assert found and all("imported from the Python path" in line for line in found)
    assert any("ctxray_noisy_network" in line for line in found)


def test_run_says_in_one_line_which_plugin_code_a_configurations_file_runs(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--data", str(tmp_path / "no-data"), "--configurations", str(NONDETERMINISTIC),
          "--out", str(tmp_path / "out")])
    [note] = [line for line in capsys.readouterr().err.splitlines() if "plugin code" in line]
    assert "runs plugin code with your rights" in note and "ctxray_noisy_network" in note and "trust" in note
