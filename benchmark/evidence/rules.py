"""The decisions of PROTOCOL.md section 8, and section 14's candidate headlines: each status with its numbers and rule.

Every hypothesis of `HYPOTHESES` carries the `Rule` it is judged by, so nothing here branches on a hypothesis's key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from benchmark.evidence.candidates import CONTROL_STATEMENTS, CONTROLS, candidate_names, headlines
from benchmark.evidence.results import (
    ALPHA,
    DEFAULT_ROPE,
    CandidateEvidence,
    Decided,
    EffectEstimate,
    Evidence,
    FixedSplitComparison,
    HypothesisKey,
    HypothesisResult,
    LengthEvidence,
    MonteCarloComparison,
    PairedCohort,
    PowerGrounding,
    RateCheck,
    Status,
)
from benchmark.evidence.statistics import (
    companions,
    defined_mean,
    effect_estimate,
    mean_of,
    resample_difference,
    runs_by_resample,
    sign_flip_p_value,
)
from benchmark.evidence.summary import runs_at_length, runs_of, training_lengths
from benchmark.experiment.store import RunRecord
from benchmark.schemas import RegimeName

# the regimes the rules read, by the names the power study and the report import them under
MONTE_CARLO = RegimeName.PAIRED_MONTE_CARLO
FIXED = RegimeName.PAIRED_FIXED


def monte_carlo_comparison(records: Sequence[RunRecord], a: str, b: str, regime: str = MONTE_CARLO,
                           rope: float = DEFAULT_ROPE) -> MonteCarloComparison:
    """Paired per-resample differences of A and B, whether MC-confirmed(A > B) holds, and its companions."""
    runs_a, runs_b = runs_by_resample(records, a, regime), runs_by_resample(records, b, regime)
    split_ids = {h: runs[0].spec.split.split_id for h, runs in (*runs_a.items(), *runs_b.items())}
    shared = [h for h in split_ids if h in runs_a and h in runs_b]
    missing = sorted(split_ids[h] for h in split_ids if h not in shared)
    resamples = [resample_difference(split_ids[h], h, runs_a[h], runs_b[h])
                 for h in sorted(shared, key=lambda h: (runs_a[h][0].spec.split.index, h))]
    if not resamples:
        return MonteCarloComparison(a=a, b=b, resamples=[], missing=missing, mean_d_balanced_accuracy=None,
                                    mean_d_macro_f1=None, p_value=None, test="no paired resamples", confirmed=False)
    # a resample whose BA is undefined (a class its validation cases lack, PROTOCOL section 6) is listed, and left
    # out of the mean and the test, never counted as a number
    d_ba = [r.d_balanced_accuracy for r in resamples if r.d_balanced_accuracy is not None]
    splits = [runs_a[r.val_hash][0].spec.split for r in resamples if r.d_balanced_accuracy is not None]
    undefined = [r.split_id for r in resamples if r.d_balanced_accuracy is None]
    mean_ba, mean_f1 = defined_mean(d_ba), mean_of([r.d_macro_f1 for r in resamples])
    p_value, test = (sign_flip_p_value(d_ba) if len(d_ba) >= 2 else  # scipy refuses one difference: no test
                     (None, f"{len(d_ba)} resample(s) with a defined BA difference: too few for a sign-flip test"))
    # degenerate: A's or B's run collapsed (one class for every validation image) on more than half the resamples
    collapsed = sum(r.a_collapsed or r.b_collapsed for r in resamples)
    degenerate = 2 * collapsed > len(resamples)
    # a resample missing a run, an undefined BA or degenerate evidence never confirms
    confirmed = (not missing and not undefined and not degenerate and mean_ba is not None and mean_ba > 0
                 and mean_f1 > 0 and p_value is not None and p_value <= ALPHA)
    return MonteCarloComparison(
        a=a, b=b, resamples=resamples, missing=missing, undefined=undefined, mean_d_balanced_accuracy=mean_ba,
        mean_d_macro_f1=mean_f1, p_value=p_value, test=test,
        a_collapsed=[r.split_id for r in resamples if r.a_collapsed],
        b_collapsed=[r.split_id for r in resamples if r.b_collapsed], collapsed_resamples=collapsed,
        degenerate=degenerate, confirmed=confirmed,
        companions=companions(d_ba, [len(s.train_patients) for s in splits], [len(s.val_patients) for s in splits],
                              rope))


def fixed_split_comparison(records: Sequence[RunRecord], a: str, b: str) -> FixedSplitComparison:
    """Mean BA over the fixed split's seeds for A and B, and whether A's exceeds B's."""
    # no interval or test on the fixed split: three validation patients are too few
    runs_a, runs_b = runs_of(records, a, FIXED), runs_of(records, b, FIXED)
    mean_a = defined_mean([r.metrics.balanced_accuracy for r in runs_a])  # None: no run, or BA undefined
    mean_b = defined_mean([r.metrics.balanced_accuracy for r in runs_b])
    return FixedSplitComparison(
        a=a, b=b, a_mean_balanced_accuracy=mean_a, b_mean_balanced_accuracy=mean_b,
        a_seeds=sorted(r.spec.seed for r in runs_a), b_seeds=sorted(r.spec.seed for r in runs_b),
        a_run_ids=sorted(r.spec.run_id for r in runs_a), b_run_ids=sorted(r.spec.run_id for r in runs_b),
        advantage=mean_a is not None and mean_b is not None and mean_a > mean_b)


