"""The evidence boundary (PROTOCOL.md section 9), asserted on the stored runs themselves.

One test per claim. Each reads the results store (run records, summary.csv, evidence.json,
report.html) and recomputes what it checks from the stored per-case predictions; none trusts the
code path that produced the store. tests/test_claims_can_fail.py corrupts copies of a store to
show each of these tests failing.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.evidence.power import store_power_grounding
from benchmark.evidence.rules import MONTE_CARLO, Status, store_evidence
from benchmark.evidence.summary import summary_frame
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import RunRecord, StoreManifest
from benchmark.report.render import numbers_in_report, report_data_from_html

FIXED = "paired-fixed"
# PROTOCOL section 6, read here on its own: the classes each metric needs, and the words for an absent one.
NEEDS_CLASSES = {"specificity": (0,), "sensitivity": (1,), "pr_auc": (1,), "balanced_accuracy": (0, 1),
                 "mcc": (0, 1), "roc_auc": (0, 1)}
ABSENT_CLASS = {0: "no negative case", 1: "no positive case"}


def _recomputed(records: list[RunRecord]) -> list[RunRecord]:
    """The records with metrics recomputed from their stored per-case predictions."""
    return [r.model_copy(update={"metrics": compute_metrics(r.predictions)}) for r in records]


def _undefined_reason(record: RunRecord, metric: str) -> str | None:
    """Why `metric` is undefined on the run's validation cases (a class it needs is absent), from their labels."""
    labels = {p.label for p in record.predictions}
    return "; ".join(ABSENT_CLASS[c] for c in NEEDS_CLASSES.get(metric, ()) if c not in labels) or None


def _negatives(record: RunRecord) -> set[str]:
    """Validation patients of a run whose every image is labelled negative."""
    labels: dict[str, int] = defaultdict(int)
    for p in record.predictions:
        labels[p.patient_id] = max(labels[p.patient_id], p.label)
    return {pid for pid, label in labels.items() if label == 0}


def test_claim1_no_patient_in_train_and_validation_of_any_split_teachers_included(records: list[RunRecord],
                                                                                  results_dir: Path) -> None:
    for r in records:
        val = set(r.spec.split.val_patients)
        evaluated = {p.patient_id for p in r.predictions}
        assert evaluated == val, f"{r.spec.run_id}: evaluated patients differ from the split's validation set"
        assert set(r.train_patients) <= set(r.spec.split.train_patients), f"{r.spec.run_id}: trained off-split"
        assert not set(r.train_patients) & val, f"{r.spec.run_id}: trained on validation patients"
        if r.teacher is not None:
            leaked = set(r.teacher.training_patients) & val
            assert not leaked, f"{r.spec.run_id}: its teacher trained on validation patients {sorted(leaked)}"
            meta = next((results_dir / "teachers").glob(f"*/{r.teacher.teacher_id}.json"), None)
            if meta is not None:
                stored = set(json.loads(meta.read_text())["training_patients"])
                assert stored == set(r.teacher.training_patients), f"{meta}: differs from {r.spec.run_id}'s record"


def test_claim2_every_validation_set_has_k_patients_and_the_declared_negatives(records: list[RunRecord],
                                                                               manifest: StoreManifest) -> None:
    k = manifest.settings.splits.monte_carlo_val_patients
    declared = manifest.settings.splits.validation_negatives
    resamples: dict[int, set[str]] = defaultdict(set)
    for r in records:
        if r.spec.regime == MONTE_CARLO:
            assert len(r.spec.split.val_patients) == k, f"{r.spec.run_id}: {len(r.spec.split.val_patients)} != k"
            resamples[r.spec.split.index].add(r.val_hash)
        if r.spec.regime in (MONTE_CARLO, FIXED):
            assert len(_negatives(r)) == declared, (f"{r.spec.run_id}: negative validation patients "
                                                    f"{sorted(_negatives(r))}, declared {declared}")
    assert all(len(hashes) == 1 for hashes in resamples.values()), "a resample index has two validation sets"
    sets = [next(iter(h)) for h in resamples.values()]
    assert len(set(sets)) == len(sets), "two Monte Carlo resamples share a validation set"


