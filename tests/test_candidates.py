"""Bring your own method: configurations added by file, candidates compared with the controls in evidence, report and
claims, and the example plugin (examples/plugin) installed and run through a smoke run to a rendered report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.evidence.candidates import CONTROLS
from benchmark.experiment.matrix import CANDIDATE_BLOCK, load_profile, run_id, with_candidates
from benchmark.methods.configurations import load_configurations, with_added_configurations

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "plugin"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "configurations.toml"
    path.write_text(text)
    return path


CANDIDATE = '''
[[configurations]]
name = "my-method"
role = "candidate"
manifest = "paired"
network = "student"
teacher = { modality = "ct", network = "teacher" }
loss = { terms = [{ objective = "rkd", weight = 0.1 }] }
candidate = true
'''


def test_a_configurations_file_adds_to_the_packaged_table_with_its_networks(tmp_path: Path) -> None:
    configurations = with_added_configurations(_write(tmp_path, CANDIDATE))
    assert set(load_configurations()) < set(configurations)
    added = configurations["my-method"]
    assert added.candidate and added.network.widths == (16, 32, 64, 128) and added.training.epochs == 5


def test_a_packaged_control_cannot_be_redefined_under_its_name(tmp_path: Path) -> None:
    text = CANDIDATE.replace('name = "my-method"', 'name = "plain-ct-kd"')
    with pytest.raises(ConfigError, match="'plain-ct-kd' redefines the packaged one"):
        with_added_configurations(_write(tmp_path, text))


def test_a_candidate_must_be_a_deployable_paired_classifier(tmp_path: Path) -> None:
    text = CANDIDATE.replace('manifest = "paired"', 'manifest = "all-xray"').replace(
        'teacher = { modality = "ct", network = "teacher" }\n', "").replace(
        'loss = { terms = [{ objective = "rkd", weight = 0.1 }] }\n', "")
    with pytest.raises(ConfigError, match="a candidate is a deployable model"):
        with_added_configurations(_write(tmp_path, text))


def test_being_a_candidate_does_not_change_a_runs_id(tmp_path: Path, small_prepared) -> None:
    prepared, _ = small_prepared
    configuration = with_added_configurations(_write(tmp_path, CANDIDATE))["my-method"]
    split = prepared.regimes[0].splits[0]
    plain = configuration.model_copy(update={"candidate": False})
    assert run_id(configuration, split, 42) == run_id(plain, split, 42)


def test_candidates_join_the_matrix_on_the_paired_regimes_and_the_training_length_block(tmp_path: Path) -> None:
    profile, _ = with_candidates(load_profile("smoke"), with_added_configurations(_write(tmp_path, CANDIDATE)))
    blocks = {b.name: b for b in profile.blocks}
    assert blocks[CANDIDATE_BLOCK].configurations == ["my-method"]
    assert set(blocks[CANDIDATE_BLOCK].regimes) == {"paired-fixed", "paired-monte-carlo"}
    assert "my-method" in blocks["training-length"].configurations
    assert with_candidates(load_profile("smoke"), load_configurations())[0] == load_profile("smoke")


def test_a_profile_names_packaged_configurations_that_join_it_as_candidates() -> None:
    profile, configurations = with_candidates(load_profile("paper"), load_configurations())
    blocks = {b.name: b for b in profile.blocks}
    assert blocks[CANDIDATE_BLOCK].configurations == ["ct-confidence-gated"]
    assert "ct-confidence-gated" in blocks["training-length"].configurations
    assert configurations["ct-confidence-gated"].candidate
    assert not load_configurations()["ct-confidence-gated"].candidate  # a candidate of the profiles that name it


def test_a_profile_naming_an_unknown_or_undeployable_candidate_is_refused() -> None:
    for name, why in (("no-such-method", "not a declared configuration"), ("late-fusion", "deployable")):
        profile = load_profile("smoke").model_copy(update={"candidates": [name]})
        with pytest.raises(ConfigError, match=f"profile 'smoke': candidate '{name}'.*{why}"):
            with_candidates(profile, load_configurations())


@pytest.fixture(scope="session")
def plugin_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The example plugin installed into a folder on PYTHONPATH and its configurations run through the smoke profile
    on a synthetic cohort by the command line: (store, environment with the plugin)."""
    from benchmark.data.synthetic import write_synthetic_cohort

    root = tmp_path_factory.mktemp("plugin")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(shutil.copytree(PLUGIN, root / "plugin-src"))],
                   check=True, capture_output=True, text=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}
    env = {k: v for k, v in env.items() if not k.startswith("CTXRAY_")}
    data = write_synthetic_cohort(root / "data", size=48)
    (root / "settings.toml").write_text("[data]\nimage_size = 32\n")
    out = root / "store"
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", "--data", str(data), "--profile", "smoke",
                           "--configurations", str(PLUGIN / "configurations.toml"), "--out", str(out),
                           "--config", str(root / "settings.toml"), "--cache", str(root / "cache"), "--quiet"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out, env


def test_the_plugin_method_is_compared_with_every_control(plugin_store: tuple[Path, dict[str, str]]) -> None:
    out, _ = plugin_store
    evidence = json.loads((out / "evidence.json").read_text())
    candidates = {c["name"]: c for c in evidence["candidates"]}
    assert set(candidates) == {"ct-logit-mse", "ct-dkd"}
    for name, candidate in candidates.items():
        assert [c["b"] for c in candidate["comparisons"]] == list(CONTROLS)
        assert all(c["monte_carlo"] is not None and c["a"] == name for c in candidate["comparisons"])
    assert all(c["name"] in candidates for length in evidence["training_lengths"] for c in length["candidates"])
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert any("logit-mse" in r["fit"]["epoch_terms"][0] for r in records)


