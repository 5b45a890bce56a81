"""The evidence boundary (PROTOCOL.md section 9), asserted on the stored runs themselves.

One test per claim. Each reads the results store (run records, summary.csv, evidence.json,
report.html) and recomputes what it checks from the stored per-case predictions; none trusts the
code path that produced the store. tests/test_claims_can_fail.py corrupts copies of a store to
show each of these tests failing.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.claims.beside import gate_problems, headroom_problems
from benchmark.claims.section8 import MONTE_CARLO, Scope, Verdict, all_verdicts, disagreements, stated_verdicts
from benchmark.evidence.summary import scored_summary_frame, summary_frame
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import RunRecord, StoreManifest
from benchmark.outputs import spreadsheet_safe_frame
from benchmark.report.render import numbers_in_report, report_data_from_html
from benchmark.schemas import RegimeName

FIXED = RegimeName.PAIRED_FIXED
KFOLD = RegimeName.PAIRED_KFOLD
# PROTOCOL section 6, read here on its own: the classes each metric needs, and the words for an absent one.
NEEDS_CLASSES = {"specificity": (0,), "sensitivity": (1,), "pr_auc": (1,), "balanced_accuracy": (0, 1),
                 "mcc": (0, 1), "roc_auc": (0, 1)}
ABSENT_CLASS = {0: "no negative case", 1: "no positive case"}


def _recomputed(records: list[RunRecord]) -> list[RunRecord]:
    """The records with metrics recomputed from their stored per-case predictions, on validation and test cases."""
    return [r.model_copy(update={
        "metrics": compute_metrics(r.predictions),
        "tests": {name: t.model_copy(update={"metrics": compute_metrics(t.predictions)})
                  for name, t in r.tests.items()},
    }) for r in records]


def _shown(report_html: str, attribute: str, on_test_sets: bool | None = None) -> dict[str, str]:
    """What the report shows under each key of `attribute` (e.g. data-evidence); every place showing a key (the first
    screen, the tables, the sections) must show the same text. `on_test_sets`: only the keys of test-set evidence
    (True) or only the others (False)."""
    shown: dict[str, str] = {}
    for number in numbers_in_report(report_html):
        key = number.attributes.get(attribute)
        if key is not None and on_test_sets in (None, ":test:" in key or key.startswith("ranking:")):
            assert shown.setdefault(key, number.text) == number.text, (
                f"the report shows {key} as {shown[key]!r} in one place and {number.text!r} in another")
    return shown


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


def test_claim2_every_kfold_repeat_partitions_the_patients_into_stratified_folds(records: list[RunRecord],
                                                                                  manifest: StoreManifest) -> None:
    k, seeds = manifest.settings.splits.kfold_folds, manifest.settings.splits.kfold_seeds
    folds: dict[int, dict[int, RunRecord]] = defaultdict(dict)
    for r in records:
        if r.spec.regime == KFOLD:
            repeat, fold = divmod(r.spec.split.index, k)
            assert repeat < len(seeds) and r.spec.split.seed == seeds[repeat], (
                f"{r.spec.run_id}: split {r.spec.split.index} carries seed {r.spec.split.seed}, repeat {repeat} of "
                f"seeds {seeds}")
            known = folds[repeat].setdefault(fold, r)
            assert known.val_hash == r.val_hash, f"{r.spec.run_id}: fold {fold} of repeat {repeat} has two sets"
    for repeat, by_fold in folds.items():
        assert sorted(by_fold) == list(range(k)), f"repeat {repeat}: folds {sorted(by_fold)} of k = {k}"
        cohorts = {frozenset(r.spec.split.train_patients) | frozenset(r.spec.split.val_patients)
                   for r in by_fold.values()}
        assert len(cohorts) == 1, f"repeat {repeat}: its folds split different patient sets"
        held = [set(r.spec.split.val_patients) for r in by_fold.values()]
        assert sum(map(len, held)) == len(set().union(*held)) and set().union(*held) == next(iter(cohorts)), (
            f"repeat {repeat}: the validation sets do not partition the paired patients")
        negatives = [len(_negatives(r)) for r in by_fold.values()]
        positives = [len(held[i]) - negatives[i] for i in range(k)]
        for word, counts in (("negative", negatives), ("positive", positives)):
            total = sum(counts)
            assert all(total // k <= c <= -(-total // k) for c in counts), (
                f"repeat {repeat}: {word} patients per fold {counts} are not stratified ({total} over {k} folds)")


def test_claim3_the_store_holds_every_run_its_profile_declares(records: list[RunRecord],
                                                               manifest: StoreManifest) -> None:
    stored = {r.spec.run_id for r in records}
    missing = [run_id for run_id in manifest.run_ids if run_id not in stored]
    with_runs = {name for r in records for name in r.spec.names}
    lost = [name for name in _declared_candidates(manifest) if name not in with_runs]
    assert not missing, (f"{len(missing)} of the {len(manifest.run_ids)} runs the profile declares are not in the "
                         f"store (failed or never run; first: {missing[0]}); no verdict rests on an incomplete "
                         "matrix" + (f"; candidates without a single run: {', '.join(lost)}" if lost else ""))


def test_claim3_every_paired_case_carries_the_stores_match(records: list[RunRecord], manifest: StoreManifest) -> None:
    matches = {p.xray_image_id: (p.ct_image_id, p.offset_gap) for p in manifest.pairs}
    assert matches, "store.json keeps no paired match (PROTOCOL section 2)"
    for p in manifest.pairs:  # the gap is the offsets' distance, unknown when either is
        known = p.xray_offset is not None and p.ct_offset is not None
        assert p.offset_gap == (abs(p.xray_offset - p.ct_offset) if known else None), f"{p.xray_image_id}: gap"
    for r in records:
        if r.spec.configuration.manifest == "paired":
            for case in r.predictions:
                assert (case.matched_ct, case.offset_gap) == matches.get(case.image_id), (
                    f"{r.spec.run_id}: {case.image_id} carries match {case.matched_ct}, the store "
                    f"{matches.get(case.image_id)}")


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
    test = attributes.get("data-test")
    if test is not None:  # a number on a test set's scores: the same arithmetic on those
        cited = ids + attributes.get("data-runs-b", "").split()
        assert all(i in runs and test in runs[i].tests for i in cited), f"report cites runs not scored on {test}"
        runs = {i: runs[i].model_copy(update={"metrics": runs[i].tests[test].metrics,
                                              "predictions": runs[i].tests[test].predictions}) for i in cited}
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
    expected = spreadsheet_safe_frame(summary_frame(fresh))  # as written: text cells spreadsheet-safe
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


@pytest.fixture(scope="module")
def verdicts(records: list[RunRecord], manifest: StoreManifest) -> dict[Scope, dict[str, Verdict]]:
    """Section 8 decided again by claims/section8.py (which imports nothing from benchmark.evidence) on the stored
    per-case predictions, for the validation cases and every test set, headline and every training length."""
    return all_verdicts(records, [t.name for t in manifest.test_sets], _declared_candidates(manifest),
                        manifest.settings.evidence.rope)


def _declared_candidates(manifest: StoreManifest) -> list[str]:
    """The candidates the store's profile declares (its `candidates` block), whether or not their runs succeeded."""
    return [name for block in manifest.profile.blocks if block.name == "candidates" for name in block.configurations]


