"""A cohort large enough to hold out more than one negative patient per validation set: the declared number
flows from the settings through the splits into the store, the claims and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.experiment.store import ResultsStore
from tests.conftest import write_smoke_store


@pytest.fixture(scope="module")
def two_negative_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke store whose settings declare two negative patients in every paired validation set."""
    return write_smoke_store(tmp_path_factory.mktemp("two-negatives"),
                             "[data]\nimage_size = 32\n[splits]\nvalidation_negatives = 2\n",
                             paired_patients=12, negative_fraction=0.4)


def test_the_store_records_the_declared_negatives_and_every_split_holds_them(two_negative_store: Path) -> None:
    store = ResultsStore(two_negative_store)
    manifest = store.manifest()
    assert manifest.settings.splits.validation_negatives == 2
    for record in store.load_all():
        if record.spec.regime in ("paired-fixed", "paired-monte-carlo"):
            negatives = {p.patient_id for p in record.predictions if p.label == 0} - {
                p.patient_id for p in record.predictions if p.label == 1}
            assert len(negatives) == 2, record.spec.run_id


def test_the_claims_pass_on_the_declared_number_and_fail_on_one_negative_less(two_negative_store: Path,
                                                                             tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmark.cli", "claims", "--results"]
    passed = subprocess.run([*command, str(two_negative_store), "--", "-q", "-k", "claim2_every_validation_set"],
                            capture_output=True,
                            text=True, timeout=600)
    assert passed.returncode == 0 and "1 passed" in passed.stdout, passed.stdout[-2000:]
    changed = tmp_path / "store"
    subprocess.run(["cp", "-r", str(two_negative_store), str(changed)], check=True)
    manifest = json.loads((changed / "store.json").read_text())
    manifest["settings"]["splits"]["validation_negatives"] = 1
    (changed / "store.json").write_text(json.dumps(manifest))
    failed = subprocess.run([*command, str(changed), "--", "-q", "-k", "claim2_every_validation_set"],
                            capture_output=True, text=True,
                            timeout=600)
    assert failed.returncode == 1 and "declared 1" in failed.stdout, failed.stdout[-2000:]


def test_the_report_states_the_declared_negatives(two_negative_store: Path) -> None:
    html = (two_negative_store / "report.html").read_text()
    assert "exactly 2 negatives" in html and "exactly one negative" not in html
