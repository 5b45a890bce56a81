"""Losses (PROTOCOL.md section 5): weighted cross-entropy, logit KD, attention transfer, FitNets hints.

- Class weights are inverse frequency, w_c = N / (C * n_c), over the classes present in the
  training set (an absent class gets weight 0: no sample of it can contribute anyway).
- KD: L = (1 - a) CE(s, y) + a T^2 KL(softmax(t / T) || softmax(s / T)), KL averaged over the batch.
- Attention transfer follows the authors' code (torchdistill's mode='code', also mdistiller):
  a(f) = normalise(mean_c f^2) flattened; loss = mean((a(s) - a(t))^2), summed over the tapped
  stages after average-pooling the larger map to the smaller one's size; weight beta (1000 in
  the authors' code) multiplies it.
- FitNets hint: MSE between a 1x1-conv regression of the student's map and the teacher's map,
  both average-pooled to the smaller of the two sizes.
Teacher tensors enter every loss detached: no gradient ever reaches a teacher.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from benchmark.models import NUM_CLASSES, ModelOutput

Stage = Literal["stage1", "stage2", "stage3", "stage4"]


class LossConfig(BaseModel):
    """Which terms the training objective has, and their weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kd_alpha: float = Field(default=0.6, ge=0.0, le=1.0, description="a: weight of the KD term (with a teacher)")
    temperature: float = Field(default=4.0, gt=0.0, description="T")
    attention_weight: float = Field(default=0.0, ge=0.0, description="beta; 0 switches attention transfer off")
    attention_stages: tuple[Stage, ...] = ("stage2", "stage3", "stage4")
    hint_weight: float = Field(default=0.0, ge=0.0, description="0 switches the FitNets hint off")
    hint_stage: Stage = "stage3"


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


class HintRegressor(nn.Module):
    """FitNets regressor: a 1x1 convolution mapping student channels to teacher channels."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """MSE between the regressed student map and the teacher map at a common size."""
        regressed, target = _common_size(self.conv(student), teacher.detach())
        return F.mse_loss(regressed, target)


class Objective(nn.Module):
    """The training objective of one configuration; owns the hint regressor's trainable parameters."""

    def __init__(self, config: LossConfig, class_weights: Tensor, *, has_teacher: bool,
                 student_channels: dict[str, int] | None = None,
                 teacher_channels: dict[str, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.has_teacher = has_teacher
        self.register_buffer("class_weights", class_weights.clone())
        needs_teacher = config.attention_weight > 0 or config.hint_weight > 0
        if needs_teacher and not has_teacher:
            raise ValueError("attention transfer and hints need a teacher")
        self.hint = None
        if config.hint_weight > 0:
            if student_channels is None or teacher_channels is None:
                raise ValueError("a hint needs the student's and the teacher's channel counts")
            self.hint = HintRegressor(student_channels[config.hint_stage], teacher_channels[config.hint_stage])

    def teacher_features(self) -> tuple[str, ...]:
        """Names of the teacher features this objective reads (besides logits)."""
        names = list(self.config.attention_stages) if self.config.attention_weight > 0 else []
        if self.hint is not None and self.config.hint_stage not in names:
            names.append(self.config.hint_stage)
        return tuple(names)

    def forward(self, student: ModelOutput, labels: Tensor,
                teacher: ModelOutput | None = None) -> tuple[Tensor, dict[str, float]]:
        """(total loss, each term's value for the training log)."""
        weights = self.class_weights
        if not self.has_teacher:
            loss = weighted_cross_entropy(student.logits, labels, weights)
            return loss, {"ce": float(loss.detach())}
        if teacher is None:
            raise ValueError("this objective distils from a teacher, but no teacher output was given")
        c = self.config
        ce = weighted_cross_entropy(student.logits, labels, weights)
        kl = kd_kl_term(student.logits, teacher.logits, c.temperature)
        total = (1 - c.kd_alpha) * ce + c.kd_alpha * kl
        terms = {"ce": float(ce.detach()), "kd": float(kl.detach())}
        if c.attention_weight > 0:
            at = sum(attention_transfer_loss(student.features[s], teacher.features[s]) for s in c.attention_stages)
            total = total + c.attention_weight * at
            terms["attention"] = float(at.detach())  # type: ignore[union-attr]
        if self.hint is not None:
            hint = self.hint(student.features[c.hint_stage], teacher.features[c.hint_stage])
            total = total + c.hint_weight * hint
            terms["hint"] = float(hint.detach())
        terms["total"] = float(total.detach())
        return total, terms
