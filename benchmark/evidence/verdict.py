"""A store's evidence: the section 8 rules on the validation cases, then again on every test set (section 13)."""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.evidence.generalisation import evidence_on_test_set
from benchmark.evidence.results import Evidence, PowerGrounding
from benchmark.evidence.rules import cohort_size, declared_candidates, evaluate_hypotheses
from benchmark.experiment.store import RunRecord, StoreManifest


def store_evidence(manifest: StoreManifest, records: Sequence[RunRecord],
                   power: PowerGrounding | None = None) -> Evidence:
    """The evidence of a store's runs (its statements of need in the store's cohort's patients) and, for each of its
    test sets, the same rules on the runs' scores there."""
    evidence = evaluate_hypotheses(records, cohort_size(manifest), power, declared_candidates(manifest),
                                   manifest.settings.evidence.rope)
    return evidence.model_copy(update={"test_sets": [evidence_on_test_set(records, test_set, evidence)
                                                     for test_set in manifest.test_sets]})
