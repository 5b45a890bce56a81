"""Every claim test can fail: corrupt a copy of a real (synthetic-data) store and watch the claim catch it.

A store is produced once with the smoke profile on a synthetic cohort; each test copies it,
corrupts one thing, runs `pytest claims/ --results COPY -k CLAIM` in a fresh process and expects
exactly that claim test to fail. The untouched copy passes every claim.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import claim_count

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clean_store(synthetic_store: Path) -> Path:
    return synthetic_store


def run_claims(store: Path, claim: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "claims/", "--results", str(store), "-q", "-p", "no:cacheprovider"]
    if claim:
        command += ["-k", claim]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def corrupted(clean: Path, tmp_path: Path, corrupt: Callable[[Path], None]) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(clean, copy)
    corrupt(copy)
    return copy


def edit_runs(store: Path, edit: Callable[[dict], bool]) -> None:
    """Apply `edit` to run records until one reports it changed something."""
    for path in sorted((store / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if edit(record):
            path.write_text(json.dumps(record))
            return
    raise AssertionError("no run record could be corrupted")


def assert_only_claim_fails(store: Path, claim: str) -> None:
    result = run_claims(store, claim)
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout[-3000:]


def test_the_untouched_store_passes_every_claim(clean_store: Path) -> None:
    result = run_claims(clean_store)
    assert result.returncode == 0 and f"{claim_count()} passed" in result.stdout, result.stdout[-3000:]


def _move_validation_patient_into_training(record: dict) -> bool:
    record["train_patients"].append(record["spec"]["split"]["val_patients"][0])
    return True


def _teach_on_a_validation_patient(record: dict) -> bool:
    if not record["teacher"]:
        return False
    record["teacher"]["training_patients"].append(record["spec"]["split"]["val_patients"][0])
    return True


@pytest.mark.parametrize("edit", [_move_validation_patient_into_training, _teach_on_a_validation_patient])
def test_claim1_catches_a_patient_in_train_and_validation(clean_store: Path, tmp_path: Path, edit) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, lambda s: edit_runs(s, edit)), "claim1")


def _add_a_second_negative(record: dict) -> bool:
    if record["spec"]["regime"] != "paired-monte-carlo":
        return False
    positive = next(p["patient_id"] for p in record["predictions"] if p["label"] == 1)
    for prediction in record["predictions"]:
        if prediction["patient_id"] == positive:
            prediction["label"] = 0
    return True


def test_claim2_catches_a_second_negative(clean_store: Path, tmp_path: Path) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, lambda s: edit_runs(s, _add_a_second_negative)),
                            "claim2")


def _drop_a_case(record: dict) -> bool:
    if record["spec"]["regime"] != "paired-fixed" or len(record["predictions"]) < 2:
        return False
    record["predictions"].pop()
    return True


def test_claim3_catches_a_configuration_evaluated_on_other_cases(clean_store: Path, tmp_path: Path) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, lambda s: edit_runs(s, _drop_a_case)), "claim3")


def _let_an_xray_model_depend_on_ct(record: dict) -> bool:
    probe = record.get("deployment_probe")
    if not probe or probe["reads_ct_declared"]:
        return False
    probe["ct_noise_max_abs_diff"] = 0.01
    return True


def test_claim4_catches_an_xray_only_model_that_reads_ct(clean_store: Path, tmp_path: Path) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, lambda s: edit_runs(s, _let_an_xray_model_depend_on_ct)),
                            "claim4")


def _edit_a_stored_metric(store: Path) -> None:
    def edit(record: dict) -> bool:
        if record["metrics"]["balanced_accuracy"] is None:  # undefined (a class absent): edit a defined one
            return False
        record["metrics"]["balanced_accuracy"] = round(1.0 - record["metrics"]["balanced_accuracy"] + 0.01, 6)
        return True
    edit_runs(store, edit)


def _edit_a_number_in_the_report(store: Path) -> None:
    html = (store / "report.html").read_text()
    pattern = re.compile(r'(data-metric="balanced_accuracy" data-stat="mean" data-runs="[^"]+">)(\d\.\d{3})')
    match = pattern.search(html)
    assert match is not None
    wrong = "0.999" if match.group(2) != "0.999" else "0.111"
    (store / "report.html").write_text(html[:match.start(2)] + wrong + html[match.end(2):])


def _hide_a_collapsed_run_in_the_report(store: Path) -> None:
    html = (store / "report.html").read_text()
    pattern = re.compile(r'(data-support="collapsed_runs" data-runs="[^"]+">)(\d+)')
    match = pattern.search(html)
    assert match is not None
    (store / "report.html").write_text(html[:match.start(2)] + str(int(match.group(2)) + 1) + html[match.end(2):])


def _edit_the_summary(store: Path) -> None:
    lines = (store / "summary.csv").read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("balanced_accuracy_mean")
    cells = lines[1].split(",")
    cells[column] = "0.987654"
    lines[1] = ",".join(cells)
    (store / "summary.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("corrupt", [_edit_a_stored_metric, _edit_a_number_in_the_report,
                                     _hide_a_collapsed_run_in_the_report, _edit_the_summary])
def test_claim5_catches_an_edited_number(clean_store: Path, tmp_path: Path, corrupt) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, corrupt), "claim5")


def _flip_a_status_in_evidence(store: Path) -> None:
    evidence = json.loads((store / "evidence.json").read_text())
    evidence["hypotheses"][1]["status"] = "supported"
    (store / "evidence.json").write_text(json.dumps(evidence))


def _flip_a_status_in_the_report(store: Path, key: str = "H2:status") -> None:
    html = (store / "report.html").read_text()
    pattern = re.compile(rf'(data-evidence="{re.escape(key)}">)([^<]+)')
    match = pattern.search(html)
    assert match is not None and match.group(2) != "supported"
    (store / "report.html").write_text(html[:match.start(2)] + "supported" + html[match.end(2):])


def _flip_a_status_at_a_training_length_in_the_report(store: Path) -> None:
    _flip_a_status_in_the_report(store, "H1:status@2")


def _edit_a_number_the_report_shows(store: Path, key: str) -> None:
    html = (store / "report.html").read_text()
    match = re.compile(rf'(data-evidence="{re.escape(key)}">)([^<]+)').search(html)
    assert match is not None
    wrong = "0.777" if match.group(2) != "0.777" else "0.111"
    (store / "report.html").write_text(html[:match.start(2)] + wrong + html[match.end(2):])


def _edit_a_companion_in_the_report(store: Path) -> None:
    _edit_a_number_the_report_shows(store, "H1:p_a_better")


def _edit_a_companion_at_a_training_length_in_the_report(store: Path) -> None:
    _edit_a_number_the_report_shows(store, "H1:corrected_p@2")


def _edit_a_companion_in_evidence(store: Path) -> None:
    evidence = json.loads((store / "evidence.json").read_text())
    bayesian = evidence["hypotheses"][0]["monte_carlo"]["companions"]["bayesian"]
    bayesian["p_equivalent"] = 0.5 if bayesian["p_equivalent"] != 0.5 else 0.25
    (store / "evidence.json").write_text(json.dumps(evidence))


def _hide_a_degenerate_tag_in_evidence(store: Path) -> None:
    evidence = json.loads((store / "evidence.json").read_text())
    comparison = evidence["hypotheses"][1]["monte_carlo"]
    comparison["degenerate"] = not comparison["degenerate"]
    (store / "evidence.json").write_text(json.dumps(evidence))


def _add_a_test_to_the_fixed_split(store: Path) -> None:
    html = (store / "report.html").read_text()
    marker = '<section id="fixed">'
    (store / "report.html").write_text(html.replace(marker, marker + "<p>p = 0.03 on the fixed split</p>", 1))


@pytest.mark.parametrize("corrupt", [_flip_a_status_in_evidence, _flip_a_status_in_the_report,
                                     _flip_a_status_at_a_training_length_in_the_report,
                                     _hide_a_degenerate_tag_in_evidence, _add_a_test_to_the_fixed_split,
                                     _edit_a_companion_in_the_report,
                                     _edit_a_companion_at_a_training_length_in_the_report,
                                     _edit_a_companion_in_evidence])
def test_claim6_catches_a_status_or_test_the_rules_do_not_give(clean_store: Path, tmp_path: Path, corrupt) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, corrupt), "claim6")


def test_claim7_catches_predictions_that_do_not_reproduce(clean_store: Path, tmp_path: Path) -> None:
    def shift_scores(store: Path) -> None:
        for path in (store / "runs").glob("*.json"):
            record = json.loads(path.read_text())
            for prediction in record["predictions"]:
                prediction["score"] = min(1.0, prediction["score"] + 1e-6)
            path.write_text(json.dumps(record))
    assert_only_claim_fails(corrupted(clean_store, tmp_path, shift_scores), "claim7")


# PROTOCOL.md section 13: the same boundary on the test sets (the synthetic store holds a held-out set).

def _a_test_patient(store: Path) -> str:
    return json.loads((store / "store.json").read_text())["test_sets"][0]["cases"][0]["patient_id"]


def _teach_on_a_test_patient(store: Path) -> None:
    """A teacher whose metadata and every record of the runs it taught say it trained on a held-out patient."""
    patient = _a_test_patient(store)
    teacher = next(record["teacher"]["teacher_id"] for path in sorted((store / "runs").glob("*.json"))
                   if (record := json.loads(path.read_text()))["teacher"] and record.get("tests"))
    for path in (store / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        if record["teacher"] and record["teacher"]["teacher_id"] == teacher:
            record["teacher"]["training_patients"].append(patient)
            path.write_text(json.dumps(record))
    meta = next((store / "teachers").glob(f"*/{teacher}.json"))
    stored = json.loads(meta.read_text())
    stored["training_patients"].append(patient)
    meta.write_text(json.dumps(stored))


def test_claim1_catches_a_test_patient_in_a_teachers_training_set(clean_store: Path, tmp_path: Path) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, _teach_on_a_test_patient), "claim1")


def _drop_a_test_case(record: dict) -> bool:
    if not record.get("tests"):
        return False
    next(iter(record["tests"].values()))["predictions"].pop()
    return True


def test_claim3_catches_a_dropped_test_case(clean_store: Path, tmp_path: Path) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, lambda s: edit_runs(s, _drop_a_test_case)), "claim3")


def _let_a_test_score_depend_on_ct(record: dict) -> bool:
    if not record.get("tests"):
        return False
    next(iter(record["tests"].values()))["probe"]["ct_noise_max_abs_diff"] = 0.02
    return True


def test_claim4_catches_test_scores_that_move_with_ct(clean_store: Path, tmp_path: Path) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, lambda s: edit_runs(s, _let_a_test_score_depend_on_ct)),
                            "claim4")


def _edit_a_test_score(record: dict) -> bool:
    """Move one test score across the threshold, leaving the stored test metrics as they were."""
    if not record.get("tests"):
        return False
    prediction = next(iter(record["tests"].values()))["predictions"][0]
    prediction["score"] = 0.9 if prediction["score"] < 0.5 else 0.1
    return True


def _edit_a_test_number_in_the_report(store: Path) -> None:
    html = (store / "report.html").read_text()
    pattern = re.compile(r'(data-test="[^"]+" data-metric="balanced_accuracy" data-stat="mean" data-runs="[^"]+">)'
                         r'(\d\.\d{3})')
    match = pattern.search(html)
    assert match is not None
    wrong = "0.999" if match.group(2) != "0.999" else "0.111"
    (store / "report.html").write_text(html[:match.start(2)] + wrong + html[match.end(2):])


def _misreport_the_test_support(store: Path) -> None:
    html = (store / "report.html").read_text()
    pattern = re.compile(r'(data-test-support="[^"]+:images">)(\d+)')
    match = pattern.search(html)
    assert match is not None
    (store / "report.html").write_text(html[:match.start(2)] + str(int(match.group(2)) + 1) + html[match.end(2):])


@pytest.mark.parametrize("corrupt", [lambda s: edit_runs(s, _edit_a_test_score), _misreport_the_test_support])
def test_claim5_catches_an_edited_test_number(clean_store: Path, tmp_path: Path, corrupt) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, corrupt), "claim5_every_test_number")


def test_claim5_catches_an_edited_test_number_in_the_report(clean_store: Path, tmp_path: Path) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, _edit_a_test_number_in_the_report),
                            "claim5_every_reported_number")


def _flip_a_test_status_in_the_report(store: Path) -> None:
    html = (store / "report.html").read_text()
    pattern = re.compile(r'(data-evidence="H2:test:[^":]+:status"[^>]*>)([^<]+)')
    matches = list(pattern.finditer(html))
    assert matches and matches[-1].group(2) != "supported"
    last = matches[-1]  # one place of several: every place must agree
    (store / "report.html").write_text(html[:last.start(2)] + "supported" + html[last.end(2):])


def _flip_a_test_status_in_evidence(store: Path) -> None:
    evidence = json.loads((store / "evidence.json").read_text())
    h2 = evidence["test_sets"][0]["hypotheses"][1]
    h2["status"] = "supported" if h2["status"] != "supported" else "not supported"
    (store / "evidence.json").write_text(json.dumps(evidence))


@pytest.mark.parametrize(("corrupt", "claim"), [(_flip_a_test_status_in_the_report, "claim6_every_test_status"),
                                                (_flip_a_test_status_in_evidence, "claim6_every_status_follows")])
def test_claim6_catches_a_test_status_the_rules_do_not_give(clean_store: Path, tmp_path: Path, corrupt, claim) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, corrupt), claim)


# Claim 6 against rules of its own (claims/section8.py): what a writer with other rules would publish.

def _edit_evidence(store: Path, edit: Callable[[dict], None]) -> None:
    """Edit evidence.json and the report's copy of it alike, as a writer with other rules would have written both."""
    from benchmark.report.render import report_data_from_html

    evidence = json.loads((store / "evidence.json").read_text())
    edit(evidence)
    (store / "evidence.json").write_text(json.dumps(evidence))
    html = (store / "report.html").read_text()
    island = report_data_from_html(html)
    island["evidence"] = evidence
    start = html.index('<script type="application/json" id="report-data">') + len(
        '<script type="application/json" id="report-data">')
    text = json.dumps(island).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    (store / "report.html").write_text(html[:start] + text + html[html.index("</script>", start):])