Estimator = Callable[[Sequence[RunRecord], MonteCarloComparison], EffectEstimate | None]


@dataclass(frozen=True)
class Judging:
    """What a rule decides on: the runs, the statuses decided before it, and what its effect estimate needs."""

    records: Sequence[RunRecord]
    decided: Mapping[str, HypothesisResult]
    cohort: PairedCohort | None = None
    power: PowerGrounding | None = None
    estimator: Estimator | None = None  # replaces the validation effect estimate (a test set's)
    rope: float = DEFAULT_ROPE


class Rule(Protocol):
    """How a hypothesis is judged: its rule in words, and its status as far as the present runs decide it."""

    def describe(self, h: Hypothesis) -> str:
        """The rule in words, as the report and the plan state it."""
        ...

    def decide(self, h: Hypothesis, judging: Judging) -> HypothesisResult:
        """The status of `h` by this rule, with the numbers it was decided on."""
        ...


@dataclass(frozen=True)
class Hypothesis:
    """A question the rules decide: the configurations it compares (A > B) and the rule it is judged by."""

    key: str  # a HypothesisKey for H1-H5; `candidate vs control` for a candidate's comparison
    statement: str
    a: str
    b: str
    rule: Rule
    studied_by_power: bool = False  # the power study simulates this comparison: its estimate quotes the study

    @property
    def rule_text(self) -> str:
        """This hypothesis's rule in words."""
        return self.rule.describe(self)

    def decide(self, judging: Judging) -> HypothesisResult:
        """This hypothesis's status by its rule."""
        return self.rule.decide(self, judging)


MC_RULE = ("MC-confirmed(A > B): mean per-resample BA difference > 0, mean macro-F1 difference > 0, and the "
           f"exact one-sided paired sign-flip permutation test over resamples gives p <= {ALPHA}")


def _missing(records: Sequence[RunRecord], names: Sequence[str], regime: str) -> list[str]:
    """The names that have no run in `regime`."""
    return [n for n in names if not runs_of(records, n, regime)]


def _monte_carlo(h: Hypothesis, judging: Judging) -> tuple[MonteCarloComparison | None, list[str]]:
    """A's and B's Monte Carlo comparison (None when either has no run there), and the names without runs."""
    absent = _missing(judging.records, [h.a, h.b], MONTE_CARLO)
    return (None if absent else monte_carlo_comparison(judging.records, h.a, h.b, rope=judging.rope)), absent


def _no_monte_carlo(absent: list[str]) -> tuple[Status, str]:
    """What no present run can decide without the Monte Carlo runs of `absent`."""
    return Status.NOT_EVALUABLE, f"no Monte Carlo runs of {', '.join(absent)} in the store"


