"""The evidence's result models (PROTOCOL.md sections 8 and 13): pure data, written to evidence.json and the report.

`benchmark.evidence.rules` decides them on validation cases, `benchmark.evidence.generalisation` on each test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from benchmark.config import EvidenceSettings, GateSettings
from benchmark.schemas import SupportCounts, TestSetKind

ALPHA = 0.05
DEFAULT_ROPE = EvidenceSettings().rope
MULTIPLICITY = ("H1-H5 are the study's pre-specified questions: their p-values are not adjusted. A candidate's "
                "headline 'beats every control' is an intersection-union test (its p is the largest of its control "
                "comparisons'), Holm-adjusted across the study's candidates; it is supported only when the adjusted "
                f"p <= {ALPHA} and every control comparison is MC-confirmed. The companions (corrected resampled "
                "t-test, Bayesian correlated t-test) are reported beside the sign-flip p and decide nothing.")


class HypothesisKey(StrEnum):
    """The hypotheses of section 8, by the keys evidence.json, the plan and the report name them with."""

    H1 = "H1"
    H2 = "H2"
    H3 = "H3"
    H4 = "H4"
    H5 = "H5"


class Status(StrEnum):
    """The statuses a hypothesis can take."""

    SUPPORTED = "supported"
    TENTATIVE = "tentative (fixed split only)"
    NOT_SUPPORTED = "not supported"
    NOT_EVALUABLE = "not evaluable"


class ResampleDifference(BaseModel):
    """One Monte Carlo resample's paired difference between A and B, and the runs it comes from."""

    split_id: str
    val_hash: str
    a_balanced_accuracy: float | None = Field(description="None: undefined (a class the validation cases lack)")
    b_balanced_accuracy: float | None
    a_macro_f1: float
    b_macro_f1: float
    d_balanced_accuracy: float | None = Field(description="None when either side's BA is undefined")
    d_macro_f1: float
    a_run_ids: list[str]
    b_run_ids: list[str]
    a_collapsed: bool = Field(description="a run of A on this resample predicted one class for every image")
    b_collapsed: bool


class CorrectedTTest(BaseModel):
    """Nadeau-Bengio corrected resampled t-test of mean BA difference > 0 (a companion, never a decision rule)."""

    t_statistic: float | None = Field(description="None when every difference is equal (no spread)")
    degrees_of_freedom: int
    variance_factor: float = Field(description="1/R + n_val/n_train, the splits' mean patient counts")
    p_value: float | None = Field(description="one-sided; None when every difference is 0")


class BayesianCorrelatedTTest(BaseModel):
    """Benavoli et al.'s Bayesian correlated t-test: posterior probabilities around a ROPE (a companion)."""

    correlation: float = Field(description="rho = n_val / (n_val + n_train)")
    rope: float = Field(description="half-width of the region of practical equivalence, in BA")
    p_a_better: float = Field(description="P(mean BA difference > rope)")
    p_equivalent: float = Field(description="P(|mean BA difference| <= rope)")
    p_b_better: float = Field(description="P(mean BA difference < -rope)")


class Companions(BaseModel):
    """What the resamples' overlap does to a comparison (PROTOCOL.md section 14): reported, never deciding."""

    resamples: int = Field(description="defined per-resample differences used")
    mean_train_patients: float
    mean_val_patients: float
    corrected_t: CorrectedTTest
    bayesian: BayesianCorrelatedTTest


class MonteCarloComparison(BaseModel):
    """MC-confirmed(A > B) with every number it was decided on."""

    a: str
    b: str
    resamples: list[ResampleDifference]
    missing: list[str] = Field(default_factory=list, description="resamples lacking a run of A or B")
    undefined: list[str] = Field(default_factory=list, description="resamples whose BA is undefined for A or B (a "
                                 "class their validation cases lack): left out of the mean and test, never confirmed")
    mean_d_balanced_accuracy: float | None
    mean_d_macro_f1: float | None
    p_value: float | None
    test: str
    a_collapsed: list[str] = Field(default_factory=list, description="resamples on which A's run collapsed")
    b_collapsed: list[str] = Field(default_factory=list, description="resamples on which B's run collapsed")
    collapsed_resamples: int = Field(default=0, description="resamples on which A's or B's run collapsed")
    degenerate: bool = Field(default=False, description="collapsed on more than half of the resamples")
    confirmed: bool
    companions: Companions | None = Field(default=None, description="overlap-aware companions of the sign-flip p "
                                          "(None: fewer than two defined differences)")

    @property
    def degenerate_tag(self) -> str | None:
        """The tag a status decided on this comparison carries when it is degenerate."""
        if not self.degenerate:
            return None
        return f"degenerate evidence: {self.collapsed_resamples} of {len(self.resamples)} resamples collapsed"


