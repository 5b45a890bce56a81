"""How often a sweep passes by chance: the gate-chance study runs end to end, its counts recompute from its stores,
its family shares are what the per-cohort verdicts say, and a grid that cannot be run is refused naming the key."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.evidence.gate import gate_verdict
from benchmark.evidence.gate_chance import (
    CellOutcome,
    CohortOutcome,
    GateChanceResult,
    chance_series,
    packaged_gate_chance,
    read_gate_chance,
    tabulate_outcomes,
    write_gate_chance,
)
from benchmark.evidence.results import ALPHA, GateOutcome, Status
from benchmark.evidence.rules import MONTE_CARLO, monte_carlo_comparison
from benchmark.evidence.statistics import holm_adjusted
from benchmark.experiment.gate_chance_study import (
    DEFAULT_GATE_CHANCE_GRIDS,
    load_gate_chance_grid,
    study_settings,
    sweep_cells,
)
from benchmark.experiment.store import ResultsStore
from benchmark.report.figures import chance_curves


@pytest.fixture(scope="module")
def tiny_chance(tmp_path_factory: pytest.TempPathFactory) -> tuple[GateChanceResult, Path, str]:
    """The packaged `tiny` gate-chance grid through the command line, once: (its result, its folder, its output)."""
    out = tmp_path_factory.mktemp("gate-chance")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["gate-chance", "--grid", "tiny", "--out", str(out), "--workers", "2", "--quiet"]) == 0
    return read_gate_chance(out / "gate_chance.json"), out, printed.getvalue()


def test_the_command_prints_the_family_table_and_the_headline(tiny_chance) -> None:
    result, _, printed = tiny_chance
    assert ">= 1 gate pass" in printed and ">= 1 section 8 pass, Holm" in printed and result.statement in printed
    assert [f.m for f in result.families] == [1, 2] and len(result.cohorts) == 2
    assert result.families[-1].cells == result.cells == [c.name for c in sweep_cells(result.grid)]


def test_every_count_recomputes_from_the_stored_records(tiny_chance) -> None:
    result, _, _ = tiny_chance
    grid, gate = result.grid, study_settings(result.grid).gate
    gate_any = dict.fromkeys(grid.m, 0)
    holm_any = dict.fromkeys(grid.m, 0)
    for cohort in result.cohorts:
        records = ResultsStore(cohort.store).load_all()
        assert {r.spec.regime for r in records} == {"paired-kfold", "paired-monte-carlo"}
        names = [c.name for c in sweep_cells(grid)]
        gates, comparisons = [], []
        for name, stored in zip(names, cohort.cells, strict=True):
            mc = monte_carlo_comparison(records, name, grid.control, MONTE_CARLO)
            verdict = gate_verdict(records, "x", name, grid.control, Status.NOT_EVALUABLE, gate)
            assert (stored.gate, stored.section8_confirmed, stored.section8_p_value) == \
                   (verdict.outcome, mc.confirmed, mc.p_value)
            gates.append(verdict.outcome == GateOutcome.PASSES)
            comparisons.append(mc)
        for m in grid.m:
            adjusted = holm_adjusted([1.0 if c.p_value is None else c.p_value for c in comparisons[:m]])
            gate_any[m] += any(gates[:m])
            holm_any[m] += any(c.confirmed and p <= ALPHA for c, p in zip(comparisons[:m], adjusted, strict=True))
    for family in result.families:
        assert (family.gate_any.detections, family.section8_holm_any.detections) == \
               (gate_any[family.m], holm_any[family.m])
        assert family.gate_any.replicates == family.section8_holm_any.replicates == len(result.cohorts)


def test_at_least_one_among_m_never_falls_as_m_grows(tiny_chance) -> None:
    result, _, _ = tiny_chance
    for attribute in ("gate_any", "section8_holm_any", "section8_unadjusted_any"):
        rates = [getattr(f, attribute).rate for f in result.families]
        assert rates == sorted(rates), attribute


def test_the_result_round_trips_and_a_rerun_reuses_the_stores(tiny_chance, tmp_path: Path) -> None:
    result, out, _ = tiny_chance
    assert read_gate_chance(write_gate_chance(result, tmp_path / "again.json")) == result
    assert main(["gate-chance", "--grid", "tiny", "--out", str(out), "--workers", "1", "--quiet"]) == 0
    again = read_gate_chance(out / "gate_chance.json")
    assert again.cohorts == result.cohorts and again.families == result.families


def test_results_must_name_a_store_before_anything_trains(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["gate-chance", "--grid", "tiny", "--out", str(tmp_path / "o"), "--results", str(tmp_path)]) != 0
    error = capsys.readouterr().err.strip()
    assert error == f"ctxray-bench: error: {tmp_path}: --results: not a results store (no store.json); name the " \
                    "output folder of `ctxray-bench run`"
    assert not (tmp_path / "o").exists()


def _grids(tmp_path: Path, **changes: str) -> Path:
    """The packaged tiny grid with some lines replaced (key -> TOML value), as a grids file."""
    lines = DEFAULT_GATE_CHANCE_GRIDS.read_text(encoding="utf-8").split("[grids.tiny]")[1].splitlines()
    body = [f"{line.split(' = ')[0]} = {changes.pop(line.split(' = ')[0])}"
            if " = " in line and line.split(" = ")[0] in changes else line for line in lines]
    body += [f"{key} = {value}" for key, value in changes.items()]
    path = tmp_path / "grids.toml"
    path.write_text("[grids.tiny]" + "\n".join(body) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"sweep": "{ tau = [0.5], lamda = [0.3, 0.6] }"}, r"sweep: lamda: Extra inputs are not permitted"),
    ({"sweep": "{ tau = [0.4], lambda = [0.3, 0.6] }"}, r"sweep: tau: Input should be greater than or equal to 0.5"),
    ({"sweep": "{ tau = [], lambda = [0.3, 0.6] }"}, r"sweep: Value error, no values for tau"),
    ({"candidate": '"no-such-method"'}, r"candidate: unknown configuration 'no-such-method'"),
    ({"control": '"nope"'}, r"control: unknown configuration 'nope'"),
    ({"candidate": '"plain-ct-kd"'}, r"candidate: 'plain-ct-kd' declares 0 objective terms"),
    ({"m": "[1, 3]"}, r"m: Value error, \[3\] outside 1 .. 2 \(the sweep's cells\)"),
    ({"m": "[2, 1]"}, r"m: Value error, \[2, 1\] is not strictly increasing"),
    ({"overrides": "1"}, r"overrides: Extra inputs are not permitted"),
    ({"settings": '{ gate = { regime = "paired-exhaustive" } }'}, r"settings.gate.regime: 'paired-exhaustive'"),
])
def test_a_grid_that_cannot_run_is_refused_naming_the_file_and_key(tmp_path: Path, changes: dict[str, str],
                                                                   message: str) -> None:
    path = _grids(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message) as raised:
        load_gate_chance_grid("tiny", path)
    assert str(raised.value).startswith(f"{path}: gate-chance grid 'tiny': ")


def test_an_unknown_grid_lists_the_declared_ones() -> None:
    with pytest.raises(ConfigError, match="no gate-chance grid 'nope'; declared: default, tiny"):
        load_gate_chance_grid("nope")


def _outcome(cell: str, gate: bool, p: float | None, confirmed: bool | None = None) -> CellOutcome:
    confirmed = p is not None and p <= ALPHA if confirmed is None else confirmed
    return CellOutcome(cell=cell, params={}, gate=GateOutcome.PASSES if gate else GateOutcome.FAILS,
                       gate_mean_d_balanced_accuracy=0.0, gate_lower=0.0, gate_units=15, section8_confirmed=confirmed,
                       section8_p_value=p, section8_mean_d_balanced_accuracy=0.1, section8_mean_d_macro_f1=0.1,
                       section8_degenerate=False)


def test_family_shares_are_what_hand_set_verdicts_say() -> None:
    grid = load_gate_chance_grid("tiny")
    grid = grid.model_copy(update={"sweep": {"tau": [0.5], "lambda": [0.3, 0.6, 1.5]}, "m": [1, 2, 3]})
    names = [c.name for c in sweep_cells(grid)]
    # cohort 0: the gate passes the third cell only; section 8 confirms cell 1 at p = 0.004 (passes Holm at m <= 3:
    # 3 x 0.004 = 0.012). cohort 1: the gate passes cells 1 and 2; section 8 confirms cell 2 at p = 0.03 (passes
    # alone, not with Holm at m = 2: 2 x 0.03 = 0.06). cohort 2: nothing passes; cell 3 has p 0.01 but is not
    # confirmed (e.g. a degenerate comparison), so it never passes.
    patterns = [[(False, 0.004), (False, 0.5), (True, 0.9)],
                [(True, 0.6), (True, 0.03), (False, None)],
                [(False, 1.0), (False, 1.0), (False, 0.01, False)]]
    cohorts = [CohortOutcome(replicate=i, seed=i, paired_patients=24, negative_patients=6, store=f"s{i}",
                             cells=[_outcome(n, *v) for n, v in zip(names, row, strict=True)])
               for i, row in enumerate(patterns)]
    result = tabulate_outcomes(grid, cohorts, 1.0)
    shares = {f.m: (f.gate_any.detections, f.section8_holm_any.detections, f.section8_unadjusted_any.detections)
              for f in result.families}
    assert shares == {1: (1, 1, 1), 2: (1, 1, 2), 3: (2, 1, 2)}
    assert [f.cells for f in result.families] == [names[:1], names[:2], names]
    assert [(c.gate.detections, c.section8.detections) for c in result.per_cell] == [(1, 1), (1, 1), (1, 0)]
    assert result.families[0].gate_independent == pytest.approx(1 / 3)
    assert result.families[2].gate_independent == pytest.approx(1 - (1 - 3 / 9) ** 3)
    assert result.families[2].gate_any.low == pytest.approx(0.0943, abs=1e-4)  # Clopper-Pearson of 2/3
    assert "m = 3 cells: 0.67 (2/3" in result.statement and result.distinct_cells == 3
    assert (result.margins.pairs, result.margins.smallest_section8_p) == (9, 0.004)
    assert result.margins.holm_threshold == pytest.approx(0.05 / 3)
    assert result.margins.gate_reaching_threshold == result.margins.gate_lower_above_zero == 0


def test_cohorts_without_every_cell_in_declared_order_are_refused() -> None:
    grid = load_gate_chance_grid("tiny")
    names = [c.name for c in sweep_cells(grid)]
    cohort = CohortOutcome(replicate=0, seed=0, paired_patients=24, negative_patients=6, store="s",
                           cells=[_outcome(n, False, 1.0) for n in reversed(names)])
    with pytest.raises(ValueError, match="declared order"):
        tabulate_outcomes(grid, [cohort], 1.0)


def test_the_packaged_measurement_is_of_the_packaged_default_grid_and_draws() -> None:
    result = packaged_gate_chance()
    assert result.grid == load_gate_chance_grid("default")
    assert [f.m for f in result.families] == [1, 2, 4, 8, 16] and len(result.cohorts) >= 20
    assert result.code_version and result.created_at and result.machine
    series, independent = chance_series(result)
    uri = chance_curves(series, independent, cohorts=len(result.cohorts), title="chance of >= 1 false pass")
    assert uri.startswith("data:image/svg+xml;base64,")


def test_the_report_store_gets_the_json_and_its_report_again(tiny_chance, synthetic_store: Path,
                                                            tmp_path: Path) -> None:
    _, out, _ = tiny_chance
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    before = (store / "report.html").stat().st_mtime_ns
    assert main(["gate-chance", "--grid", "tiny", "--out", str(out), "--quiet", "--results", str(store)]) == 0
    copied, written = read_gate_chance(store / "gate_chance.json"), read_gate_chance(out / "gate_chance.json")
    assert (copied.families, copied.cohorts) == (written.families, written.cohorts)
    assert (store / "report.html").stat().st_mtime_ns > before
