"""Losses (PROTOCOL.md section 5): weighted cross-entropy, logit KD, attention transfer, FitNets hints.

Every distillation term is found by name in the objectives registry, so `Objective` knows no term by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from benchmark.config import validation_problems
from benchmark.errors import ConfigError, RegistryError
from benchmark.methods.models import NUM_CLASSES, ModelOutput
from benchmark.methods.registry import OBJECTIVES

# - Class weights are inverse frequency, w_c = N / (C * n_c), over the classes present in the training set (an
#   absent class gets weight 0: no sample of it can contribute anyway).
# - KD: L = (1 - a) CE(s, y) + a T^2 KL(softmax(t / T) || softmax(s / T)), KL averaged over the batch.
# - Attention transfer follows the authors' code (torchdistill's mode='code', also mdistiller):
#   a(f) = normalise(mean_c f^2) flattened; loss = mean((a(s) - a(t))^2), summed over the tapped stages after
#   average-pooling the larger map to the smaller one's size; weight beta (1000 in the authors' code) multiplies it.
# - FitNets hint: MSE between a 1x1-conv regression of the student's map and the teacher's map, both average-pooled
#   to the smaller of the two sizes.
# Teacher tensors enter every loss detached: no gradient ever reaches a teacher.
# Every distillation term (KD, attention transfer, hint, the baselines of `benchmark.methods.baselines`, a plugin's)
# is a `DistillationTerm` found by name in the objectives registry (`benchmark.methods.registry`); `Objective` builds
# a configuration's terms from its `LossConfig` and sums them, with no term known to it by name.

Stage = Literal["stage1", "stage2", "stage3", "stage4"]


class TermSpec(BaseModel):
    """One more distillation term of a configuration: an objective found by name, its weight and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: str = Field(description="a registered objective (e.g. dkd, rkd), an entry point of the group "
                                       "ctxray_bench.objectives, or module:attribute")
    weight: float = Field(default=1.0, ge=0.0)
    params: dict[str, Any] = Field(default_factory=dict, description="the objective's own parameters")
    label: str | None = Field(default=None, description="its name in the training log (default: the objective)")

    @property
    def log_name(self) -> str:
        """The key of this term's value in the per-epoch training log."""
        return self.label or self.objective


class LossConfig(BaseModel):
    """Which terms the training objective has, and their weights.

    With a teacher: (1 - kd_alpha) CE + kd_alpha KD + attention_weight AT + hint_weight hint + sum of `terms`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kd_alpha: float = Field(default=0.6, ge=0.0, le=1.0, description="a: weight of the KD term (with a teacher)")
    temperature: float = Field(default=4.0, gt=0.0, description="T")
    attention_weight: float = Field(default=0.0, ge=0.0, description="beta; 0 switches attention transfer off")
    attention_stages: tuple[Stage, ...] = ("stage2", "stage3", "stage4")
    hint_weight: float = Field(default=0.0, ge=0.0, description="0 switches the FitNets hint off")
    hint_stage: Stage = "stage3"
    terms: tuple[TermSpec, ...] = Field(default=(), exclude_if=lambda terms: not terms,  # run ids stay as before
                                        description="further distillation terms found by name (DKD, RKD, plugins)")

    def distillation_terms(self) -> list[TermSpec]:
        """Every term computed from the teacher, built-ins first, in the order they are summed."""
        specs = [TermSpec(objective="kd", weight=self.kd_alpha, params={"temperature": self.temperature})]
        if self.attention_weight > 0:
            specs.append(TermSpec(objective="attention", weight=self.attention_weight,
                                  params={"stages": list(self.attention_stages)}))
        if self.hint_weight > 0:
            specs.append(TermSpec(objective="hint", weight=self.hint_weight, params={"stage": self.hint_stage}))
        return specs + list(self.terms)

    @property
    def needs_teacher(self) -> bool:
        """True when a term besides logit KD distils (attention, hint, or any declared term)."""
        return self.attention_weight > 0 or self.hint_weight > 0 or bool(self.terms)


def inverse_frequency_weights(labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """w_c = N / (C * n_c) for classes present in `labels`; 0 for absent classes."""
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float32)
    present = counts > 0
    weights = torch.zeros(num_classes)
    weights[present] = labels.numel() / (present.sum() * counts[present])
    return weights


def weighted_cross_entropy(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Class-weighted cross-entropy (weighted mean over the batch, as torch defines it)."""
    return F.cross_entropy(logits, labels, weight=weights.to(logits.device))


def kd_kl_term(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, weights: Tensor,
            alpha: float, temperature: float) -> Tensor:
    """(1 - a) CE(s, y) + a T^2 KL(softmax(t/T) || softmax(s/T))."""
    ce = weighted_cross_entropy(student_logits, labels, weights)
    return (1 - alpha) * ce + alpha * kd_kl_term(student_logits, teacher_logits, temperature)


