"""Undefined metrics (PROTOCOL section 6) downstream of `compute_metrics`: aggregates, tables and claim 5.

A metric that needs a class the validation cases lack is "undefined" with its reason in every table,
never a number. The store-level tests build a store whose all-CT reference row has no negative
validation case, as on the real data (its only negative CT patient trains): a copy of the synthetic
smoke store whose all-CT reference run has every validation case relabelled positive and its
metrics, summary, evidence and report recomputed.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from benchmark.evidence.summary import aggregate, metric_stat
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import ResultsStore, RunRecord
from benchmark.report.render import numbers_in_report, template_environment, write_store_outputs
from tests.test_claims_can_fail import assert_only_claim_fails, corrupted, run_claims
from tests.test_metrics import cases

NEEDS_A_NEGATIVE = ("balanced_accuracy", "specificity", "mcc", "roc_auc")


def test_a_metric_undefined_on_every_run_aggregates_to_undefined_with_the_reason() -> None:
    runs = [compute_metrics(cases([1, 1], [0.9, 0.2])), compute_metrics(cases([1, 1, 1], [0.9, 0.8, 0.1]))]
    s = metric_stat(runs, "balanced_accuracy")
    assert (s.mean, s.sd, s.n, s.undefined) == (None, None, 0, "no negative case")


def test_a_metric_defined_on_some_runs_is_the_mean_over_those_with_their_count() -> None:
    runs = [compute_metrics(cases([1, 0], [0.9, 0.2])), compute_metrics(cases([1, 0], [0.9, 0.8])),
            compute_metrics(cases([0, 0], [0.1, 0.2]))]
    s = metric_stat(runs, "balanced_accuracy")  # 1.0 and 0.5 defined, the third run has no positive case
    assert s.mean == pytest.approx(0.75) and s.n == 2 and s.undefined == "no positive case"
    assert metric_stat(runs, "accuracy").undefined is None and metric_stat(runs, "accuracy").n == 3


def _relabel_ct_reference_positive(store: Path) -> str:
    """Make the all-CT reference run's validation cases all positive and recompute its metrics; its run id."""
    for path in sorted((store / "runs").glob("*.json")):
        record = RunRecord.model_validate_json(path.read_text())
        if record.spec.regime == "reference-all-ct":
            predictions = [p.model_copy(update={"label": 1}) for p in record.predictions]
            record = record.model_copy(update={"predictions": predictions, "metrics": compute_metrics(predictions)})
            path.write_text(record.model_dump_json())
            return record.spec.run_id
    raise AssertionError("the store has no all-CT reference run")


