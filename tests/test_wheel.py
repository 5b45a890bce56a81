"""What users install: a built wheel renders the report and runs the claim tests, away from this repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import claim_count

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "benchmark", "claims", "templates")


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding only the built wheel, with this environment's dependencies visible."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = dist.glob("ctxray_bench-*.whl")
    env = work / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # torch, pandas, ... come from this environment (no network to install them), after the wheel's own files
    (site / "zz-dependencies.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n")
    return env


def installed(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(env / "bin" / "ctxray-bench"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


def test_the_wheel_carries_the_claims_and_the_templates(wheel_env: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(wheel_env / "bin" / "python"), "-c",
                            "import benchmark, benchmark.claims; print(benchmark.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
    package = Path(where).parent
    assert package.is_relative_to(wheel_env)
    assert (package / "claims" / "test_claims.py").is_file() and (package / "claims" / "conftest.py").is_file()
    assert (package / "templates" / "report.html.j2").is_file() and (package / "configs" / "matrix.toml").is_file()
    assert (package / "configs" / "gate_chance_measured.json").is_file()  # the packaged gate-chance measurement


def test_the_installed_wheel_renders_a_report_and_passes_the_claims(wheel_env: Path, synthetic_store: Path,
                                                                     tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    (store / "report.html").unlink()
    rendered = installed(wheel_env, "report", "--results", str(store), cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert (store / "report.html").stat().st_size > 10_000
    judged = installed(wheel_env, "claims", "--results", str(store), "--", "-q", cwd=tmp_path)
    assert judged.returncode == 0, judged.stdout[-3000:] + judged.stderr[-3000:]
    assert f"{claim_count()} passed" in judged.stdout


def test_the_claims_command_returns_pytests_exit_code_on_a_store_that_breaks_a_claim(synthetic_store: Path,
                                                                                      tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    path = sorted((store / "runs").glob("*.json"))[0]
    record = json.loads(path.read_text())
    record["metrics"]["balanced_accuracy"] = round(1.0 - record["metrics"]["balanced_accuracy"] + 0.01, 6)
    path.write_text(json.dumps(record))
    judged = subprocess.run([sys.executable, "-m", "benchmark.cli", "claims", "--results", str(store), "--", "-q",
                             "-k", "claim5"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert judged.returncode == 1, judged.stdout[-3000:]
    assert "1 failed" in judged.stdout