class FixedSplitComparison(BaseModel):
    """Fixed-split advantage(A > B): means over seeds only (no interval, no test)."""

    a: str
    b: str
    a_mean_balanced_accuracy: float | None
    b_mean_balanced_accuracy: float | None
    a_seeds: list[int]
    b_seeds: list[int]
    a_run_ids: list[str]
    b_run_ids: list[str]
    advantage: bool


class RateCheck(BaseModel):
    """A run's positive prediction rate, checked strictly inside (0, 1)."""

    configuration: str
    split_id: str
    run_id: str
    positive_prediction_rate: float
    inside: bool


class PairedCohort(BaseModel):
    """The paired cohort the Monte Carlo resamples are drawn from, for statements in patients."""

    paired_patients: int
    negative_patients: int
    val_patients: int = Field(description="k, validation patients per resample")
    val_negatives: int = Field(default=1, description="negative patients per validation set")


class PowerGrounding(BaseModel):
    """What the power study (PROTOCOL section 11) says a decisive experiment needs."""

    source: str
    paired_patients: int | None = Field(description="the minimum decisive experiment's paired patients, if any")
    negative_patients: int | None
    statement: str


class EffectEstimate(BaseModel):
    """How large an MC effect is (patient-level bootstrap) and what a confirmation would need, in patients."""

    mean_d_balanced_accuracy: float
    sd_d_balanced_accuracy: float | None
    bootstrap_low: float
    bootstrap_high: float
    level: float
    replicates: int
    method: str
    disjoint_sets_needed: int | None = Field(
        default=None, description="approximation: disjoint validation sets for 80% power at one-sided 5%")
    paired_patients_needed: int | None = None
    negative_patients_needed: int | None = None
    cohort: PairedCohort | None = None
    power: PowerGrounding | None = None
    needs: str


class HypothesisResult(BaseModel):
    """One hypothesis: its rule, status, why, and the comparisons that decided it."""

    hypothesis: str = Field(description="a HypothesisKey, or `candidate vs control` for a candidate's comparison")
    statement: str
    a: str | None
    b: str | None
    rule: str
    status: Status
    reason: str
    monte_carlo: MonteCarloComparison | None = None
    fixed_split: FixedSplitComparison | None = None
    balanced_monte_carlo: MonteCarloComparison | None = None
    rate_checks: list[RateCheck] = Field(default_factory=list)
    estimate: EffectEstimate | None = Field(default=None, description="H1-H4: bootstrap interval and needs")
    degenerate: str | None = Field(default=None, description="the tag 'degenerate evidence: N of R resamples "
                                                              "collapsed' when the deciding comparison is degenerate")


class CandidateEvidence(BaseModel):
    """A candidate method against each of the protocol's controls, and its headline "beats every control"."""

    # the headline is an intersection-union test whose p is Holm-adjusted across the study's candidates (section 14)

    name: str
    comparisons: list[HypothesisResult] = Field(description="candidate vs each control, by the MC-confirmed rule")
    status: Status = Field(default=Status.NOT_EVALUABLE, description="the headline: supported iff every control "
                           "comparison is MC-confirmed and the adjusted p <= alpha")
    reason: str = ""
    p_value: float | None = Field(default=None, description="raw intersection-union p: the largest of the control "
                                  "comparisons' sign-flip p (None when one has no p)")
    adjusted_p_value: float | None = Field(default=None, description="Holm-adjusted across the candidates of this "
                                           "store (a candidate without p counts as p = 1 in the family)")
    family: int = Field(default=1, description="m, the candidates the adjustment runs over")


class LengthEvidence(BaseModel):
    """The hypotheses decided on the runs of one student training length of the training-length stress test."""

    epochs: int
    hypotheses: list[HypothesisResult]
    candidates: list[CandidateEvidence] = Field(default_factory=list, exclude_if=lambda c: not c)


@dataclass(frozen=True)
class Decided:
    """H1-H5 and every candidate decided on one set of runs: at the headline length and at every other."""

    hypotheses: list[HypothesisResult]
    candidates: list[CandidateEvidence]
    training_lengths: list[LengthEvidence]
    depends_on_training_length: list[str]


class StatusDifference(BaseModel):
    """A comparison whose status on a test set differs from its status on the validation cases, and why."""

    comparison: str = Field(description="H1-H5, or `candidate vs control`")
    epochs: int | None = Field(description="student epochs of the training-length runs; None: the headline")
    validation: Status
    test: Status
    why: str


