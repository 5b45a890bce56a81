"""Errors of the machine and of bad input come out as one line naming the path and the cause, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmark import __version__
from benchmark.cli import main
from tests.conftest import CohortWriter, row

CUDA = pytest.importorskip("torch").cuda.is_available()


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    """The error printed to stderr, asserted to be exactly one line and no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("ctxray-bench: error: ")
    return err


def test_an_out_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "results"
    target.write_text("not a folder")
    assert main(["run", "--data", str(tmp_path), "--out", str(target)]) == 1
    assert f"{target}: the output folder exists and is not a folder" in one_line_error(capsys)
    assert target.read_text() == "not a folder"


def test_an_out_under_proc_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--data", str(tmp_path), "--out", "/proc/ctxray-results"]) == 1
    assert "/proc/ctxray-results: cannot create the output folder" in one_line_error(capsys)


ROOT = os.geteuid() == 0
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search",
          "--"]  # root without the capabilities that let it write anywhere: file permissions then apply to it


@pytest.fixture
def unwritable_folder() -> Iterator[Path]:
    """A folder we may not write: owned by another user with mode 755 when we are root, else mode 555."""
    folder = Path(tempfile.mkdtemp(prefix="ctxray-unwritable-"))
    if ROOT:
        os.chown(folder, 65534, 65534)
    folder.chmod(0o755 if ROOT else 0o555)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def run_cli_without_write_permission(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process that file permissions bind (as root: without CAP_DAC_OVERRIDE)."""
    return subprocess.run([*(NO_DAC if ROOT else []), sys.executable, "-m", "benchmark.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_an_unwritable_out_names_the_folder_and_the_uid(unwritable_folder: Path) -> None:
    out = unwritable_folder / "out"
    result = run_cli_without_write_permission("run", "--data", "/tmp", "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"ctxray-bench: error: {out}: cannot create the output folder: {out}: "
                                     f"Permission denied (running as uid {os.geteuid()})")
    result = run_cli_without_write_permission("run", "--data", "/tmp", "--out", str(unwritable_folder))
    assert result.stderr.strip() == (f"ctxray-bench: error: {unwritable_folder}: cannot write in the output folder: "
                                     f"Permission denied (running as uid {os.geteuid()})")


def test_an_unwritable_report_out_is_a_one_line_error(synthetic_store: Path, unwritable_folder: Path) -> None:
    target = unwritable_folder / "report.html"
    result = run_cli_without_write_permission("report", "--results", str(synthetic_store), "--out", str(target))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"ctxray-bench: error: {target}: cannot write in {unwritable_folder}: "
                                     f"Permission denied (running as uid {os.geteuid()})")


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system (a tmpfs mounted ro); skipped where this user may not mount."""
    point = tmp_path / "read-only"
    point.mkdir()
    if not ROOT or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)],
                                  capture_output=True).returncode != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    yield point
    subprocess.run(["umount", str(point)], check=True)


def test_an_out_on_a_read_only_file_system_is_a_one_line_error(read_only_mount: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    out = read_only_mount / "results"
    assert main(["run", "--data", "/tmp", "--out", str(out)]) == 1
    assert one_line_error(capsys) == (f"ctxray-bench: error: {out}: cannot create the output folder: {out}: "
                                      f"Read-only file system (running as uid {os.geteuid()})")


def test_a_settings_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "settings.toml"
    config.write_bytes(b"[data]\nimage_size = 6\xff4\n")
    assert main(["cohorts", "--data", str(tmp_path), "--config", str(config)]) == 2
    assert f"{config}: settings file is not UTF-8 text (byte 0xff at offset 21)" in one_line_error(capsys)


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert main(["run", "--debug", "--data", str(tmp_path), "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "OutputError" in err
    assert err.strip().splitlines()[-1].startswith("ctxray-bench: error: ")


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_fails_before_any_worker_or_output(write_cohort: CohortWriter, paired_rows: list,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code = main(["run", "--data", str(write_cohort(paired_rows)), "--profile", "smoke", "--out", str(out),
                 "--device", "cuda", "--cache", str(tmp_path / "c")])
    assert code == 2
    assert one_line_error(capsys) == "ctxray-bench: error: --device cuda was asked for, but torch sees no CUDA device"
    assert not out.exists()


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_below_one_are_refused(workers: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--workers", workers])
    assert exit_.value.code == 2
    assert f"argument --workers: must be at least 1, not {workers}" in capsys.readouterr().err


def test_a_header_only_metadata_says_nothing_was_kept(write_cohort: CohortWriter, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    root = write_cohort([])
    assert main(["run", "--data", str(root), "--profile", "smoke", "--out", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "c")]) == 2
    assert "metadata.csv: no row was kept" in one_line_error(capsys)


def test_images_leaving_the_data_root_say_nothing_was_kept_and_why(write_cohort: CohortWriter, paired_rows: list,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    elsewhere = write_cohort(paired_rows, name="elsewhere")
    root = tmp_path / "linked"
    root.mkdir()
    (root / "metadata.csv").write_bytes((elsewhere / "metadata.csv").read_bytes())
    (root / "images").symlink_to(elsewhere / "images")
    assert main(["cohorts", "--data", str(root), "--cache", str(tmp_path / "c")]) == 2
    err = one_line_error(capsys)
    assert f"all {len(paired_rows)} rows were dropped ({len(paired_rows)} outside_data_root)" in err


def test_a_megabyte_cell_does_not_blow_up_the_skipped_rows_table(write_cohort: CohortWriter, paired_rows: list,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    huge = "x" * 2_000_000
    root = write_cohort(paired_rows + [row(huge, "X-ray", "todo", "t.png"), row("q", "X-ray", "todo", "u.png")])
    assert main(["cohorts", "--data", str(root), "--cache", str(tmp_path / "c"), "--list-skipped"]) == 0
    out = capsys.readouterr().out
    assert len(out) < 20_000 and max(len(line) for line in out.splitlines()) < 400
    assert "[2,000,000 chars]" in out and "Skipped rows" in out and "Data audit" in out


def test_no_data_in_a_container_says_how_to_mount_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("CTXRAY_DATA", raising=False)
    monkeypatch.setenv("CTXRAY_HOME", str(tmp_path))
    monkeypatch.setenv("CTXRAY_CONTAINER", "1")
    assert main(["cohorts"]) == 2
    assert "-v /path/to/covid-chestxray-dataset:/data:ro -e CTXRAY_DATA=/data" in one_line_error(capsys)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"ctxray-bench {__version__}"
