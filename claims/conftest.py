"""Locate the results store the claim tests judge.

Order: `--results DIR`, then $CTXRAY_RESULTS; with neither, the `paper` profile is run on the data
(`--data PATH`, $CTXRAY_DATA, or the fetched default) into $CTXRAY_CLAIMS_OUT (default
results/paper), reusing whatever that store already holds, and its report is rendered.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from benchmark.claims.options import add_options, named_data_root, named_externals
from benchmark.data.pipeline import cohort_source, resolve_data_root
from benchmark.data.test_sets import ExternalSpec
from benchmark.errors import StoreError
from benchmark.experiment.store import ResultsStore, RunRecord, StoreManifest


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _produce_paper_store(data: Path | None, externals: list[ExternalSpec]) -> Path:
    from benchmark.experiment.study import RunRequest, run_profile
    from benchmark.report.render import write_store_outputs

    out = Path(os.environ.get("CTXRAY_CLAIMS_OUT", "results/paper"))
    outcome = run_profile(RunRequest(cohort=resolve_data_root(data), profile="paper", out=out,
                                     workers=os.cpu_count() or 1, progress=False, externals=tuple(externals)))
    if outcome.failures:
        raise StoreError(f"{len(outcome.failures)} paper run(s) failed: {next(iter(outcome.failures.values()))}")
    write_store_outputs(out)
    return out


@pytest.fixture(scope="session")
def results_dir(pytestconfig: pytest.Config) -> Path:
    """The output folder under judgement."""
    given = pytestconfig.getoption("--results") or os.environ.get("CTXRAY_RESULTS")
    return Path(given) if given else _produce_paper_store(named_data_root(pytestconfig), named_externals(pytestconfig))


@pytest.fixture(scope="session")
def store(results_dir: Path) -> ResultsStore:
    return ResultsStore(results_dir)


@pytest.fixture(scope="session")
def manifest(store: ResultsStore) -> StoreManifest:
    return store.manifest()


@pytest.fixture(scope="session")
def records(store: ResultsStore, manifest: StoreManifest) -> list[RunRecord]:
    loaded = store.load_all()
    assert loaded, f"{store.root}: the store holds no finished run"
    return loaded


@pytest.fixture(scope="session")
def report_html(results_dir: Path) -> str:
    path = results_dir / "report.html"
    assert path.is_file(), f"{path}: no report (run `ctxray-bench report --results {results_dir}`)"
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def cohort_location(pytestconfig: pytest.Config, manifest: StoreManifest) -> Path:
    """The cohort the store was computed on: a cohort manifest, or a collection data root, whose table (the manifest,
    or metadata.csv) has the stored hash; where the store says, else where --data / $CTXRAY_DATA says."""
    named = named_data_root(pytestconfig)
    candidates = [manifest.data.location, str(named) if named else None]
    for candidate in filter(None, candidates):
        table = Path(cohort_source(candidate).table)
        if table.is_file() and hashlib.sha256(table.read_bytes()).hexdigest() == manifest.data.metadata_sha256:
            return Path(candidate)
    pytest.fail(f"cannot rerun runs: none of {candidates} holds the {manifest.data.table_name} this store was "
                f"computed on")


@pytest.fixture(scope="session")
def external_files(pytestconfig: pytest.Config, manifest: StoreManifest) -> dict[str, Path]:
    """Where each external test set of the store lies: --external NAME=FILE, else the manifest path the store
    recorded; the file must have the stored sha256."""
    named = {spec.name: spec.path for spec in named_externals(pytestconfig)}
    found = {}
    for test_set in manifest.test_sets:
        if test_set.kind != "external":
            continue
        path = named.get(test_set.name, Path(test_set.table))
        if not path.is_file():
            pytest.fail(f"external test set {test_set.name}: {path} not found (pass --external {test_set.name}=FILE)")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == test_set.table_sha256, f"{path}: not the manifest test set {test_set.name} was scored on"
        found[test_set.name] = path
    unknown = sorted(set(named) - set(found))
    assert not unknown, f"--external names test sets this store does not have: {unknown}"
    return found


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """One line (shown even with -q) when the store under judgement holds run records another code version wrote."""
    for line in _older_records(config):
        terminalreporter.write_line(line, yellow=True)
    for report in terminalreporter.stats.get("passed", []):  # what a claim states about itself (claim 7: its time)
        for key, value in getattr(report, "user_properties", []):
            if key == "statement":
                terminalreporter.write_line(str(value))


def _older_records(config: pytest.Config) -> list[str]:
    """The line saying which run records of the store another code version wrote; none when all are this code's."""
    from benchmark.experiment.store import code_version, other_code_versions

    given = config.getoption("--results", default=None) or os.environ.get("CTXRAY_RESULTS")
    runs = Path(given) / "runs" if given else None
    if runs is None or not runs.is_dir():
        return []
    versions = []
    for path in sorted(runs.glob("*.json")):
        try:
            versions.append(str(json.loads(path.read_bytes()).get("code_version")))
        except (OSError, ValueError):
            continue  # an unreadable record is claim business, named there
    older = other_code_versions(versions, code_version())
    return [f"store {given}: {older}"] if older else []
