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
    assert top == {"__init__", "atomic", "bench", "cli", "config", "errors", "outputs", "schemas"}