@dataclass(frozen=True)
class McConfirmed:
    """Supported iff MC-confirmed(A > B); otherwise not supported (H2, H3 and every candidate comparison)."""

    uses_fixed_split: ClassVar[bool] = False

    def describe(self, h: Hypothesis) -> str:
        """The rule in words."""
        return f"supported iff {MC_RULE}; otherwise 'not supported'"

    def judge(self, mc: MonteCarloComparison | None, fixed: FixedSplitComparison | None, absent_mc: list[str],
              absent_fixed: list[str]) -> tuple[Status, str]:
        """The status and why, from the comparisons the present runs allow (None: a side has no runs)."""
        if mc is None:
            return _no_monte_carlo(absent_mc)
        return (Status.SUPPORTED, "MC-confirmed") if mc.confirmed else (Status.NOT_SUPPORTED, "not MC-confirmed")

    def decide(self, h: Hypothesis, judging: Judging) -> HypothesisResult:
        """The status by `judge`, with the comparisons, their caveats and the effect estimate."""
        records = judging.records
        mc, absent_mc = _monte_carlo(h, judging)
        absent_fixed = _missing(records, [h.a, h.b], FIXED) if self.uses_fixed_split else []
        fixed = fixed_split_comparison(records, h.a, h.b) if self.uses_fixed_split and not absent_fixed else None
        status, reason = self.judge(mc, fixed, absent_mc, absent_fixed)
        if mc is not None and not mc.confirmed and mc.missing:
            reason += f" (resamples missing a run: {', '.join(mc.missing)})"
        if mc is not None and not mc.confirmed and mc.undefined:
            reason += f" (resamples with an undefined BA: {', '.join(mc.undefined)})"
        tag = mc.degenerate_tag if mc is not None else None
        if tag is not None and status != Status.NOT_EVALUABLE:
            reason += f" ({tag})"
        if mc is None:
            estimate = None
        elif judging.estimator is not None:
            estimate = judging.estimator(records, mc)
        else:
            estimate = effect_estimate(records, mc, judging.cohort, judging.power if h.studied_by_power else None)
        return HypothesisResult(hypothesis=h.key, statement=h.statement, a=h.a, b=h.b, rule=h.rule_text,
                                status=status, reason=reason, monte_carlo=mc, fixed_split=fixed, estimate=estimate,
                                degenerate=tag)


@dataclass(frozen=True)
class McConfirmedElseTentative(McConfirmed):
    """Supported iff MC-confirmed; otherwise tentative with a fixed-split advantage, else not supported (H1)."""

    uses_fixed_split: ClassVar[bool] = True

    def describe(self, h: Hypothesis) -> str:
        """The rule in words."""
        return (f"supported iff {MC_RULE}; otherwise 'tentative (fixed split only)' if the mean fixed-split BA of A "
                "over its seeds exceeds B's, else 'not supported'")

    def judge(self, mc: MonteCarloComparison | None, fixed: FixedSplitComparison | None, absent_mc: list[str],
              absent_fixed: list[str]) -> tuple[Status, str]:
        """The status and why: the fixed split tells tentative from not supported once MC does not confirm."""
        if mc is None or mc.confirmed:
            return super().judge(mc, fixed, absent_mc, absent_fixed)
        if fixed is None:
            return Status.NOT_EVALUABLE, (f"not MC-confirmed; no fixed-split runs of {', '.join(absent_fixed)} to "
                                          f"tell '{Status.TENTATIVE.value}' from '{Status.NOT_SUPPORTED.value}'")
        if fixed.advantage:
            return Status.TENTATIVE, "not MC-confirmed; fixed-split advantage only"
        return Status.NOT_SUPPORTED, "not MC-confirmed; no fixed-split advantage"


