"""The package layout shows the flow: data -> methods -> experiment -> evidence -> report, never backwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "benchmark"
STAGES = ["data", "methods", "experiment", "evidence", "report"]


def _modules() -> list[Path]:
    return sorted(p for stage in STAGES for p in (PACKAGE / stage).glob("*.py"))


@pytest.mark.parametrize("module", _modules(), ids=lambda p: f"{p.parent.name}.{p.stem}")
def test_no_module_imports_a_later_stage(module: Path) -> None:
    mine = STAGES.index(module.parent.name)
    later = []
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "benchmark" and len(parts) > 1 and parts[1] in STAGES and STAGES.index(parts[1]) > mine:
                later.append(name)
    assert not later, f"{module.relative_to(PACKAGE.parent)} imports a later stage: {later}"


def test_no_module_is_left_at_the_top_that_belongs_to_a_stage() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "atomic", "config", "errors", "outputs"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == {*STAGES, "bench", "cli", "schemas"}


def _every_module() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(module: Path) -> list[str]:
    """Every module `module` imports (at the top or inside a function)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def _calls(module: Path, name: str) -> list[int]:
    """The lines where `module` calls something named `name`."""
    return [node.lineno for node in ast.walk(ast.parse(module.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and (getattr(node.func, "id", None) == name
                                               or getattr(node.func, "attr", None) == name)]


@pytest.mark.parametrize("module", _every_module(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_400_lines(module: Path) -> None:
    lines = len(module.read_text(encoding="utf-8").splitlines())
    assert lines <= 400, f"{module.relative_to(PACKAGE.parent)} has {lines} lines"


def test_only_the_study_assembles_an_engine() -> None:
    """Commands, workers, the bench, the claims and the tests all get theirs from `experiment.study`."""
    modules = _every_module() + sorted((PACKAGE.parent / "claims").glob("*.py")) + sorted(
        (PACKAGE.parent / "tests").glob("*.py"))
    found = {str(m.relative_to(PACKAGE.parent)): _calls(m, "Engine") for m in modules}
    assert {name for name, lines in found.items() if lines} == {"benchmark/experiment/study.py"}, found


def test_networks_and_objectives_are_built_by_one_function() -> None:
    for name in ("build_network", "Objective"):
        found = {str(m.relative_to(PACKAGE)) for m in _every_module() if _calls(m, name)}
        assert found == {"methods/trainable.py"}, f"{name} is called in {sorted(found)}"


def test_the_command_line_reaches_training_only_through_the_study() -> None:
    """cli -> study -> stages -> store: a command names the study, the store or a stage's outputs, never the engine,
    the scheduler or a worker."""
    inner = ("benchmark.methods.engine", "benchmark.methods.teachers", "benchmark.methods.training",
             "benchmark.methods.trainable", "benchmark.experiment.scheduling", "benchmark.experiment.worker",
             "benchmark.experiment.executors", "benchmark.data.pipeline.prepare_data")
    for module in sorted((PACKAGE / "cli").glob("*.py")):
        reached = [name for name in _imports(module) if name.startswith(inner)]
        assert not reached, f"{module.relative_to(PACKAGE.parent)} reaches past the study: {reached}"


@pytest.mark.parametrize("module", [m for m in _every_module() if m.parent.name in (*STAGES, "schemas")]
                         + [PACKAGE / "config.py"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_stage_reaches_back_to_the_command_line_or_the_bench(module: Path) -> None:
    back = [name for name in _imports(module) if name.startswith(("benchmark.cli", "benchmark.bench"))]
    assert not back, f"{module.relative_to(PACKAGE.parent)} reaches back to {back}"
