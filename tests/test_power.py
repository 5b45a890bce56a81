"""The power study: planted effects are detected, null ones are not; rates, intervals and the decisive cell."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.evidence.power import PowerCell, Rate, minimum_decisive_experiment, read_power
from benchmark.experiment.power_study import load_grid
from tests.power_run import run_power


def test_a_strong_planted_effect_on_a_large_cohort_is_detected_in_most_replicates(tiny_power) -> None:
    result, _ = tiny_power
    cell = next(c for c in result.cells if c.resamples == 16)
    assert cell.h1_power is not None and cell.h1_power.detections >= 2 and cell.h1_power.replicates == 3


def test_a_null_effect_is_detected_in_few_replicates(tiny_power) -> None:
    result, _ = tiny_power
    for cell in result.cells:
        assert cell.h1_false_positive_rate is not None and cell.h1_false_positive_rate.detections <= 1


def test_every_replicate_store_holds_the_three_configurations_on_every_resample(tiny_power) -> None:
    from benchmark.experiment.store import ResultsStore

    result, _ = tiny_power
    store = ResultsStore(result.replicates[0].store)
    records = store.load_all()
    assert {n for r in records for n in r.spec.names} == {"student-only", "plain-ct-kd", "same-modality-kd"}
    assert len({r.val_hash for r in records}) == max(result.grid.resamples)


def test_a_rerun_reuses_the_stored_replicates(tiny_power) -> None:
    result, out = tiny_power
    again = run_power(load_grid("tiny"), out, workers=2, progress=False)
    assert again.cells == result.cells and again.seconds < result.seconds


def test_rates_carry_exact_binomial_intervals() -> None:
    rate = Rate.of(0, 6)
    assert rate.rate == 0 and rate.low == 0 and rate.high == pytest.approx(1 - 0.025 ** (1 / 6))
    assert Rate.of(6, 6).low == pytest.approx(0.025 ** (1 / 6))


def _cell(patients: int, resamples: int, power: tuple[int, int], null: tuple[int, int]) -> PowerCell:
    return PowerCell(paired_patients=patients, negative_patients=patients // 4, resamples=resamples,
                     h1_power=Rate.of(*power), h1_false_positive_rate=Rate.of(*null), h2_power=None,
                     h2_false_positive_rate=None)


def test_the_minimum_decisive_experiment_is_the_smallest_cohort_then_fewest_resamples() -> None:
    cells = [_cell(48, 8, (9, 10), (0, 10)), _cell(24, 16, (8, 10), (0, 10)), _cell(24, 8, (7, 10), (0, 10)),
             _cell(12, 16, (10, 10), (1, 10))]
    decisive, statement = minimum_decisive_experiment(cells)
    assert (decisive.paired_patients, decisive.resamples) == (24, 16)
    assert "24 paired patients" in statement and "R = 16" in statement


def test_a_decisive_experiment_from_few_replicates_says_its_intervals_are_wide() -> None:
    _, statement = minimum_decisive_experiment([_cell(24, 16, (4, 5), (0, 5))])
    assert "point estimates from 5 planted and 5 null replicates" in statement


def test_a_decisive_experiment_whose_intervals_clear_the_thresholds_carries_no_caveat() -> None:
    _, statement = minimum_decisive_experiment([_cell(24, 16, (100, 100), (0, 100))])
    assert "24 paired patients" in statement and "point estimates" not in statement


def test_no_decisive_experiment_is_stated_as_such() -> None:
    decisive, statement = minimum_decisive_experiment([_cell(12, 8, (3, 10), (0, 10))])
    assert decisive is None and statement.startswith("No cohort on this grid")


def test_an_unknown_grid_lists_the_declared_ones() -> None:
    with pytest.raises(ConfigError, match="no power grid 'nope'; declared: default, tiny"):
        load_grid("nope")


def test_the_power_command_prints_the_table_writes_the_json_and_renders_the_report_section(
        tiny_power, synthetic_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, out = tiny_power
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    assert main(["power", "--grid", "tiny", "--out", str(out), "--workers", "2", "--quiet",
                 "--results", str(store)]) == 0
    printed = capsys.readouterr().out
    assert "H1 power (planted)" in printed and "minimum decisive experiment:" in printed
    result = read_power(out / "power.json")
    assert (out / "power.html").read_text().count('id="minimum-decisive"') == 1
    report = (store / "report.html").read_text()
    assert '<section id="power">' in report and result.statement in report