def _degenerate_comparison(evidence: dict) -> dict:
    return next(h for h in evidence["hypotheses"] if h.get("degenerate"))


def _drop_a_degenerate_tag(store: Path) -> None:
    def edit(evidence: dict) -> None:
        h = _degenerate_comparison(evidence)
        h["degenerate"] = None
        (h.get("monte_carlo") or h["balanced_monte_carlo"])["degenerate"] = False
    _edit_evidence(store, edit)


def _edit_a_collapsed_count(store: Path) -> None:
    def edit(evidence: dict) -> None:
        h = _degenerate_comparison(evidence)
        (h.get("monte_carlo") or h["balanced_monte_carlo"])["collapsed_resamples"] -= 1
    _edit_evidence(store, edit)


def _edit_a_collapsed_count_in_the_report(store: Path) -> None:
    html = (store / "report.html").read_text()
    match = re.search(r'(data-evidence="H\d:collapsed_resamples">)(\d+)', html)
    assert match is not None
    (store / "report.html").write_text(html[:match.start(2)] + str(int(match.group(2)) + 1) + html[match.end(2):])


@pytest.mark.parametrize("corrupt", [_drop_a_degenerate_tag, _edit_a_collapsed_count,
                                     _edit_a_collapsed_count_in_the_report])
def test_claim6_catches_a_tag_or_count_its_own_rules_do_not_give(clean_store: Path, tmp_path: Path, corrupt) -> None:
    assert_only_claim_fails(corrupted(clean_store, tmp_path, corrupt), "claim6_every_status_follows")


