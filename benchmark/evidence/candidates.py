"""The candidate methods of a store and their headline "beats every control" (PROTOCOL.md section 14): an
intersection-union p per candidate, Holm-adjusted across the candidates, over comparisons the rules decide.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.evidence.results import ALPHA, CandidateEvidence, Status
from benchmark.evidence.statistics import holm_adjusted
from benchmark.experiment.matrix import CANDIDATE_BLOCK
from benchmark.experiment.store import RunRecord, StoreManifest

CONTROLS = ("student-only", "same-modality-kd", "late-fusion", "plain-ct-kd")
CONTROL_STATEMENTS = {
    "student-only": "it improves on the student trained without a teacher",
    "same-modality-kd": "its gain is not same-modality distillation",
    "late-fusion": "its gain is not reducible to late fusion",
    "plain-ct-kd": "it improves on plain CT logit KD",
}


def candidate_names(records: Sequence[RunRecord]) -> list[str]:
    """The candidate methods that have runs here: the names their candidates block declared, in declaration order."""
    return list(dict.fromkeys(d.name for r in records if r.spec.configuration.candidate
                              for d in r.spec.declarations if d.block == CANDIDATE_BLOCK))


def declared_candidates(manifest: StoreManifest) -> list[str]:
    """The candidate methods a store's profile declares, whether or not any of their runs succeeded."""
    # a candidate whose runs all failed is decided (not evaluable), never dropped
    return [name for block in manifest.profile.blocks if block.name == CANDIDATE_BLOCK
            for name in block.configurations]


def intersection_p_value(candidate: CandidateEvidence) -> float | None:
    """The intersection-union p of "beats every control": the largest control comparison's p (None: one has none)."""
    p_values = [c.monte_carlo.p_value if c.monte_carlo is not None else None for c in candidate.comparisons]
    return None if not p_values or any(p is None for p in p_values) else max(p for p in p_values if p is not None)


def headlines(candidates: list[CandidateEvidence]) -> list[CandidateEvidence]:
    """Each candidate's headline status: its intersection-union p, Holm-adjusted over the m candidates."""
    # a candidate without a p counts as p = 1, so the family is never shrunk; supported iff every control comparison
    # is MC-confirmed and the adjusted p <= alpha; not evaluable while a comparison is and none fails
    raw = [intersection_p_value(c) for c in candidates]
    adjusted = holm_adjusted([1.0 if p is None else p for p in raw])
    decided = []
    for candidate, p, p_adjusted in zip(candidates, raw, adjusted, strict=True):
        statuses = [c.status for c in candidate.comparisons]
        failing = [c.b for c in candidate.comparisons if c.status == Status.NOT_SUPPORTED]
        if failing:
            status, reason = Status.NOT_SUPPORTED, f"not MC-confirmed over {', '.join(map(str, failing))}"
        elif Status.NOT_EVALUABLE in statuses or p is None:
            status, reason = Status.NOT_EVALUABLE, "a control comparison is not evaluable"
        elif p_adjusted > ALPHA:
            status = Status.NOT_SUPPORTED
            reason = (f"every control comparison is MC-confirmed, but the Holm-adjusted p = {p_adjusted:.4g} over "
                      f"{len(candidates)} candidates exceeds {ALPHA} (raw p = {p:.4g})")
        else:
            status = Status.SUPPORTED
            reason = (f"every control comparison is MC-confirmed and the Holm-adjusted p = {p_adjusted:.4g} over "
                      f"{len(candidates)} candidate(s) is <= {ALPHA}")
        decided.append(candidate.model_copy(update={
            "status": status, "reason": reason, "p_value": p, "adjusted_p_value": p_adjusted,
            "family": len(candidates)}))
    return decided
