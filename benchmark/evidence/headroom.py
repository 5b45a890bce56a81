"""Teacher head-room (issue 26, item 2): is there a signal to transfer? Each privileged-modality teacher on the
validation patients' matched privileged images, against the target-modality supervised model on the same patients.

Decided by section 8's MC-confirmed rule with its bootstrap interval, before (and apart from) the transfer hypotheses.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.evidence.results import HypothesisResult, PairedCohort, Status, TeacherHeadroom
from benchmark.evidence.rules import MC_CONFIRMED, MONTE_CARLO, Hypothesis, Judging
from benchmark.evidence.summary import runs_of
from benchmark.experiment.matrix import Declaration
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import RunRecord

SUPERVISED = "student-only"  # the target-modality model trained on the labels alone, on the same splits
STATEMENT = "the privileged-modality teacher beats the target-modality supervised model on the same patients"

# A teacher is identified by its configuration (modality, network, training), so the teacher that several
# configurations share (plain-ct-kd, attention transfer, hints, confidence-gated) is one row, named after the first
# configuration that declared it. Its runs on a split are one teacher (seeded by the split), stored once per run that
# used it; the first stored copy stands for it. A teacher with no Monte Carlo run is not shown (no resamples).


def _teacher_runs(records: Sequence[RunRecord]) -> dict[str, tuple[str, list[str], list[RunRecord]]]:
    """Teacher content -> (its row label, the configurations using it, one pseudo-run per teacher and split)."""
    groups: dict[str, tuple[str, list[str], dict[str, RunRecord]]] = {}
    for record in records:
        teacher, config = record.teacher, record.spec.configuration.teacher
        if teacher is None or config is None or teacher.validation_predictions is None:
            continue
        key = config.model_dump_json()
        label, names, by_teacher = groups.setdefault(key, (f"{teacher.modality} teacher of {record.spec.name}", [], {}))
        names.extend(n for n in record.spec.names if n not in names)
        if teacher.teacher_id not in by_teacher:
            spec = record.spec.model_copy(update={"declarations": (Declaration(block="head-room", name=label),)})
            by_teacher[teacher.teacher_id] = record.model_copy(update={
                "spec": spec, "predictions": teacher.validation_predictions,
                "metrics": compute_metrics(teacher.validation_predictions)})
    return {key: (label, names, list(by_teacher.values())) for key, (label, names, by_teacher) in groups.items()}


def teacher_headroom(records: Sequence[RunRecord], cohort: PairedCohort | None = None,
                     rope: float = 0.05) -> list[TeacherHeadroom]:
    """Every privileged-modality teacher with Monte Carlo runs, judged against the supervised target model."""
    rows = []
    for label, names, pseudo in _teacher_runs(records).values():
        if not runs_of(pseudo, label, MONTE_CARLO):
            continue
        judging = Judging([*pseudo, *records], {}, cohort, None, None, rope)
        result = Hypothesis(f"head-room: {label}", STATEMENT, label, SUPERVISED, MC_CONFIRMED).decide(judging)
        rows.append(TeacherHeadroom(teacher=label, configurations=names, result=result,
                                    statement=_in_words(label, result)))
    return rows


def _in_words(label: str, result: HypothesisResult) -> str:
    """The head-room's answer to "is there a signal to transfer?", said plainly."""
    mc = result.monte_carlo
    if mc is None:
        return f"{label}: not evaluable ({result.reason}), so nothing is known about a signal to transfer"
    numbers = (f"mean BA difference {mc.mean_d_balanced_accuracy:+.3f} over {len(mc.resamples)} resamples, "
               f"p = {mc.p_value:.3f}" if mc.mean_d_balanced_accuracy is not None and mc.p_value is not None
               else result.reason)
    if result.status == Status.SUPPORTED:
        return (f"{label} beats {SUPERVISED} on the same patients ({numbers}): there is a signal to transfer, "
                "which the transfer hypotheses then test")
    return (f"{label} does not beat {SUPERVISED} on the same patients ({numbers}): no signal to transfer is "
            "shown, so a transfer method has no demonstrated head-room here and a null transfer result is expected")
