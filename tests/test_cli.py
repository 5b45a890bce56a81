"""`ctxray-bench cohorts`: the printed table, the JSON file, and clear errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.schemas import CohortSummary
from tests.conftest import CohortWriter, row


def test_cohorts_prints_filtering_manifests_splits_and_audit(write_cohort: CohortWriter, paired_rows: list,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_cohort(paired_rows + [row("z", "X-ray", "todo", "todo.png")])
    assert main(["cohorts", "--data", str(root), "--cache", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    for heading in ("Row filtering", "Manifests", "Regimes", "Default splits", "Data audit"):
        assert heading in out
    assert re.search(r"todo_finding\s+1\n", out)
    assert "paired-monte-carlo" in out


def test_cohorts_json_validates_against_the_schema(write_cohort: CohortWriter, paired_rows: list,
                                                  tmp_path: Path) -> None:
    root = write_cohort(paired_rows)
    target = tmp_path / "cohorts.json"
    assert main(["cohorts", "--data", str(root), "--cache", str(tmp_path / "c"), "--json", str(target)]) == 0
    summary = CohortSummary.model_validate(json.loads(target.read_text()))
    assert summary.manifests["paired"].patients == 9 and summary.manifests["all-xray"].patients == 10
    assert {s.regime for s in summary.splits} >= {"paired-fixed", "paired-monte-carlo"}


@pytest.mark.parametrize(("flags", "regimes"), [([], set()), (["--kfold"], {"paired-kfold"}),
                                                (["--exhaustive", "--kfold"], {"paired-exhaustive", "paired-kfold"})])
def test_cohorts_draws_the_optional_regimes_it_is_asked_for(write_cohort: CohortWriter, paired_rows: list,
                                                            tmp_path: Path, flags: list[str],
                                                            regimes: set[str]) -> None:
    target = tmp_path / "cohorts.json"
    assert main(["cohorts", "--data", str(write_cohort(paired_rows)), "--cache", str(tmp_path / "c"), "--json",
                 str(target), *flags]) == 0
    drawn = {r.name for r in CohortSummary.model_validate(json.loads(target.read_text())).regimes}
    assert drawn & {"paired-exhaustive", "paired-kfold"} == regimes


def test_cohorts_reads_the_data_root_from_the_environment(write_cohort: CohortWriter, paired_rows: list,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXRAY_DATA", str(write_cohort(paired_rows)))
    assert main(["cohorts", "--cache", str(tmp_path / "c")]) == 0


def test_no_data_root_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                          tmp_path: Path) -> None:
    monkeypatch.delenv("CTXRAY_DATA", raising=False)
    monkeypatch.setenv("CTXRAY_HOME", str(tmp_path))  # nothing fetched there
    assert main(["cohorts"]) == 2
    err = capsys.readouterr().err
    assert "pass --data PATH, set CTXRAY_DATA" in err and "ctxray-bench data fetch" in err


def test_missing_column_is_reported_without_a_traceback(write_cohort: CohortWriter, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "a.png")],
                        columns=["patientid", "offset", "modality", "folder", "filename", "view"])
    assert main(["cohorts", "--data", str(root), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "required column(s) missing: finding" in err and "Traceback" not in err


def test_a_cohort_too_small_for_the_paired_regimes_still_prints(write_cohort: CohortWriter, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    root = write_cohort([row("1", "X-ray", "No Finding", "a.png"), row("1", "CT", "No Finding", "b.png")])
    assert main(["cohorts", "--data", str(root), "--cache", str(tmp_path / "c")]) == 0
    assert "paired-monte-carlo: not drawn" in capsys.readouterr().out


def test_train_runs_one_configuration_and_prints_its_predictions(write_cohort: CohortWriter, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from tests.conftest import paired_cohort_rows

    root = write_cohort(paired_cohort_rows())
    code = main(["train", "plain-ct-kd", "--data", str(root), "--cache", str(tmp_path / "c"),
                 "--regime", "paired-monte-carlo", "--split", "1", "--teachers", str(tmp_path / "t")])
    out = capsys.readouterr().out
    assert code == 0 and "paired/monte-carlo/1-" in out and "(seed 1001, device cpu)" in out
    assert "teacher" in out and "P(COVID-19)" in out


def test_train_refuses_an_unknown_configuration(write_cohort: CohortWriter, paired_rows: list, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "nope", "--data", str(write_cohort(paired_rows)), "--cache", str(tmp_path / "c")]) == 2
    assert "unknown configuration 'nope'" in capsys.readouterr().err
