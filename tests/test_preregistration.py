"""PROTOCOL.md section 14, pre-registration: `plan` writes a plan, `run --plan` follows it or refuses in one line, the
report says whether a store was pre-registered and lists every deviation by name, and claim 8 checks the store
against its plan from the files alone (claims/plan_check.py)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.claims.plan_check import plan_problems
from benchmark.cli import main
from benchmark.data.synthetic import write_synthetic_cohort
from benchmark.errors import PlanError
from benchmark.evidence.preregistration import PLAN_FILE, canonical_sha256, load_plan, refusals
from tests.test_claims_can_fail import run_claims

CANDIDATES = """
[[configurations]]
name = "ct-kd-strong"
role = "candidate: CT teacher, logit KD with weight 0.9"
tier = 1
manifest = "paired"
network = "student"
teacher = { modality = "ct", network = "teacher" }
loss = { kd_alpha = 0.9 }
candidate = true

[[configurations]]
name = "ct-dkd"
role = "candidate: CT teacher, decoupled KD"
tier = 1
manifest = "paired"
network = "student"
teacher = { modality = "ct", network = "teacher" }
loss = { kd_alpha = 0.0, terms = [{ objective = "dkd", weight = 1.0, params = { alpha = 1.0, beta = 8.0 } }] }
candidate = true
"""


class Study:
    """A synthetic cohort, settings and two candidates, with the options `plan` and `run` share."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = write_synthetic_cohort(root / "data", size=48)
        (root / "settings.toml").write_text("[data]\nimage_size = 32\n")
        self.candidates = root / "candidates.toml"
        self.candidates.write_text(CANDIDATES)

    def options(self, candidates: Path | None = None) -> list[str]:
        return ["--data", str(self.data), "--profile", "smoke", "--config", str(self.root / "settings.toml"),
                "--configurations", str(candidates or self.candidates), "--cache", str(self.root / "cache"), "--quiet",
                "--workers", "2"]

    def plan(self, name: str = "plan.json") -> Path:
        path = self.root / name
        assert main(["plan", *self.options(), "--out", str(path)]) == 0
        return path

    def run(self, out: Path, plan: Path | None = None, candidates: Path | None = None) -> int:
        return main(["run", *self.options(candidates), "--out", str(out), *(["--plan", str(plan)] if plan else [])])


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Study, Path, Path]:
    """A study planned, then run under its plan: (study, plan file, store)."""
    study = Study(tmp_path_factory.mktemp("preregistered"))
    plan = study.plan()
    store = study.root / "store"
    assert study.run(store, plan) == 0
    return study, plan, store


def _first_screen(store: Path) -> str:
    html = (store / "report.html").read_text(encoding="utf-8")
    return html[html.index('id="preregistration"'):][:400]


def test_plan_then_run_with_it_gives_a_report_that_says_pre_registered(planned) -> None:
    _, plan_path, store = planned
    plan, _ = load_plan(plan_path)
    line = _first_screen(store)
    assert f"pre-registered: {plan.sha256}, {plan.created_at}" in line and "no deviation" in line
    assert (store / PLAN_FILE).read_bytes() == plan_path.read_bytes()


def test_a_smoke_run_with_two_candidates_shows_raw_and_holm_adjusted_p(planned) -> None:
    from benchmark.report.render import numbers_in_report

    _, _, store = planned
    evidence = json.loads((store / "evidence.json").read_text())
    assert [(c["name"], c["family"]) for c in evidence["candidates"]] == [("ct-kd-strong", 2), ("ct-dkd", 2)]
    shown = {n.attributes["data-evidence"]: n.text for n in numbers_in_report((store / "report.html").read_text())
             if "data-evidence" in n.attributes}
    for candidate in evidence["candidates"]:
        key = f"{candidate['name']} beats every control"
        for field in ("p_value", "adjusted_p_value"):
            value = candidate[field]
            assert shown[f"{key}:{field}"] == ("–" if value is None else f"{value:.4f}")