@dataclass(frozen=True)
class McConfirmedWithFixedAdvantage(McConfirmed):
    """Supported iff MC-confirmed and a fixed-split advantage; otherwise not supported (H4)."""

    uses_fixed_split: ClassVar[bool] = True

    def describe(self, h: Hypothesis) -> str:
        """The rule in words."""
        return f"supported iff {MC_RULE} and the fixed-split mean BA of A exceeds B's; otherwise 'not supported'"

    def judge(self, mc: MonteCarloComparison | None, fixed: FixedSplitComparison | None, absent_mc: list[str],
              absent_fixed: list[str]) -> tuple[Status, str]:
        """The status and why: either condition failing decides it, whichever of the two regimes has no runs."""
        if mc is not None and fixed is not None:
            supported = mc.confirmed and fixed.advantage
            return ((Status.SUPPORTED, "MC-confirmed and fixed-split advantage") if supported else
                    (Status.NOT_SUPPORTED, f"MC-confirmed: {mc.confirmed}; fixed-split advantage: {fixed.advantage}"))
        if mc is None and fixed is not None and not fixed.advantage:
            return Status.NOT_SUPPORTED, (f"no fixed-split advantage, which decides it (no Monte Carlo runs of "
                                          f"{', '.join(absent_mc)}, which could not change that)")
        if mc is None:
            return _no_monte_carlo(absent_mc)
        if not mc.confirmed:
            return Status.NOT_SUPPORTED, (f"not MC-confirmed, which decides it (no fixed-split runs of "
                                          f"{', '.join(absent_fixed)}, which could not change that)")
        return Status.NOT_EVALUABLE, (f"MC-confirmed, but no fixed-split runs of {', '.join(absent_fixed)} to check "
                                      "the advantage")


@dataclass(frozen=True)
class SurvivesImbalance:
    """H5's rule: `prerequisite` supported, A MC-confirmed over B, and no run's positive prediction rate at 0 or 1."""

    prerequisite: HypothesisKey
    rated: str  # the configuration whose rate is checked with the default sampler too (A is its balanced variant)

    def describe(self, h: Hypothesis) -> str:
        """The rule in words."""
        return (f"supported iff {self.prerequisite} is supported, {h.a} is MC-confirmed over {h.b}, and "
                f"{self.rated}'s positive prediction rate is strictly between 0 and 1 on every Monte Carlo "
                "resample (with the default and with the class-balanced sampler); otherwise 'not supported'")

    def decide(self, h: Hypothesis, judging: Judging) -> HypothesisResult:
        """The status from whatever of the three conditions the present runs decide: one failing suffices."""
        records = judging.records
        mc, absent_mc = _monte_carlo(h, judging)
        prerequisite = judging.decided[self.prerequisite]
        rates = [RateCheck(configuration=name, split_id=r.spec.split.split_id, run_id=r.spec.run_id,
                           positive_prediction_rate=r.metrics.positive_prediction_rate,
                           inside=0 < r.metrics.positive_prediction_rate < 1)
                 for name in (self.rated, h.a) for r in runs_of(records, name, MONTE_CARLO)]
        failures, unknown = [], []
        if prerequisite.status == Status.NOT_EVALUABLE:
            unknown.append(f"{self.prerequisite} is not evaluable")
        elif prerequisite.status != Status.SUPPORTED:
            failures.append(f"{self.prerequisite} is {prerequisite.status.value}")
        if mc is None:
            unknown.append(f"no Monte Carlo runs of {', '.join(absent_mc)}")
        elif not mc.confirmed:
            failures.append(f"{h.a} is not MC-confirmed over {h.b}"
                            + (f" ({mc.degenerate_tag})" if mc.degenerate else ""))
        outside = [c for c in rates if not c.inside]
        if outside:
            failures.append(f"positive prediction rate at 0 or 1 on {len(outside)} resample run(s)")
        elif _missing(records, [self.rated, h.a], MONTE_CARLO):
            unknown.append("the positive prediction rate cannot be checked on every resample")
        status = Status.NOT_SUPPORTED if failures else Status.NOT_EVALUABLE if unknown else Status.SUPPORTED
        reason = "; ".join(failures or unknown) or "all three conditions hold"
        return HypothesisResult(hypothesis=h.key, statement=h.statement, a=h.a, b=h.b, rule=h.rule_text,
                                status=status, reason=reason, balanced_monte_carlo=mc, rate_checks=rates,
                                degenerate=mc.degenerate_tag if mc is not None else None)


MC_CONFIRMED = McConfirmed()
HYPOTHESES = (
    Hypothesis(HypothesisKey.H1, "cross-modal logit KD beats student-only", "plain-ct-kd", "student-only",
               McConfirmedElseTentative(), studied_by_power=True),
    Hypothesis(HypothesisKey.H2, "the gain is not reducible to same-modality KD", "plain-ct-kd", "same-modality-kd",
               MC_CONFIRMED, studied_by_power=True),
    Hypothesis(HypothesisKey.H3, "the gain is not reducible to late fusion", "plain-ct-kd", "late-fusion",
               MC_CONFIRMED),
    Hypothesis(HypothesisKey.H4, "DPE/MHRA/DFPN improve on the plain control", "jdcnet", "plain-ct-kd",
               McConfirmedWithFixedAdvantage()),
    Hypothesis(HypothesisKey.H5, "the gain survives imbalance controls", "plain-ct-kd@balanced",
               "student-only@balanced", SurvivesImbalance(prerequisite=HypothesisKey.H1, rated="plain-ct-kd")),
)