def test_claim3_every_configuration_of_a_split_saw_the_same_cases(records: list[RunRecord]) -> None:
    cases: dict[str, dict[frozenset, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        key = frozenset((p.patient_id, p.image_id, p.label) for p in r.predictions)
        cases[r.val_hash][key].append(r.spec.run_id)
    for val_hash, variants in cases.items():
        assert len(variants) == 1, f"split {val_hash[:10]}: runs saw different cases: {list(variants.values())}"


def test_claim4_no_xray_only_configuration_reads_ct_at_inference(records: list[RunRecord]) -> None:
    for r in records:
        configuration = r.spec.configuration
        if configuration.manifest != "paired":
            continue
        probe = r.deployment_probe
        assert probe is not None, f"{r.spec.run_id}: no deployment probe stored"
        if configuration.deployable:
            assert probe.ct_removed_max_abs_diff == 0.0 and probe.ct_noise_max_abs_diff == 0.0, (
                f"{r.spec.run_id} ({r.spec.name}): predictions move with CT ({probe})")
        else:
            assert configuration.kind == "late-fusion" and probe.reads_ct_declared, (
                f"{r.spec.run_id} ({r.spec.name}) reads CT but is not the late-fusion control")


def _expected_text(number, runs: dict[str, RunRecord]) -> str:  # noqa: ANN001
    attributes = number.attributes
    ids = attributes["data-runs"].split()
    assert ids and all(i in runs for i in ids), f"report cites unknown runs: {ids}"
    if "data-support" in attributes:
        field = attributes["data-support"]
        metrics = [runs[i].metrics for i in ids]
        if field == "runs":
            return str(len(ids))
        if field == "collapsed_runs":
            return str(sum(m.tp + m.fp in (0, m.cases) for m in metrics))
        if field == "val_patients_per_run":
            low, high = min(m.patients for m in metrics), max(m.patients for m in metrics)
            return str(low) if low == high else f"{low}-{high}"
        attribute = {"val_images_total": "cases", "val_positive_images_total": "positives",
                     "val_negative_images_total": "negatives"}[field]
        return str(sum(getattr(m, attribute) for m in metrics))
    metric, stat = attributes["data-metric"], attributes["data-stat"]
    values = [getattr(runs[i].metrics, metric) for i in ids]
    defined = [v for v in values if v is not None]
    if stat == "undefined":  # why: the distinct reasons over the cited runs, sorted
        return "; ".join(sorted({r for i in ids if (r := _undefined_reason(runs[i], metric))}))
    if stat == "n":  # the runs it is defined on
        return str(len(defined))
    if stat == "mean":
        value = float(np.mean(defined)) if defined else None
    elif stat == "sd":
        value = float(np.std(defined, ddof=1))
    else:  # diff: mean over the A runs minus mean over the B runs; undefined when either side is
        other = [v for i in attributes["data-runs-b"].split() if (v := getattr(runs[i].metrics, metric)) is not None]
        value = float(np.mean(defined)) - float(np.mean(other)) if defined and other else None
    return "undefined" if value is None else f"{value:.3f}"


def test_claim5_every_reported_number_recomputes_from_the_per_case_predictions(
        records: list[RunRecord], results_dir: Path, report_html: str) -> None:
    for r in records:  # a metric needing a class the validation cases lack is undefined, never a number
        for metric in NEEDS_CLASSES:
            value, why = getattr(r.metrics, metric), _undefined_reason(r, metric)
            assert (value is None) == (why is not None), (
                f"{r.spec.run_id}: {metric} is {value}" + (f" on validation cases with {why}" if why else ""))
    fresh = _recomputed(records)
    for stored, again in zip(records, fresh, strict=True):
        assert stored.metrics == again.metrics, f"{stored.spec.run_id}: stored metrics differ from its predictions"

    summary = pd.read_csv(results_dir / "summary.csv")
    expected = summary_frame(fresh)
    assert list(summary["configuration"]) == list(expected["configuration"]), "summary.csv rows differ"
    for column in expected.columns:
        if expected[column].dtype.kind in "fi":
            assert np.allclose(summary[column].astype(float), expected[column].astype(float), rtol=1e-5,
                               atol=1e-6, equal_nan=True), f"summary.csv column {column} differs"
        else:
            assert (list(summary[column].fillna("").astype(str))
                    == list(expected[column].fillna("").astype(str))), f"summary.csv column {column} differs"

    runs = {r.spec.run_id: r for r in fresh}
    numbers = [n for n in numbers_in_report(report_html) if "data-runs" in n.attributes]
    assert numbers, "the report shows no traceable number"
    for number in numbers:
        assert number.text == _expected_text(number, runs), f"report shows {number.text} for {number.attributes}"
    assert 'data-support="runs"' in report_html, "result tables state no support"


def test_claim6_every_status_follows_its_rule_and_the_fixed_split_has_no_test(
        records: list[RunRecord], manifest: StoreManifest, results_dir: Path, report_html: str) -> None:
    evidence = store_evidence(manifest, _recomputed(records), store_power_grounding(results_dir))
    stored = json.loads((results_dir / "evidence.json").read_text())
    assert stored == json.loads(evidence.model_dump_json()), "evidence.json differs from the rules on the runs"
    island = report_data_from_html(report_html)["evidence"]
    assert island == json.loads(evidence.model_dump_json()), "the report's evidence differs from the rules"

    shown = {n.attributes["data-evidence"]: n.text for n in numbers_in_report(report_html)
             if "data-evidence" in n.attributes}
    candidate_comparisons = [c for candidate in evidence.candidates for c in candidate.comparisons]
    for h in [*evidence.hypotheses, *candidate_comparisons]:
        assert shown[f"{h.hypothesis}:status"] == h.status.value, f"{h.hypothesis}: report shows another status"
        mc = h.monte_carlo or h.balanced_monte_carlo
        if h.status == Status.SUPPORTED:
            assert mc is not None and mc.confirmed, f"{h.hypothesis} is supported without MC confirmation"
        if mc is not None and mc.p_value is not None:
            assert shown[f"{h.hypothesis}:p_value"] == f"{mc.p_value:.4f}"
            assert shown[f"{h.hypothesis}:mean_d_balanced_accuracy"] == f"{mc.mean_d_balanced_accuracy:.3f}"
        if h.fixed_split is not None:
            keys = set(h.fixed_split.model_dump())
            assert not {k for k in keys if "p_value" in k or "interval" in k or k.startswith("ci")}
        if h.degenerate is not None:
            assert shown[f"{h.hypothesis}:degenerate"] == h.degenerate, f"{h.hypothesis}: degenerate tag not shown"
            assert not (mc is not None and mc.confirmed), f"{h.hypothesis}: a degenerate comparison confirmed"
    for length in evidence.training_lengths:
        for h in [*length.hypotheses, *(c for candidate in length.candidates for c in candidate.comparisons)]:
            key = f"{h.hypothesis}:status@{length.epochs}"
            assert shown[key] == h.status.value, f"{key}: the report shows another status"
            mc = h.monte_carlo or h.balanced_monte_carlo
            if h.status == Status.SUPPORTED:
                assert mc is not None and mc.confirmed, f"{key} is supported without MC confirmation"

    start, stop = report_html.index('<section id="fixed">'), report_html.index('<section id="monte-carlo">')
    fixed_section = report_html[start:stop]
    for forbidden in ("p =", "p-value", "confidence interval", "95%", "data-evidence"):
        assert forbidden not in fixed_section, f"the fixed-split section shows {forbidden!r}"


def _sample(records: list[RunRecord]) -> list[RunRecord]:
    """A deterministic sample to rerun: the first Monte Carlo run distilling from a CT teacher, and one without."""
    distilled = [r for r in records if r.teacher is not None and r.teacher.modality == "ct"
                 and r.spec.regime == MONTE_CARLO]
    plain = [r for r in records if r.teacher is None and r.spec.configuration.manifest == "paired"]
    return [group[0] for group in (distilled, plain) if group]


def test_claim7_runs_reproduce_bit_for_bit(records: list[RunRecord], manifest: StoreManifest,
                                           data_root: Path) -> None:
    import torch

    from benchmark.data.imaging import ImageBank
    from benchmark.data.pipeline import image_cache, prepare_data
    from benchmark.experiment.worker import data_identity
    from benchmark.methods.engine import Engine
    from benchmark.methods.teachers import TeacherStore

    settings = manifest.settings
    cache = image_cache(settings, None)
    prepared = prepare_data(data_root, settings, cache)
    assert data_identity(prepared).same_data(manifest.data), f"{data_root}: not the data of this store"
    bank = ImageBank(cache, settings.data.normalise_mean, settings.data.normalise_std)
    sample = _sample(records)
    assert sample, "no paired run to reproduce"
    threads = torch.get_num_threads()
    try:
        for record in sample:
            torch.set_num_threads(record.threads)
            engine = Engine(prepared, bank, TeacherStore(None), record.device,  # teachers are retrained too,
                            path=settings.engine.path)  # on the store's training path (stacked: alone, same bits)
            output = engine.run(record.spec.configuration, record.spec.split, record.spec.seed)
            again = [(p.image_id, p.score) for p in output.predictions]
            before = [(p.image_id, p.score) for p in record.predictions]
            assert again == before, f"{record.spec.run_id} ({record.spec.name}) did not reproduce"
            assert all(math.isfinite(s) for _, s in again)
    finally:
        torch.set_num_threads(threads)
