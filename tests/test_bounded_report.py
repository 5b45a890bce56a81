"""A bounded report (issue 23 item 8): the skipped-row listing shows the first rows of each reason and the counts of
all, and every skipped row is in skipped_rows.csv beside the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from benchmark.report.render import SKIPPED_ROWS_SHOWN, report_data_from_html, write_report

DUPLICATES = 100_000


def _with_many_duplicate_rows(store: Path) -> Path:
    """The store with 100k rows skipped as duplicates added to its cohort's filter report, as a manifest that names
    one image 100k times gives."""
    manifest = json.loads((store / "store.json").read_text())
    report = manifest["cohort"]["filter_report"]
    report["skipped"] += [{"line": 10_000 + n, "patient_id": f"dup{n % 7}", "path": "img/p0-xr.png",
                           "reason": "duplicate_image", "detail": "same file as line 2"} for n in range(DUPLICATES)]
    report["counts"]["duplicate_image"] += DUPLICATES
    report["total_rows"] += DUPLICATES
    (store / "store.json").write_text(json.dumps(manifest))
    return store


def test_a_hundred_thousand_skipped_rows_keep_the_report_small_and_all_go_to_the_csv(synthetic_store: Path,
                                                                                     tmp_path: Path) -> None:
    store = _with_many_duplicate_rows(shutil.copytree(synthetic_store, tmp_path / "store"))
    report = write_report(store)
    html = report.read_text(encoding="utf-8")
    assert len(html.encode("utf-8")) < 2_000_000
    assert html.count("same file as line 2") == SKIPPED_ROWS_SHOWN
    assert f"{DUPLICATES:,}" in html or str(DUPLICATES) in html  # the count of all of them
    assert 'href="skipped_rows.csv"' in html
    listed = pd.read_csv(store / "skipped_rows.csv", dtype=str, keep_default_na=False)
    assert (listed["reason"] == "duplicate_image").sum() >= DUPLICATES
    assert set(listed["table"]) >= {"cohort"}
    island = report_data_from_html(html)
    assert "skipped" not in island["manifest"]["cohort"]["filter_report"]
    assert island["manifest"]["cohort"]["filter_report"]["counts"]["duplicate_image"] >= DUPLICATES