@pytest.fixture(scope="module")
def stored_evidence(results_dir: Path) -> dict:
    return json.loads((results_dir / "evidence.json").read_text())


def _report_agrees(verdicts: dict[Scope, dict[str, Verdict]], shown: dict[str, str], on_test_sets: bool) -> list[str]:
    """Where the report shows a status, p-value, mean difference, collapsed count or tag the rules do not give."""
    problems = []
    for (test_set, epochs), decided in verdicts.items():
        if (test_set is not None) != on_test_sets:
            continue
        for key, v in decided.items():
            prefix = key if test_set is None else f"{key}:test:{test_set}"
            status_key = f"{prefix}:status" + (f"@{epochs}" if epochs is not None else "")
            if shown.get(status_key) != v.status:
                problems.append(f"{status_key}: the report shows {shown.get(status_key)!r}, the rules {v.status!r}")
            c = v.comparison
            at = "" if epochs is None else f"@{epochs}"  # numbers at a training length carry its epochs
            expected = {}
            if epochs is None and v.p_values is not None:  # a candidate's headline: raw and Holm-adjusted p
                expected.update({field: _four(p) for field, p in zip(("p_value", "adjusted_p_value"), v.p_values,
                                                                      strict=True)})
            if c is not None and c.companions is not None:
                corrected, a_better, equivalent, b_better = c.companions
                expected.update({f"corrected_p{at}": _four(corrected), f"p_a_better{at}": f"{a_better:.3f}",
                                 f"p_equivalent{at}": f"{equivalent:.3f}", f"p_b_better{at}": f"{b_better:.3f}"})
            if c is not None and epochs is not None:
                if c.exact and c.p_value is not None:
                    expected[f"p_value{at}"] = f"{c.p_value:.4f}"
                if c.mean_ba is not None:
                    expected[f"mean_d_balanced_accuracy{at}"] = f"{c.mean_ba:.3f}"
            if epochs is not None or c is None:
                problems += _differently_shown(shown, prefix, expected)
                continue
            expected["collapsed_resamples"] = str(c.collapsed)
            if c.exact and c.p_value is not None:
                expected["p_value"] = f"{c.p_value:.4f}"
            if c.mean_ba is not None:
                expected["mean_d_balanced_accuracy"] = f"{c.mean_ba:.3f}"
            if test_set is None and c.tag is not None:
                expected["degenerate"] = c.tag
            problems += _differently_shown(shown, prefix, expected)
            if test_set is None and c.tag is not None and shown.get(f"{prefix}:degenerate") != c.tag:
                problems.append(f"{prefix}: degenerate evidence not tagged in the report ({c.tag})")
    return problems