def _store_where_macro_f1_decides(clean: Path, tmp_path: Path, ignore_macro_f1: bool) -> Path:
    """Eight Monte Carlo resamples on which plain-ct-kd has the higher BA but the lower macro-F1 than
    same-modality-kd (40 cases each: 10 negative, 30 positive; nothing collapses), so H2 hangs on the macro-F1
    condition; evidence.json and the report are written by the benchmark's rules, or by rules without it."""
    from benchmark.evidence import rules
    from benchmark.experiment.matrix import Declaration, RunSpec
    from benchmark.experiment.metrics import compute_metrics
    from benchmark.experiment.store import ResultsStore
    from benchmark.report.render import write_report
    from benchmark.schemas import CasePrediction, Split, SplitRole

    store = tmp_path / "store"
    shutil.copytree(clean, store)
    template = ResultsStore(store).load_all()[0]
    for path in (store / "runs").glob("*.json"):
        path.unlink()
    ids = []
    for index in range(8):
        patients = [f"r{index}-{k:02d}" for k in range(40)]
        split = Split(manifest="paired", role=SplitRole.MONTE_CARLO, index=index, seed=1000 + index,
                      train_patients=(f"t{index}",), val_patients=tuple(patients))
        for name, (tn, tp) in (("plain-ct-kd", (10, 15)), ("same-modality-kd", (5, 29))):
            predictions = [CasePrediction(patient_id=p, image_id=f"{p}.png", label=int(k >= 10),
                                          score=(0.9 if k < 10 + tp else 0.1) if k >= 10 else (0.1 if k < tn else 0.9))
                           for k, p in enumerate(patients)]
            run_id = f"{name}-{index}"
            spec = RunSpec(run_id=run_id, declarations=(Declaration(block="tier-1", name=name),),
                           regime="paired-monte-carlo", configuration=template.spec.configuration, split=split,
                           seed=1000 + index)
            record = template.model_copy(update={"spec": spec, "val_hash": split.val_hash, "tests": {},
                                                 "predictions": predictions, "metrics": compute_metrics(predictions)})
            ResultsStore(store).write(record)
            ids.append(run_id)
    manifest = json.loads((store / "store.json").read_text())
    manifest.update(run_ids=ids, test_sets=[])
    (store / "store.json").write_text(json.dumps(manifest))

    real = rules.monte_carlo_comparison

    def without_macro_f1(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        c = real(*args, **kwargs)
        return c.model_copy(update={"confirmed": not c.missing and not c.undefined and not c.degenerate
                                    and c.mean_d_balanced_accuracy is not None and c.mean_d_balanced_accuracy > 0
                                    and c.p_value is not None and c.p_value <= rules.ALPHA})
    with pytest.MonkeyPatch.context() as patch:
        if ignore_macro_f1:
            patch.setattr(rules, "monte_carlo_comparison", without_macro_f1)
        write_report(store)
    return store


@pytest.mark.parametrize("ignore_macro_f1", [False, True])
def test_claim6_catches_evidence_written_by_rules_without_the_macro_f1_condition(
        clean_store: Path, tmp_path: Path, ignore_macro_f1: bool) -> None:
    store = _store_where_macro_f1_decides(clean_store, tmp_path, ignore_macro_f1)
    evidence = json.loads((store / "evidence.json").read_text())
    h2 = next(h for h in evidence["hypotheses"] if h["hypothesis"] == "H2")
    mc = h2["monte_carlo"]
    assert mc["mean_d_balanced_accuracy"] > 0 > mc["mean_d_macro_f1"] and mc["p_value"] <= 0.05
    assert h2["status"] == ("supported" if ignore_macro_f1 else "not supported")
    if ignore_macro_f1:
        assert_only_claim_fails(store, "claim6_every_status_follows")
    else:
        result = run_claims(store, "claim6")
        claim6 = len(re.findall(r"^def test_claim6", (REPO / "claims" / "test_claims.py").read_text(), re.MULTILINE))
        assert result.returncode == 0 and f"{claim6} passed" in result.stdout, result.stdout[-3000:]