def test_every_run_made_under_the_plan_stores_its_hash_and_time(planned) -> None:
    _, plan_path, store = planned
    plan, _ = load_plan(plan_path)
    records = [json.loads(p.read_text()) for p in (store / "runs").glob("*.json")]
    assert len(records) == len(plan.plan.run_ids)
    assert all(r["plan"] == {"sha256": plan.sha256, "created_at": plan.created_at} for r in records)


def test_the_plan_fixes_cohort_matrix_plugins_rules_and_test_sets(planned) -> None:
    _, plan_path, store = planned
    plan = load_plan(plan_path)[0].plan
    manifest = json.loads((store / "store.json").read_text())
    assert plan.cohort["table_sha256"] == manifest["data"]["metadata_sha256"]
    assert plan.cohort["image_list_sha256"] == manifest["data"]["image_list_sha256"]
    assert {"ct-dkd", "ct-kd-strong", "student-only", "plain-ct-kd"} <= {c.name for c in plan.configurations}
    dkd = next(p for p in plan.plugins if p.name == "dkd")
    assert dkd.distribution == "ctxray-bench" and dkd.files == {
        "benchmark.methods.baselines": dkd.files["benchmark.methods.baselines"]}
    assert plan.rules.alpha == 0.05 and plan.rules.rope == 0.05 and [h["key"] for h in plan.rules.hypotheses] == [
        "H1", "H2", "H3", "H4", "H5"]
    assert plan.settings["splits"]["monte_carlo_resamples"] == manifest["settings"]["splits"]["monte_carlo_resamples"]
    assert [t.name for t in plan.test_sets] == ["held-out"]


def test_claim8_passes_on_the_store_that_follows_its_plan(planned) -> None:
    _, _, store = planned
    assert plan_problems(store, (store / "report.html").read_text(encoding="utf-8")) == []


def test_an_edited_configuration_is_refused_in_one_line_and_nothing_is_stored(planned, tmp_path, capsys) -> None:
    study, plan, _ = planned
    edited = tmp_path / "candidates.toml"
    edited.write_text(CANDIDATES.replace("beta = 8.0", "beta = 4.0"))
    assert study.run(tmp_path / "store", plan, edited) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "differs from its plan" in error
    assert "configuration ct-dkd: what it trains (content sha256" in error and "differs from the plan" in error
    assert not list((tmp_path / "store" / "runs").glob("*.json")) if (tmp_path / "store" / "runs").exists() else True


def test_a_changed_setting_is_refused_naming_it(planned, tmp_path, capsys) -> None:
    study, plan, _ = planned
    settings = tmp_path / "settings.toml"
    settings.write_text("[data]\nimage_size = 32\n[evidence]\nrope = 0.1\n")
    options = study.options()
    options[options.index("--config") + 1] = str(settings)
    assert main(["run", *options, "--out", str(tmp_path / "store"), "--plan", str(plan)]) == 2
    error = capsys.readouterr().err
    assert "setting evidence.rope: planned its default, now 0.1" in error and "rules: rope differ" in error


def _replan(plan_path: Path, target: Path, edit) -> Path:
    """A copy of a plan with its body edited and its sha256 made right again (a plan written another day)."""
    content = json.loads(plan_path.read_text())
    edit(content["plan"])
    content["sha256"] = canonical_sha256(content["created_at"], content["plan"])
    target.write_text(json.dumps(content))
    return target


def test_another_plugin_source_file_is_refused_naming_the_plugin(planned, tmp_path, capsys) -> None:
    study, plan, _ = planned

    def other_dkd(body: dict) -> None:
        dkd = next(p for p in body["plugins"] if p["name"] == "dkd")
        dkd["files"] = {name: "0" * 64 for name in dkd["files"]}

    assert study.run(tmp_path / "store", _replan(plan, tmp_path / "plan.json", other_dkd)) == 2
    assert "objective dkd: source files differ from the plan (benchmark.methods.baselines)" in capsys.readouterr().err


def test_another_plugin_version_is_refused_naming_the_plugin(planned, tmp_path, capsys) -> None:
    study, plan, _ = planned

    def older_cnn(body: dict) -> None:
        next(p for p in body["plugins"] if p["name"] == "cnn")["version"] = "0.0.1"

    assert study.run(tmp_path / "store", _replan(plan, tmp_path / "plan.json", older_cnn)) == 2
    assert "network cnn: ctxray-bench 0.1.0, the plan fixed ctxray-bench 0.0.1" in capsys.readouterr().err


