"""claims/section8.py (the claims' own reading of PROTOCOL.md section 8) and benchmark.evidence agree on every
status, p-value, mean difference, collapsed count and tag, over random result tables: two implementations, one rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.claims.section8 import all_verdicts, disagreements, sign_flip, stated_verdicts
from benchmark.evidence.rules import evaluate_hypotheses
from benchmark.evidence.statistics import exact_sign_flip_p_value
from benchmark.experiment.store import ResultsStore, RunRecord
from tests.test_evidence import NAMES, table


@pytest.fixture(scope="module")
def template(synthetic_store: Path) -> RunRecord:
    return ResultsStore(synthetic_store).load_all()[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resamples=st.integers(1, 8), data=st.data(), ppr_inside=st.booleans())
def test_the_claims_rules_agree_with_the_benchmarks_on_random_tables(template: RunRecord, resamples: int,
                                                                    data: st.DataObject, ppr_inside: bool) -> None:
    names = data.draw(st.lists(st.sampled_from(NAMES), min_size=1, unique=True))
    correct = st.integers(0, 4)
    mc = {n: data.draw(st.lists(correct, min_size=resamples, max_size=resamples)) for n in names}
    fixed = {n: data.draw(st.lists(correct, min_size=0, max_size=4)) for n in names}
    records = table(template, mc, {n: v for n, v in fixed.items() if v}, ppr_inside)
    stated = stated_verdicts(json.loads(evaluate_hypotheses(records).model_dump_json()))
    assert disagreements(all_verdicts(records, []), stated) == []


@given(st.lists(st.sampled_from([-1 / 3, -1 / 4, 0.0, 1 / 12, 1 / 4, 1 / 3, 0.5, 1e-17]), min_size=2, max_size=12))
def test_the_claims_sign_flip_enumeration_gives_the_benchmarks_p(differences: list[float]) -> None:
    import numpy as np

    assert sign_flip(differences) == exact_sign_flip_p_value(np.asarray(differences))


def test_the_claims_rules_import_nothing_from_the_benchmark() -> None:
    import ast

    source = Path(__file__).resolve().parent.parent / "claims" / "section8.py"
    tree = ast.parse(source.read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [m for m in imported if m.startswith("benchmark")], imported
