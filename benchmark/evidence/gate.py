"""The seed authors' decision gate (their follow-up protocol), evaluated beside section 8's rule for every comparison.

It decides nothing of section 8's: the report shows both verdicts and where they disagree (issue 26, item 4).
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.config import GateSettings
from benchmark.evidence.results import (
    Agreement,
    GateEvidence,
    GateOutcome,
    GateVerdict,
    HypothesisResult,
    MonteCarloComparison,
    Status,
)
from benchmark.evidence.rules import monte_carlo_comparison
from benchmark.evidence.statistics import patient_bootstrap
from benchmark.evidence.summary import runs_of
from benchmark.experiment.store import RunRecord

# Choices where the authors' description is silent (also stated in the report and README):
# - A unit is one split of the gate's regime (k-fold: one fold of one repeat), each side's BA its mean over the
#   split's seeds; units where either side's BA is undefined (a fold with no negative patient) are listed and left
#   out of the mean, the interval and the sign counts, as section 8 leaves them out of its test.
# - The interval is the percentile bootstrap of the mean difference that section 8's effect estimate uses: units
#   drawn with replacement, then validation patients within each, by class; `confidence` two-sided.
# - No multiplicity adjustment, as theirs: a sweep of m cells gets m chances (see `ctxray-bench gate-chance`).


def gate_rule(settings: GateSettings) -> str:
    """The gate in words, as the report states it."""
    return (f"passes(A > B) iff the mean BA difference over the {settings.regime} splits is >= "
            f"{settings.min_mean_difference:+.3f} and the lower bound of its two-sided {settings.confidence:.0%} "
            f"percentile bootstrap interval ({settings.bootstrap_replicates} replicates: splits, then patients within "
            f"each, by class; seed {settings.bootstrap_seed}) is > 0; no multiplicity adjustment")


def _agreement(outcome: GateOutcome, status: Status) -> Agreement:
    """Whether the gate and section 8 say the same of a comparison (supported is section 8's only pass)."""
    if outcome == GateOutcome.NOT_EVALUABLE or status == Status.NOT_EVALUABLE:
        return "not comparable"
    passed, supported = outcome == GateOutcome.PASSES, status == Status.SUPPORTED
    return "agree" if passed == supported else "gate only" if passed else "section 8 only"


def gate_verdict(records: Sequence[RunRecord], comparison: str, a: str, b: str, section8: Status,
                 settings: GateSettings) -> GateVerdict:
    """The gate on A > B over the gate regime's splits, beside section 8's `section8` status."""
    absent = [n for n in (a, b) if not runs_of(records, n, settings.regime)]
    mc: MonteCarloComparison | None = None if absent else monte_carlo_comparison(records, a, b, settings.regime)
    d = [r.d_balanced_accuracy for r in mc.resamples if r.d_balanced_accuracy is not None] if mc else []
    lower = upper = None
    if absent:
        outcome, reason = GateOutcome.NOT_EVALUABLE, f"no {settings.regime} runs of {', '.join(absent)}"
    elif not d:
        outcome, reason = GateOutcome.NOT_EVALUABLE, f"no {settings.regime} split with a defined BA difference"
    else:
        assert mc is not None and mc.mean_d_balanced_accuracy is not None
        lower, upper = patient_bootstrap(records, mc, settings.bootstrap_replicates, settings.confidence,
                                         settings.bootstrap_seed)
        mean = mc.mean_d_balanced_accuracy
        big, above = mean >= settings.min_mean_difference, lower > 0
        outcome = GateOutcome.PASSES if big and above else GateOutcome.FAILS
        reason = (f"mean dBA {mean:+.3f} {'>=' if big else '<'} {settings.min_mean_difference:+.3f}; lower bound "
                  f"{lower:+.3f} {'>' if above else '<='} 0")
    if mc is not None and (mc.missing or mc.undefined):
        reason += f" ({len(mc.undefined)} split(s) with undefined BA and {len(mc.missing)} missing a run left out)"
    return GateVerdict(
        comparison=comparison, a=a, b=b, units=len(d), missing=mc.missing if mc else [],
        undefined=mc.undefined if mc else [], mean_d_balanced_accuracy=mc.mean_d_balanced_accuracy if mc else None,
        lower=lower, upper=upper, positive=sum(x > 0 for x in d), negative=sum(x < 0 for x in d),
        ties=sum(x == 0 for x in d), outcome=outcome, reason=reason, section8=section8,
        agreement=_agreement(outcome, section8))


def gate_evidence(records: Sequence[RunRecord], hypotheses: Sequence[HypothesisResult],
                  settings: GateSettings) -> GateEvidence | None:
    """The gate on every comparison section 8 decided (H1-H5, each candidate vs each control); None when the store
    has no run on the gate's regime (then the report says so)."""
    if not any(r.spec.regime == settings.regime for r in records):
        return None
    verdicts = [gate_verdict(records, h.hypothesis, h.a, h.b, h.status, settings)
                for h in hypotheses if h.a is not None and h.b is not None]
    return GateEvidence(settings=settings, rule=gate_rule(settings), verdicts=verdicts,
                        passes=sum(v.outcome == GateOutcome.PASSES for v in verdicts),
                        disagreements=sum(v.agreement in ("gate only", "section 8 only") for v in verdicts))