def test_another_cohort_is_refused_naming_its_hash(planned, tmp_path, capsys) -> None:
    study, plan, _ = planned
    other = write_synthetic_cohort(tmp_path / "data", size=48, seed=7)
    options = study.options()
    options[options.index("--data") + 1] = str(other)
    assert main(["run", *options, "--out", str(tmp_path / "store"), "--plan", str(plan)]) == 2
    error = capsys.readouterr().err
    assert "cohort image_list_sha256: planned" in error  # same metadata.csv, other pixels


def test_a_plan_edited_after_it_was_written_is_refused(planned, tmp_path) -> None:
    _, plan, _ = planned
    content = json.loads(plan.read_text())
    content["plan"]["rules"]["alpha"] = 0.1
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(content))
    with pytest.raises(PlanError, match="edited after it was written"):
        load_plan(edited)


def test_a_new_code_version_is_a_deviation_not_a_refusal() -> None:
    found = ["code version: planned 0.1.0+gabc, now 0.1.0+gdef", "setting data.image_size: planned 32, now 64"]
    assert refusals(found) == ["setting data.image_size: planned 32, now 64"]


def test_a_store_with_runs_made_without_a_plan_refuses_one(tmp_path, capsys) -> None:
    study = Study(tmp_path)
    store = tmp_path / "store"
    assert study.run(store) == 0
    assert study.run(store, study.plan()) == 2
    assert "a plan must come before its runs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def deviating(planned, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The twin: the planned store, then a configuration edited after the plan and run into it without --plan."""
    study, _, store = planned
    copy = tmp_path_factory.mktemp("deviating") / "store"
    shutil.copytree(store, copy)
    edited = copy.parent / "candidates.toml"
    edited.write_text(CANDIDATES.replace("beta = 8.0", "beta = 4.0"))
    with contextlib.redirect_stderr(io.StringIO()) as said:
        assert study.run(copy, candidates=edited) == 0
    return copy, said.getvalue()


def test_running_into_a_planned_store_without_the_plan_warns_of_the_deviation(deviating) -> None:
    _, said = deviating
    assert "pre-registered under plan" in said and "8 run(s) made now without --plan are deviations" in said


def test_the_report_lists_every_deviation_by_name(deviating: tuple[Path, str]) -> None:
    deviating, _ = deviating
    html = (deviating / "report.html").read_text(encoding="utf-8")
    assert "deviation(s)" in _first_screen(deviating)
    deviations = [line.split("<")[0] for line in html.split("<li data-deviation>")[1:]]
    assert any(d.startswith("configuration ct-dkd: what it trains (content sha256") for d in deviations)
    assert any(d.startswith("runs not made under the plan:") for d in deviations)
    assert any(d.startswith("declared runs not in the plan:") for d in deviations)


def test_claim8_fails_on_a_configuration_edited_after_the_plan(deviating: tuple[Path, str]) -> None:
    deviating, _ = deviating
    problems = plan_problems(deviating, (deviating / "report.html").read_text(encoding="utf-8"))
    assert any("configuration ct-dkd" in p and "the plan fixed" in p for p in problems), problems
    result = run_claims(deviating, "claim8")
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout[-2000:]


def test_a_store_without_a_plan_says_not_pre_registered(synthetic_store: Path) -> None:
    assert "not pre-registered" in _first_screen(synthetic_store)
    assert plan_problems(synthetic_store, (synthetic_store / "report.html").read_text(encoding="utf-8")) == []


def test_claim8_fails_when_a_store_without_a_plan_claims_one(synthetic_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(synthetic_store, copy)
    report = copy / "report.html"
    report.write_text(report.read_text(encoding="utf-8").replace("not pre-registered", "pre-registered: 0" * 1))
    assert any("the store has no plan" in p for p in plan_problems(copy, report.read_text(encoding="utf-8")))


def test_plan_is_a_command_of_the_console_script() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "plan", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--out" in done.stdout and "--profile" in done.stdout