def _common_size(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger spatial map down to the smaller one's size."""
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    if student.shape[-2:] != size:
        student = F.adaptive_avg_pool2d(student, size)
    if teacher.shape[-2:] != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    return student, teacher


def attention_map(features: Tensor) -> Tensor:
    """L2-normalised channel mean of squared activations, flattened per sample."""
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """mean((a(s) - a(t))^2) at a common spatial size (authors' code variant)."""
    student, teacher = _common_size(student, teacher.detach())
    return (attention_map(student) - attention_map(teacher)).pow(2).mean()


@dataclass(frozen=True)
class TermContext:
    """What a distillation term may need to build itself: the channels of each named feature of both networks."""

    student_channels: dict[str, int]
    teacher_channels: dict[str, int]


class DistillationTerm(nn.Module):
    """A distillation loss term: a value computed from the student's and the (frozen) teacher's outputs.

    Subclasses (or any factory `(params: dict, context: TermContext) -> DistillationTerm`) are found by name
    in the objectives registry. `teacher_features` names the teacher features the term reads besides the
    logits; `Params`, when set, is the pydantic model its parameters are validated with. A term may own
    trainable parameters (a regressor): they are initialised from the run's seed and trained with the student."""

    teacher_features: tuple[str, ...] = ()
    Params: type[BaseModel] | None = None

    def forward(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> Tensor:
        """The term's value (a scalar tensor); teacher tensors are detached by the caller's contract."""
        raise NotImplementedError


class _KDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=4.0, gt=0.0)


class LogitKD(DistillationTerm):
    """Hinton et al.'s logit KD: T^2 KL(softmax(t/T) || softmax(s/T))."""

    Params = _KDParams

    def __init__(self, params: _KDParams, context: TermContext) -> None:
        super().__init__()
        self.temperature = params.temperature

    def forward(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> Tensor:
        """T^2 KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
        return kd_kl_term(student.logits, teacher.logits, self.temperature)


class _AttentionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stages: tuple[str, ...] = ("stage2", "stage3", "stage4")


class AttentionTransfer(DistillationTerm):
    """Zagoruyko and Komodakis's attention transfer (authors' code variant), summed over the named stages."""

    Params = _AttentionParams

    def __init__(self, params: _AttentionParams, context: TermContext) -> None:
        super().__init__()
        self.stages = params.stages
        self.teacher_features = tuple(params.stages)

    def forward(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> Tensor:
        """Sum over stages of mean((a(s) - a(t))^2)."""
        return sum(attention_transfer_loss(student.features[s], teacher.features[s]) for s in self.stages)  # type: ignore[return-value]


class _HintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str = "stage3"


class HintRegressor(nn.Module):
    """FitNets regressor: a 1x1 convolution mapping student channels to teacher channels."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """MSE between the regressed student map and the teacher map at a common size."""
        regressed, target = _common_size(self.conv(student), teacher.detach())
        return F.mse_loss(regressed, target)


class FeatureHint(DistillationTerm):
    """Romero et al.'s FitNets hint at one named stage, through a trainable 1x1 regressor."""

    Params = _HintParams

    def __init__(self, params: _HintParams, context: TermContext) -> None:
        super().__init__()
        self.stage = params.stage
        self.teacher_features = (params.stage,)
        for side, channels in (("student", context.student_channels), ("teacher", context.teacher_channels)):
            if params.stage not in channels:
                raise ValueError(f"hint stage {params.stage!r} is not a feature of the {side} "
                                 f"(it has {', '.join(channels)})")
        self.regressor = HintRegressor(context.student_channels[params.stage], context.teacher_channels[params.stage])

    def forward(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> Tensor:
        """MSE between the regressed student map and the teacher's map."""
        return self.regressor(student.features[self.stage], teacher.features[self.stage])


def build_term(spec: TermSpec, context: TermContext) -> DistillationTerm:
    """The term `spec` names, its parameters validated; RegistryError/ConfigError naming it when it cannot be built."""
    factory = OBJECTIVES.get(spec.objective)
    params: Any = spec.params
    model = getattr(factory, "Params", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        try:
            params = model.model_validate(spec.params)
        except ValidationError as exc:
            raise ConfigError(f"objective {spec.objective!r}: {validation_problems(exc)}") from exc
    term = factory(params, context)
    if not isinstance(term, nn.Module):
        raise RegistryError(f"objective {spec.objective!r} built a {type(term).__name__}, not a torch nn.Module")
    return term  # type: ignore[return-value]


class Objective(nn.Module):
    """The training objective of one configuration: weighted CE, plus, with a teacher, its weighted terms.

    Every distillation term, the built-in KD, attention transfer and hint included, is built by name through
    the objectives registry; the objective owns their trainable parts."""

    def __init__(self, config: LossConfig, class_weights: Tensor, *, has_teacher: bool,
                 student_channels: dict[str, int] | None = None,
                 teacher_channels: dict[str, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.has_teacher = has_teacher
        self.register_buffer("class_weights", class_weights.clone())
        if config.needs_teacher and not has_teacher:
            raise ValueError("attention transfer, hints and declared distillation terms need a teacher")
        self.specs = config.distillation_terms() if has_teacher else []
        context = TermContext(dict(student_channels or {}), dict(teacher_channels or {}))
        self.terms = nn.ModuleList(build_term(spec, context) for spec in self.specs)

    def teacher_features(self) -> tuple[str, ...]:
        """Names of the teacher features the terms read (besides logits), in first-use order."""
        return tuple(dict.fromkeys(name for term in self.terms for name in term.teacher_features))

    def forward(self, student: ModelOutput, labels: Tensor,
                teacher: ModelOutput | None = None) -> tuple[Tensor, dict[str, float]]:
        """(total loss, each term's value for the training log)."""
        ce = weighted_cross_entropy(student.logits, labels, self.class_weights)
        if not self.has_teacher:
            return ce, {"ce": float(ce.detach())}
        if teacher is None:
            raise ValueError("this objective distils from a teacher, but no teacher output was given")
        total = (1 - self.config.kd_alpha) * ce
        terms = {"ce": float(ce.detach())}
        for spec, term in zip(self.specs, self.terms, strict=True):
            value = term(student, teacher, labels)
            total = total + spec.weight * value
            terms[spec.log_name] = float(value.detach())
        terms["total"] = float(total.detach())
        return total, terms
