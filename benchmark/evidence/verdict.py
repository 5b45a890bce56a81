"""A store's evidence: the section 8 rules on the validation cases, then again on every test set (section 13)."""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.evidence.candidates import declared_candidates
from benchmark.evidence.gate import gate_evidence
from benchmark.evidence.generalisation import evidence_on_test_set
from benchmark.evidence.headroom import teacher_headroom
from benchmark.evidence.results import Evidence, PairedCohort, PowerGrounding
from benchmark.evidence.rules import evaluate_hypotheses
from benchmark.experiment.store import RunRecord, StoreManifest


def cohort_size(manifest: StoreManifest) -> PairedCohort | None:
    """The paired cohort's size and the Monte Carlo k of a store."""
    paired = manifest.cohort.manifests.get("paired")  # type: ignore[call-overload]
    if paired is None:
        return None
    splits = manifest.settings.splits
    return PairedCohort(paired_patients=paired.patients, negative_patients=paired.negative_patients,
                        val_patients=splits.monte_carlo_val_patients, val_negatives=splits.validation_negatives)


def store_evidence(manifest: StoreManifest, records: Sequence[RunRecord],
                   power: PowerGrounding | None = None) -> Evidence:
    """The evidence of a store's runs, and for each of its test sets the same rules on the runs' scores there."""
    # the statements of need are in the store's cohort's patients
    cohort = cohort_size(manifest)
    evidence = evaluate_hypotheses(records, cohort, power, declared_candidates(manifest),
                                   manifest.settings.evidence.rope)
    compared = [*evidence.hypotheses, *(c for candidate in evidence.candidates for c in candidate.comparisons)]
    return evidence.model_copy(update={"test_sets": [evidence_on_test_set(records, test_set, evidence)
                                                     for test_set in manifest.test_sets],
                                       "headroom": teacher_headroom(records, cohort, manifest.settings.evidence.rope),
                                       "gate": gate_evidence(records, compared, manifest.settings.gate)})