def decide_all(records: Sequence[RunRecord], cohort: PairedCohort | None = None,
               power: PowerGrounding | None = None, estimator: Estimator | None = None,
               rope: float = DEFAULT_ROPE) -> list[HypothesisResult]:
    """H1-H5 on these runs, in order, each by its own rule (a rule may read a status decided before it)."""
    decided: dict[str, HypothesisResult] = {}
    judging = Judging(records, decided, cohort, power, estimator, rope)
    for hypothesis in HYPOTHESES:
        decided[hypothesis.key] = hypothesis.decide(judging)
    return list(decided.values())


def decide_candidates(records: Sequence[RunRecord], names: Sequence[str], cohort: PairedCohort | None = None,
                      estimator: Estimator | None = None, rope: float = DEFAULT_ROPE) -> list[CandidateEvidence]:
    """Every candidate of `names` against every control by the MC-confirmed rule, and each one's headline."""
    judging = Judging(records, {}, cohort, None, estimator, rope)
    result = []
    for name in names:
        comparisons = [Hypothesis(f"{name} vs {control}", CONTROL_STATEMENTS[control], name, control,
                                  MC_CONFIRMED).decide(judging) for control in CONTROLS if control != name]
        result.append(CandidateEvidence(name=name, comparisons=comparisons))
    return headlines(result)


def decide_everything(records: Sequence[RunRecord], cohort: PairedCohort | None = None,
                      power: PowerGrounding | None = None, estimator: Estimator | None = None,
                      names: Sequence[str] | None = None, rope: float = DEFAULT_ROPE) -> Decided:
    """H1-H5 and the candidates (default: those of `records`) at the headline length and at every training length."""
    # the rules are applied again at every student training length, each on its own runs; a status that differs
    # between lengths (not evaluable aside) depends on training length
    headline = decide_all(records, cohort, power, estimator, rope)
    names = candidate_names(records) if names is None else names
    candidates = decide_candidates(records, names, cohort, estimator, rope)
    lengths = []
    for epochs in training_lengths(records):
        view = runs_at_length(records, epochs)
        lengths.append(LengthEvidence(epochs=epochs, hypotheses=decide_all(view, cohort, power, estimator, rope),
                                      candidates=decide_candidates(view, names, cohort, estimator, rope)))

    def at_lengths(key: str) -> set[Status]:
        """The statuses of `key` at the training lengths."""
        return {h.status for length in lengths
                for h in [*length.hypotheses, *(c for cand in length.candidates for c in cand.comparisons)]
                if h.hypothesis == key}

    depends = [h.hypothesis for h in [*headline, *(c for cand in candidates for c in cand.comparisons)]
               if len(({h.status} | at_lengths(h.hypothesis)) - {Status.NOT_EVALUABLE}) > 1]
    return Decided(headline, candidates, lengths, depends)


def evaluate_hypotheses(records: Sequence[RunRecord], cohort: PairedCohort | None = None,
                        power: PowerGrounding | None = None, names: Sequence[str] | None = None,
                        rope: float = DEFAULT_ROPE) -> Evidence:
    """The evidence of these runs: every status at the headline and at every training length, with its numbers."""
    # `cohort` and `power` let the effect estimates say in patients what a confirmation would need
    decided = decide_everything(records, cohort, power, names=names, rope=rope)
    # degenerate headline: the default sampler's Monte Carlo comparison (H5's is the balanced sampler's)
    return Evidence(runs=len(records), rope=rope, hypotheses=decided.hypotheses,
                    training_lengths=decided.training_lengths,
                    depends_on_training_length=decided.depends_on_training_length, candidates=decided.candidates,
                    degenerate_headline=[h.hypothesis for h in decided.hypotheses
                                         if h.monte_carlo is not None and h.monte_carlo.degenerate])