def _four(p: float | None) -> str:
    """How the report writes a p-value: four decimals, or an en dash when there is none."""
    return "–" if p is None else f"{p:.4f}"


def _differently_shown(shown: dict[str, str], prefix: str, expected: dict[str, str]) -> list[str]:
    """The fields of `prefix` the report shows with another text than the rules give."""
    return [f"{prefix}:{field}: the report shows {shown[f'{prefix}:{field}']!r}, the rules {text!r}"
            for field, text in expected.items() if f"{prefix}:{field}" in shown and shown[f"{prefix}:{field}"] != text]


def test_claim6_every_status_follows_its_rule_and_the_fixed_split_has_no_test(
        verdicts: dict[Scope, dict[str, Verdict]], stored_evidence: dict, report_html: str) -> None:
    island = report_data_from_html(report_html)["evidence"]
    assert island == stored_evidence, "the report's evidence differs from evidence.json"
    validation = {scope: v for scope, v in verdicts.items() if scope[0] is None}
    stated = {scope: v for scope, v in stated_verdicts(stored_evidence).items() if scope[0] is None}
    problems = disagreements(validation, stated)
    problems += _report_agrees(verdicts, _shown(report_html, "data-evidence", on_test_sets=False), False)
    assert not problems, "evidence.json or the report differs from section 8: " + "; ".join(problems[:8])

    start, stop = report_html.index('<section id="fixed">'), report_html.index('<section id="monte-carlo">')
    fixed_section = report_html[start:stop]
    for forbidden in ("p =", "p-value", "confidence interval", "95%", "data-evidence"):
        assert forbidden not in fixed_section, f"the fixed-split section shows {forbidden!r}"
    for h in [*stored_evidence["hypotheses"], *(c for cand in stored_evidence.get("candidates", [])
                                                for c in cand["comparisons"])]:
        fixed = h.get("fixed_split") or {}
        assert not {k for k in fixed if "p_value" in k or "interval" in k or k.startswith("ci")}, h["hypothesis"]


# PROTOCOL.md section 13: the evidence boundary on the test sets. What each test checks is recomputed from the files
# and the stored runs here, not taken from the code that built the test sets.

def test_claim6_teacher_headroom_and_the_gate_follow_their_rules(records: list[RunRecord], manifest: StoreManifest,
                                                                  stored_evidence: dict, report_html: str) -> None:
    problems = headroom_problems(records, stored_evidence, manifest.settings.evidence.rope)
    problems += gate_problems(records, stored_evidence, manifest.settings.gate.model_dump())
    for verdict in (stored_evidence.get("gate") or {}).get("verdicts", []):
        shown = f'data-gate-outcome="{html.escape(verdict["comparison"])}">{html.escape(verdict["outcome"])}<'
        if shown not in report_html:
            problems.append(f"the report does not show the gate's {verdict['outcome']!r} for {verdict['comparison']}")
    assert not problems, "; ".join(problems[:5])