@pytest.fixture(scope="module")
def no_ct_negative_store(synthetic_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("no-ct-negative") / "store"
    shutil.copytree(synthetic_store, store)
    run_id = _relabel_ct_reference_positive(store)
    write_store_outputs(store)
    return store, run_id


def _cell_texts(html: str, run_id: str, metric: str) -> dict[str, str]:
    """data-stat -> text of every traceable element of `metric` citing exactly this run."""
    return {n.attributes["data-stat"]: n.text for n in numbers_in_report(html)
            if n.attributes.get("data-metric") == metric and n.attributes.get("data-runs") == run_id}


def test_the_all_ct_reference_without_a_negative_case_shows_undefined_ba_with_the_reason(
        no_ct_negative_store: tuple[Path, str]) -> None:
    store, run_id = no_ct_negative_store
    record = next(r for r in ResultsStore(store).load_all() if r.spec.run_id == run_id)
    assert record.metrics.balanced_accuracy is None and record.metrics.negatives == 0
    html = (store / "report.html").read_text(encoding="utf-8")
    start = html.index('id="table-references"')
    references = html[start:html.index("</table>", start)]
    for metric in NEEDS_A_NEGATIVE:
        assert _cell_texts(references, run_id, metric) == {"mean": "undefined", "undefined": "no negative case"}
    assert re.fullmatch(r"\d\.\d{3}", _cell_texts(references, run_id, "sensitivity")["mean"])
    index = html[html.index('id="run-index"'):]
    assert _cell_texts(index, run_id, "balanced_accuracy") == {"mean": "undefined", "undefined": "no negative case"}


def test_the_summary_leaves_an_undefined_mean_empty_with_n_zero(no_ct_negative_store: tuple[Path, str]) -> None:
    store, _ = no_ct_negative_store
    with (store / "summary.csv").open(newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["regime"] == "reference-all-ct")
    assert (row["balanced_accuracy_mean"], row["balanced_accuracy_n"]) == ("", "0")
    assert row["val_negative_images_total"] == "0"
    assert row["sensitivity_n"] == "1"


def test_a_row_defined_on_some_runs_shows_the_mean_over_those_and_their_count(
        no_ct_negative_store: tuple[Path, str]) -> None:
    store, run_id = no_ct_negative_store
    records = ResultsStore(store).load_all()
    undefined = next(r for r in records if r.spec.run_id == run_id)
    defined = next(r for r in records if r.spec.regime == "reference-all-xray")
    row = aggregate(records, "xray-teacher-ref", "reference-all-xray")
    assert row is not None
    both = [defined.metrics, undefined.metrics]
    row = row.model_copy(update={"runs": 2, "run_ids": [defined.spec.run_id, run_id],
                                 "stats": {m: metric_stat(both, m) for m in row.stats}})
    html = template_environment().get_template("macros.html.j2").module.results_table([row], "mixed")
    texts = {n.attributes["data-stat"]: n.text for n in numbers_in_report(str(html))
             if n.attributes.get("data-metric") == "balanced_accuracy"}
    assert texts == {"mean": f"{defined.metrics.balanced_accuracy:.3f}", "n": "1", "undefined": "no negative case"}
    assert "on 1 of 2 runs" in re.sub(r"<[^>]+>", "", str(html))


def test_claims_check_the_undefined_cells_of_that_store(no_ct_negative_store: tuple[Path, str]) -> None:
    store, _ = no_ct_negative_store
    result = run_claims(store, "claim5")
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout[-3000:]


def _show_a_number_for_an_undefined_cell(store: Path) -> None:
    html = (store / "report.html").read_text()
    cell = re.compile(r'(data-metric="balanced_accuracy" data-stat="mean" data-runs="[^"]+">)undefined<')
    assert cell.search(html) is not None
    (store / "report.html").write_text(cell.sub(r"\g<1>1.000<", html, count=1))


def _give_the_wrong_reason(store: Path) -> None:
    html = (store / "report.html").read_text()
    assert 'data-stat="undefined"' in html
    (store / "report.html").write_text(re.sub(r'(data-stat="undefined" data-runs="[^"]+">)no negative case',
                                              r"\1no positive case", html, count=1))


def _store_the_recall_of_the_class_present_as_ba(store: Path) -> None:
    """The old convention: BA on cases without a negative is the sensitivity; the report rendered from it."""
    for path in sorted((store / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if record["spec"]["regime"] == "reference-all-ct":
            record["metrics"]["balanced_accuracy"] = record["metrics"]["sensitivity"]
            path.write_text(json.dumps(record))
    write_store_outputs(store)


@pytest.mark.parametrize("corrupt", [_show_a_number_for_an_undefined_cell, _give_the_wrong_reason,
                                     _store_the_recall_of_the_class_present_as_ba])
def test_claim5_catches_a_number_or_reason_where_a_metric_is_undefined(
        no_ct_negative_store: tuple[Path, str], tmp_path: Path, corrupt) -> None:  # noqa: ANN001
    assert_only_claim_fails(corrupted(no_ct_negative_store[0], tmp_path, corrupt), "claim5")


def _without_negatives(record: RunRecord) -> RunRecord:
    """The run with every validation case relabelled positive: its BA is undefined."""
    predictions = [p.model_copy(update={"label": 1}) for p in record.predictions]
    return record.model_copy(update={"predictions": predictions, "metrics": compute_metrics(predictions)})


def test_a_resample_whose_ba_is_undefined_is_reported_as_such_and_never_confirms(synthetic_store: Path) -> None:
    from benchmark.evidence.rules import evaluate_hypotheses, fixed_split_comparison, monte_carlo_comparison
    from benchmark.evidence.statistics import effect_estimate
    from tests.test_evidence import BAD, GOOD, table

    template = ResultsStore(synthetic_store).load_all()[0]
    records = table(template, {"plain-ct-kd": GOOD, "student-only": BAD},
                    {"plain-ct-kd": [4] * 4, "student-only": [2] * 4})
    assert monte_carlo_comparison(records, "plain-ct-kd", "student-only").confirmed
    records = [_without_negatives(r) if r.spec.split.index == 7 or r.spec.regime == "paired-fixed" else r
               for r in records]
    comparison = monte_carlo_comparison(records, "plain-ct-kd", "student-only")
    undefined = [r for r in comparison.resamples if r.d_balanced_accuracy is None]
    assert [r.split_id for r in undefined] == comparison.undefined and len(undefined) == 1
    assert undefined[0].a_balanced_accuracy is None and undefined[0].b_balanced_accuracy is None
    assert comparison.mean_d_balanced_accuracy == pytest.approx(1 - 2 / 3)  # over the 7 defined resamples only
    assert not comparison.confirmed
    assert effect_estimate(records, comparison) is not None
    fixed = fixed_split_comparison(records, "plain-ct-kd", "student-only")
    assert fixed.a_mean_balanced_accuracy is None and not fixed.advantage
    h1 = next(h for h in evaluate_hypotheses(records).hypotheses if h.hypothesis == "H1")
    assert "undefined BA" in h1.reason and h1.status.value != "supported"