class RankingRow(BaseModel):
    """One configuration's mean BA over its Monte Carlo runs on the validation cases and on a test set."""

    configuration: str
    run_ids: list[str]
    validation_balanced_accuracy: float | None
    test_balanced_accuracy: float | None
    validation_rank: int | None = Field(description="1 = highest mean validation BA (ties share the lower rank)")
    test_rank: int | None
    validation_collapsed: int = Field(description="runs that predicted one class on every validation image")
    test_collapsed: int = Field(description="runs that predicted one class on every test image")


class Ranking(BaseModel):
    """Does the ranking survive: configurations ordered by validation BA and by test BA, and Kendall's tau."""

    regime: str
    rows: list[RankingRow] = Field(description="ordered by mean test BA, highest first")
    kendall_tau: float | None = Field(description="Kendall's tau-b between the two orderings (scipy.stats."
                                                  "kendalltau); None: fewer than two configurations or no variation")
    statement: str


class TestEvidence(BaseModel):
    """The section 8 rules decided again on one test set's scores (PROTOCOL.md section 13)."""

    __test__ = False  # not a pytest test class

    test_set: str
    kind: TestSetKind
    support: SupportCounts
    hypotheses: list[HypothesisResult]
    candidates: list[CandidateEvidence] = Field(default_factory=list, exclude_if=lambda c: not c)
    training_lengths: list[LengthEvidence] = Field(default_factory=list)
    depends_on_training_length: list[str] = Field(default_factory=list)
    unscored: dict[str, str] = Field(default_factory=dict, description="configuration -> why its runs are not scored "
                                                                      "on test sets")
    differences: list[StatusDifference] = Field(default_factory=list)
    ranking: Ranking


class TeacherHeadroom(BaseModel):
    """Is there a signal to transfer? A privileged-modality teacher against the supervised target-modality model."""

    teacher: str = Field(description="the teacher, named after the first configuration that declared it")
    configurations: list[str] = Field(description="every configuration that distilled from it")
    result: HypothesisResult = Field(description="teacher > student-only by section 8's MC-confirmed rule")
    statement: str = Field(description="the answer in words")


class GateOutcome(StrEnum):
    """What the gate says of one comparison."""

    PASSES = "passes"
    FAILS = "fails"
    NOT_EVALUABLE = "not evaluable"


Agreement = Literal["agree", "gate only", "section 8 only", "not comparable"]


class GateVerdict(BaseModel):
    """The gate on one comparison A > B, its numbers, and section 8's status of the same comparison beside it."""

    comparison: str = Field(description="H1-H5, or `candidate vs control`")
    a: str
    b: str
    units: int = Field(description="units (splits) with a defined BA difference")
    missing: list[str] = Field(description="splits of the regime where A or B has no run")
    undefined: list[str] = Field(description="splits where BA is undefined (a class the validation cases lack)")
    mean_d_balanced_accuracy: float | None
    lower: float | None = Field(description="bootstrap interval of the mean difference: lower bound")
    upper: float | None
    positive: int = Field(description="units where A's BA exceeds B's (the fold-seed sign counts)")
    negative: int
    ties: int
    outcome: GateOutcome
    reason: str
    section8: Status
    agreement: Agreement


class GateEvidence(BaseModel):
    """The gate on every comparison of a store, with its settings and rule in words."""

    settings: GateSettings
    rule: str
    verdicts: list[GateVerdict]
    passes: int
    disagreements: int = Field(description="comparisons where one rule passes/supports and the other does not")


class Evidence(BaseModel):
    """Every hypothesis status of one results store, at the protocol's training length and at every other."""

    alpha: float = ALPHA
    rope: float = Field(default=DEFAULT_ROPE, description="the Bayesian companion's ROPE (settings [evidence] rope)")
    multiplicity: str = Field(default=MULTIPLICITY)
    runs: int
    hypotheses: list[HypothesisResult]
    training_lengths: list[LengthEvidence] = Field(default_factory=list)
    depends_on_training_length: list[str] = Field(
        default_factory=list, description="hypotheses whose status differs between training lengths")
    degenerate_headline: list[str] = Field(
        default_factory=list, description="hypotheses whose headline comparison is degenerate")
    candidates: list[CandidateEvidence] = Field(
        default_factory=list, exclude_if=lambda c: not c,
        description="each candidate method against the controls (none: the store has no candidate)")
    test_sets: list[TestEvidence] = Field(
        default_factory=list, exclude_if=lambda t: not t,
        description="the same rules on each test set's scores (none: the store has no test set)")
    headroom: list[TeacherHeadroom] = Field(
        default_factory=list, exclude_if=lambda h: not h,
        description="each privileged-modality teacher against the supervised target model (none: no such teacher)")
    gate: GateEvidence | None = Field(
        default=None, exclude_if=lambda g: g is None,
        description="the seed authors' gate beside section 8's status (none: no run on the gate's regime)")