def test_claim6_every_test_status_follows_its_rule(verdicts: dict[Scope, dict[str, Verdict]], stored_evidence: dict,
                                                  report_html: str) -> None:
    from scipy.stats import kendalltau

    on_tests = {scope: v for scope, v in verdicts.items() if scope[0] is not None}
    stated = {scope: v for scope, v in stated_verdicts(stored_evidence).items() if scope[0] is not None}
    shown = _shown(report_html, "data-evidence", on_test_sets=True)
    problems = disagreements(on_tests, stated) + _report_agrees(verdicts, shown, True)
    assert not problems, "test statuses differ from section 8 on the test scores: " + "; ".join(problems[:8])
    for on_test in stored_evidence.get("test_sets", []):  # the ranking's tau, recomputed from its rows
        rows = [r for r in on_test["ranking"]["rows"]
                if r["validation_balanced_accuracy"] is not None and r["test_balanced_accuracy"] is not None]
        tau = kendalltau([r["validation_balanced_accuracy"] for r in rows],
                         [r["test_balanced_accuracy"] for r in rows]).statistic if len(rows) >= 2 else math.nan
        expected = None if math.isnan(tau) else float(tau)
        stored = on_test["ranking"]["kendall_tau"]
        assert (stored is None) == (expected is None) and (stored is None or math.isclose(stored, expected)), (
            f"{on_test['test_set']}: Kendall's tau {stored}, recomputed {expected}")
        name = on_test["test_set"]
        assert shown[f"ranking:{name}:kendall_tau"] == ("–" if expected is None else f"{expected:.2f}")


def _decoded_sha256(path: Path, manifest: StoreManifest) -> str:
    """sha256 of an image's decoded pixels (shape, then float32 values), read here from its file."""
    import hashlib

    from benchmark.data.readers import read_image

    array, _ = read_image(path, manifest.settings.cohort.readers)
    values = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha256(repr(tuple(values.shape)).encode("ascii"))
    digest.update(values.tobytes())
    return digest.hexdigest()


def _test_roots(manifest: StoreManifest, external_files: dict[str, Path], cohort_location: Path) -> dict[str, Path]:
    """The folder each test set's case paths are relative to, where it lies now."""
    from benchmark.data.pipeline import cohort_source

    cohort_folder = Path(cohort_source(cohort_location).path)
    cohort_folder = cohort_folder if cohort_folder.is_dir() else cohort_folder.parent
    return {t.name: (external_files[t.name].parent if t.kind == "external" else cohort_folder)
            for t in manifest.test_sets}


def _teacher_images(results_dir: Path, record: RunRecord) -> set[str]:
    """The image ids the run's teacher trained on, from the teacher's own metadata beside its weights."""
    if record.teacher is None:
        return set()
    meta = next((results_dir / "teachers").glob(f"*/{record.teacher.teacher_id}.json"), None)
    assert meta is not None, f"{record.spec.run_id}: its teacher's metadata is not in the store"
    return set(json.loads(meta.read_text())["training_images"])


def test_claim1_no_test_patient_or_picture_in_any_scored_runs_lineage(
        records: list[RunRecord], manifest: StoreManifest, results_dir: Path, cohort_location: Path,
        external_files: dict[str, Path]) -> None:
    from benchmark.config import CohortSettings
    from benchmark.data.pipeline import image_cache, load_cohort

    if not manifest.test_sets:
        return
    roots = _test_roots(manifest, external_files, cohort_location)
    test_pixels: dict[str, str] = {}
    test_patients: dict[str, str] = {}
    paired = {p for regime in manifest.regimes if regime.manifest == "paired" for split in regime.splits
              for p in (*split.train_patients, *split.val_patients)}
    for test_set in manifest.test_sets:
        for case in test_set.cases:  # the stored pixel hash is the file's, read again here
            recomputed = _decoded_sha256(roots[test_set.name] / case.path, manifest)
            assert recomputed == case.pixels_sha256, f"{test_set.name}: {case.path} is not the image that was scored"
            assert test_pixels.setdefault(recomputed, test_set.name) == test_set.name, (
                f"{case.path} is in test sets {test_pixels[recomputed]} and {test_set.name}")
            assert test_patients.setdefault(case.patient_id, test_set.name) == test_set.name, (
                f"patient {case.patient_id} is in test sets {test_patients[case.patient_id]} and {test_set.name}")
        leaked = sorted(paired & {c.patient_id for c in test_set.cases})
        assert not leaked, f"{test_set.name}: paired patients {leaked} are test patients"

    cohort = load_cohort(cohort_location, image_cache(manifest.settings, None), CohortSettings.model_validate(
        manifest.settings.cohort.model_dump()))
    folder = cohort.image_root
    patients_of = {r.image_id: r.patient_id for r in cohort.records}
    images_of: dict[str, list[str]] = defaultdict(list)
    for r in cohort.records:
        images_of[r.patient_id].append(r.image_id)
    lineage_pixels: dict[str, str] = {}
    for r in records:
        if not r.tests:
            continue
        trained = set(r.train_patients) | set(r.teacher.training_patients if r.teacher else ())
        teacher_images = _teacher_images(results_dir, r)
        trained |= {patients_of[i] for i in teacher_images if i in patients_of}
        leaked = sorted(trained & set(test_patients))
        assert not leaked, f"{r.spec.run_id} ({r.spec.name}): it or its teacher trained on test patient(s) {leaked}"
        for image in teacher_images | {i for p in r.train_patients for i in images_of[p]}:
            if image not in lineage_pixels:
                lineage_pixels[image] = _decoded_sha256(folder / cohort.paths[image], manifest)
            shared = test_pixels.get(lineage_pixels[image])
            assert shared is None, (f"{r.spec.run_id} ({r.spec.name}): its lineage trained on {image}, whose pixels "
                                    "are "
                                    f"an image of test set {shared}")
    for test_set in manifest.test_sets:
        if test_set.kind == "external":  # an external set shares no patient and no picture with the whole cohort
            shared_patients = sorted({c.patient_id for c in test_set.cases} & set(images_of))
            assert not shared_patients, f"{test_set.name} shares patients {shared_patients} with the cohort"
            cohort_pixels = {_decoded_sha256(folder / cohort.paths[r.image_id], manifest) if r.image_id not in
                             lineage_pixels else lineage_pixels[r.image_id] for r in cohort.records}
            assert not cohort_pixels & {c.pixels_sha256 for c in test_set.cases}, (
                f"{test_set.name} shares an image's pixels with the cohort")


