"""`ctxray-bench data fetch` against a local bare git repository (these machines have no internet)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.data import fetch as fetch_module
from benchmark.data.fetch import fetch
from benchmark.data.pipeline import resolve_data_root
from benchmark.data.synthetic import write_synthetic_cohort
from benchmark.errors import FetchError


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[str, str, str]:
    """(file:// url of a bare repository holding a synthetic collection, its commit, metadata sha256)."""
    work = write_synthetic_cohort(tmp_path / "work", paired_patients=3, ct_only_patients=0,
                                  xray_only_patients=1, size=16)
    git("init", "--quiet", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "data", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work)
    subprocess.run(["git", "clone", "--quiet", "--bare", str(work), str(tmp_path / "bare.git")], check=True)
    subprocess.run(["git", "-C", str(tmp_path / "bare.git"), "config", "uploadpack.allowAnySHA1InWant", "true"],
                   check=True)
    sha = hashlib.sha256((work / "metadata.csv").read_bytes()).hexdigest()
    return (tmp_path / "bare.git").as_uri(), commit, sha


def test_fetch_checks_out_the_commit_and_verifies_it(upstream, tmp_path: Path) -> None:
    url, commit, sha = upstream
    folder, verification, fetched = fetch(tmp_path / "data", commit, url, sha)
    assert fetched and verification.complete and verification.metadata_sha256 == sha
    assert verification.present_images == verification.referenced_images > 0
    assert git("rev-parse", "HEAD", cwd=folder) == commit


def test_a_second_fetch_is_a_verified_no_op(upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, commit, sha = upstream
    fetch(tmp_path / "data", commit, url, sha)
    monkeypatch.setattr(fetch_module, "_git", lambda *a, **k: pytest.fail("git ran again"))
    assert fetch(tmp_path / "data", commit, url, sha)[2] is False


def test_an_interrupted_fetch_resumes(upstream, tmp_path: Path) -> None:
    url, commit, sha = upstream
    dest = tmp_path / "data"
    dest.mkdir()
    git("init", "--quiet", cwd=dest)  # what an interrupted first attempt leaves behind
    git("remote", "add", "origin", url, cwd=dest)
    assert fetch(dest, commit, url, sha)[1].complete


def test_deleted_images_are_restored_by_fetching_again(upstream, tmp_path: Path) -> None:
    url, commit, sha = upstream
    folder, _, _ = fetch(tmp_path / "data", commit, url, sha)
    victim = next((folder / "images").iterdir())
    victim.unlink()
    folder_again, verification, fetched = fetch(folder, commit, url, sha)
    assert fetched and verification.complete and victim.is_file()


def test_a_wrong_metadata_hash_is_refused(upstream, tmp_path: Path) -> None:
    url, commit, _ = upstream
    with pytest.raises(FetchError, match="is not the expected"):
        fetch(tmp_path / "data", commit, url, "0" * 64)


def test_missing_referenced_images_are_refused(tmp_path: Path) -> None:
    work = write_synthetic_cohort(tmp_path / "work", paired_patients=3, ct_only_patients=0,
                                  xray_only_patients=1, size=16)
    removed = sorted((work / "images").iterdir())[0]
    removed.unlink()
    git("init", "--quiet", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "data", cwd=work)
    with pytest.raises(FetchError, match=f"missing, e.g. {removed.name}"):
        fetch(tmp_path / "data", git("rev-parse", "HEAD", cwd=work), work.as_uri())


def test_an_unknown_commit_is_a_clear_error(upstream, tmp_path: Path) -> None:
    url, _, _ = upstream
    with pytest.raises(FetchError, match="git fetch"):
        fetch(tmp_path / "data", "1" * 40, url)


def test_the_command_prints_where_the_data_is_and_run_finds_it_there(upstream, tmp_path: Path, monkeypatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    url, commit, sha = upstream
    monkeypatch.setenv("CTXRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CTXRAY_DATA", raising=False)
    assert main(["data", "fetch", "--ref", commit, "--url", url, "--sha256", sha]) == 0
    expected = tmp_path / "home" / "data" / "covid-chestxray-dataset"
    assert f"data: {expected.resolve()}" in capsys.readouterr().out
    assert resolve_data_root(None) == expected
    monkeypatch.setenv("CTXRAY_DATA", str(tmp_path / "home"))
    assert resolve_data_root(None) == tmp_path / "home"
    assert resolve_data_root(tmp_path) == tmp_path
