"""A store written by older code is named as such, and `report` republishes what `run` publishes (issue 22 item 6)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main

REPO = Path(__file__).resolve().parent.parent


def _copy_with_an_old_record(synthetic_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(synthetic_store, copy)
    path = sorted((copy / "runs").glob("*.json"))[0]
    record = json.loads(path.read_text())
    record["code_version"] = "0.0.1+gold"
    path.write_text(json.dumps(record))
    return copy


def test_report_rewrites_the_summaries_and_evidence_as_run_does(synthetic_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(synthetic_store, copy)
    for name in ("summary.csv", "test_summary.csv", "evidence.json", "report.html"):
        (copy / name).unlink()
    assert main(["report", "--results", str(copy)]) == 0
    for name in ("summary.csv", "test_summary.csv", "evidence.json", "report.html"):
        assert (copy / name).read_bytes() == (synthetic_store / name).read_bytes() or name == "report.html", name


def test_report_names_the_records_another_code_version_wrote(synthetic_store: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    copy = _copy_with_an_old_record(synthetic_store, tmp_path)
    assert main(["report", "--results", str(copy)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "another code version" in line]
    assert len(warning) == 1 and "1 by 0.0.1+gold" in warning[0]


def test_the_claims_name_the_records_another_code_version_wrote(synthetic_store: Path, tmp_path: Path) -> None:
    copy = _copy_with_an_old_record(synthetic_store, tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--results", str(copy), "-q", "-p",
                           "no:cacheprovider", "-k", "claim2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "1 by 0.0.1+gold" in done.stdout, done.stdout[-2000:]