def test_the_report_shows_the_candidates_section(plugin_store: tuple[Path, dict[str, str]]) -> None:
    out, _ = plugin_store
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="candidates"' in html and 'data-candidate="ct-logit-mse"' in html
    assert 'data-evidence="ct-logit-mse vs plain-ct-kd:status"' in html


def test_the_first_screen_shows_every_candidates_statuses(plugin_store: tuple[Path, dict[str, str]]) -> None:
    from benchmark.report.render import report_data_from_html
    from tests.test_report_browser import VIEWPORT, on_the_first_screen

    out, _ = plugin_store
    evidence = report_data_from_html((out / "report.html").read_text(encoding="utf-8"))["evidence"]
    expected = {f"{h['hypothesis']}:status": h["status"] for h in evidence["hypotheses"]}
    expected |= {f"{c['hypothesis']}:status": c["status"] for cand in evidence["candidates"]
                 for c in cand["comparisons"]}
    expected |= {f"{c['hypothesis']}:test:{t['test_set']}:status": c["status"] for t in evidence["test_sets"]
                 for cand in t["candidates"] for c in cand["comparisons"]}
    assert len(expected) == 5 + 2 * 4 * (1 + len(evidence["test_sets"]))
    hidden, texts = on_the_first_screen(out / "report.html", list(expected))
    assert hidden == [], f"not on the first screen ({VIEWPORT}): {hidden}"
    assert texts == expected


def test_the_claims_pass_with_the_plugin_and_fail_on_a_wrong_candidate_status(
        plugin_store: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    out, env = plugin_store
    command = [sys.executable, "-m", "pytest", "claims/", "-q", "-p", "no:cacheprovider", "--results"]
    done = subprocess.run([*command, str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    tampered = tmp_path / "store"
    shutil.copytree(out, tampered)
    html = (tampered / "report.html").read_text(encoding="utf-8")
    key = 'data-evidence="ct-dkd vs student-only:status">'
    start = html.index(key) + len(key)
    html = html[:start] + "supported" + html[html.index("<", start):]
    (tampered / "report.html").write_text(html, encoding="utf-8")
    done = subprocess.run([*command, str(tampered), "-k", "claim6"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1 and "ct-dkd vs student-only:status" in done.stdout, done.stdout[-3000:]


def test_the_claims_catch_a_candidate_status_misreported_in_evidence(plugin_store: tuple[Path, dict[str, str]],
                                                                    tmp_path: Path) -> None:
    from tests.test_claims_can_fail import _edit_evidence

    out, env = plugin_store
    tampered = tmp_path / "store"
    shutil.copytree(out, tampered)

    def misreport(evidence: dict) -> None:
        comparison = evidence["candidates"][0]["comparisons"][0]
        comparison["status"] = "not evaluable" if comparison["status"] != "not evaluable" else "supported"

    _edit_evidence(tampered, misreport)
    done = subprocess.run([sys.executable, "-m", "pytest", "claims/", "-q", "-p", "no:cacheprovider", "--results",
                           str(tampered), "-k", "claim6_every_status_follows"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "the rules give" in done.stdout, done.stdout[-3000:]


def test_a_candidate_that_trains_exactly_what_a_control_trains_is_refused_naming_both(tmp_path: Path) -> None:
    text = '''
[[configurations]]
name = "renamed-plain-kd"
role = "candidate"
tier = 1
manifest = "paired"
network = "student"
teacher = { modality = "ct", network = "teacher" }
candidate = true
'''
    with pytest.raises(ConfigError, match=r"candidate 'renamed-plain-kd' trains exactly what 'plain-ct-kd' trains"):
        with_added_configurations(_write(tmp_path, text))


def test_a_candidate_whose_runs_all_failed_is_shown_not_evaluable_and_fails_the_claims(
        plugin_store: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    from benchmark.cli import main

    out, env = plugin_store
    store = tmp_path / "store"
    shutil.copytree(out, store)
    for record in (store / "runs").glob("*.json"):  # failed runs leave no record
        if "ct-logit-mse" in {d["name"] for d in json.loads(record.read_text())["spec"]["declarations"]}:
            record.unlink()
    assert main(["report", "--results", str(store)]) == 0
    evidence = json.loads((store / "evidence.json").read_text())
    [lost] = [c for c in evidence["candidates"] if c["name"] == "ct-logit-mse"]
    assert {c["status"] for c in lost["comparisons"]} == {"not evaluable"}
    html = (store / "report.html").read_text(encoding="utf-8")
    assert 'data-candidate="ct-logit-mse"' in html
    assert 'data-evidence="ct-logit-mse vs plain-ct-kd:status">not evaluable<' in html
    done = subprocess.run([sys.executable, "-m", "pytest", "claims/", "-q", "-p", "no:cacheprovider", "--results",
                           str(store), "-k", "claim3 or claim6"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1 and "candidates without a single run: ct-logit-mse" in done.stdout, done.stdout[-3000:]
    assert "claim6" not in "".join(line for line in done.stdout.splitlines() if line.startswith("FAILED"))