def test_claim3_every_scored_run_saw_every_test_case(records: list[RunRecord], manifest: StoreManifest) -> None:
    for test_set in manifest.test_sets:
        expected = [(c.patient_id, c.image_id, c.label) for c in test_set.cases]
        for r in records:
            if r.spec.configuration.deployable:
                assert test_set.name in r.tests, f"{r.spec.run_id} ({r.spec.name}) is not scored on {test_set.name}"
                seen = [(p.patient_id, p.image_id, p.label) for p in r.tests[test_set.name].predictions]
                assert seen == expected, (f"{r.spec.run_id} ({r.spec.name}) was scored on other cases of "
                                          f"{test_set.name} ({len(seen)} cases, {len(expected)} stored)")
    stored = {t.name for t in manifest.test_sets}
    for r in records:
        assert set(r.tests) <= stored, f"{r.spec.run_id}: scores on unknown test sets {sorted(set(r.tests) - stored)}"


def test_claim4_test_sets_are_read_from_xray_alone(records: list[RunRecord]) -> None:
    for r in records:
        configuration = r.spec.configuration
        if r.tests:
            assert configuration.deployable, f"{r.spec.run_id} ({r.spec.name}) reads CT and holds test scores"
        for name, scores in r.tests.items():
            probe = scores.probe
            assert not probe.reads_ct_declared, f"{r.spec.run_id}: declared to read CT on {name}"
            assert probe.ct_removed_max_abs_diff == 0.0 and probe.ct_noise_max_abs_diff == 0.0, (
                f"{r.spec.run_id} ({r.spec.name}): its {name} scores move with CT ({probe})")


def test_claim5_every_test_number_recomputes_from_the_per_case_test_predictions(
        records: list[RunRecord], manifest: StoreManifest, results_dir: Path, report_html: str) -> None:
    for r in records:
        for name, scores in r.tests.items():
            again = compute_metrics(scores.predictions)
            assert scores.metrics == again, f"{r.spec.run_id}: stored {name} metrics differ from its {name} predictions"
    names = [t.name for t in manifest.test_sets]
    if not names:
        return
    table = pd.read_csv(results_dir / "test_summary.csv")
    expected = spreadsheet_safe_frame(scored_summary_frame(_recomputed(records), names))
    assert list(table["configuration"]) == list(expected["configuration"]), "test_summary.csv rows differ"
    for column in expected.columns:
        if expected[column].dtype.kind in "fi":
            assert np.allclose(table[column].astype(float), expected[column].astype(float), rtol=1e-5, atol=1e-6,
                               equal_nan=True), f"test_summary.csv column {column} differs"
    shown = _shown(report_html, "data-test-support")
    for test_set in manifest.test_sets:
        labels: dict[str, int] = defaultdict(int)
        for c in test_set.cases:
            labels[c.patient_id] = max(labels[c.patient_id], c.label)
        positives = sum(c.label for c in test_set.cases)
        assert shown[f"{test_set.name}:images"] == (f"{len(test_set.cases)} ({positives}/"
                                                    f"{len(test_set.cases) - positives})"), "test images misreported"
        assert shown[f"{test_set.name}:patients"] == (f"{len(labels)} ({sum(labels.values())}/"
                                                      f"{len(labels) - sum(labels.values())})"), (
            "test patients misreported")
    assert 'data-test=' in report_html, "the report shows no test-set number"


REGIME_ORDER = {FIXED: 0, MONTE_CARLO: 1, RegimeName.PAIRED_EXHAUSTIVE: 2, KFOLD: 3}  # then the reference regimes


def _configuration_key(record: RunRecord) -> str:
    """A configuration as training sees it: its content, whatever names declared it."""
    return record.spec.configuration.model_dump_json(exclude={"name", "role", "tier", "candidate"})


def _sample(records: list[RunRecord]) -> list[RunRecord]:
    """A deterministic sample to rerun: one run of every configuration of the store (candidates included), the
    fixed split's first seed where it has one (its teachers are shared), and one run of every regime besides."""
    ordered = sorted(records, key=lambda r: (REGIME_ORDER.get(r.spec.regime, 3), r.spec.regime, r.spec.split.index,
                                             r.spec.seed, r.spec.run_id))
    chosen: dict[str, RunRecord] = {}
    for record in ordered:
        chosen.setdefault(_configuration_key(record), record)
    sample = list(chosen.values())
    regimes = {r.spec.regime for r in sample}
    for record in ordered:
        if record.spec.regime not in regimes:
            sample.append(record)
            regimes.add(record.spec.regime)
    return sample


def test_claim7_runs_reproduce_bit_for_bit(records: list[RunRecord], manifest: StoreManifest, cohort_location: Path,
                                           external_files: dict[str, Path], record_property) -> None:  # noqa: ANN001
    import torch

    from benchmark.data.test_sets import ExternalSpec, scoring_identity
    from benchmark.experiment.study import Study
    from benchmark.experiment.worker import data_identity
    from benchmark.methods.engine import Engine

    study = Study.of_cohort(cohort_location, manifest.settings, None,
                            externals=[ExternalSpec(name, path) for name, path in external_files.items()])
    prepared = study.prepared
    assert data_identity(prepared).same_data(manifest.data), f"{cohort_location}: not the data of this store"
    assert scoring_identity(prepared.test_sets) == scoring_identity(manifest.test_sets), "other test sets now"
    sample = _sample(records)
    assert sample, "no run to reproduce"
    configurations = {_configuration_key(r) for r in records}
    assert {_configuration_key(r) for r in sample} == configurations, "the sample misses a configuration"
    threads = torch.get_num_threads()
    engines: dict[tuple[int, str], Engine] = {}  # teachers retrained too, once per thread count and device
    start = time.perf_counter()
    try:
        for record in sample:
            torch.set_num_threads(record.threads)
            # on the store's training path (stacked: alone, same bits), with a teacher store in memory
            if (record.threads, record.device) not in engines:
                engines[(record.threads, record.device)] = study.engine(None, record.device)
            engine = engines[(record.threads, record.device)]
            output = engine.run(record.spec.configuration, record.spec.split, record.spec.seed)
            again = [(p.image_id, p.score) for p in output.predictions]
            before = [(p.image_id, p.score) for p in record.predictions]
            assert again == before, f"{record.spec.run_id} ({', '.join(record.spec.names)}) did not reproduce"
            for name, scores in record.tests.items():  # and its scores on every test set
                assert [(p.image_id, p.score) for p in output.tests[name].predictions] == [
                    (p.image_id, p.score) for p in scores.predictions], (
                    f"{record.spec.run_id}: {name} did not reproduce")
            assert all(math.isfinite(s) for _, s in again)
    finally:
        torch.set_num_threads(threads)
    names = {n for r in records for n in r.spec.names}
    record_property("statement", f"claim 7 reran {len(sample)} runs, one of each of the store's {len(configurations)} "
                                 f"configurations ({len(names)} names, candidates included) and of each regime, "
                                 f"teachers retrained, in {time.perf_counter() - start:.1f} s: all bit for bit")


# PROTOCOL.md section 14: a pre-registered store follows its plan, and a report says whether it was pre-registered.

def test_claim8_the_store_follows_its_plan_or_says_it_has_none(results_dir: Path, report_html: str) -> None:
    from benchmark.claims.plan_check import plan_problems

    problems = plan_problems(results_dir, report_html)
    assert not problems, f"{len(problems)} deviation(s) from the plan: " + "; ".join(problems[:8])
