"""Logit matching: the mean squared error between the student's and the teacher's logits.

Kim et al. (IJCAI 2021, "Comparing Kullback-Leibler divergence and mean squared error loss in knowledge
distillation") found that matching logits directly can do at least as well as softened-probability KD. Here it
is the worked example of a ctxray-bench plugin: a `DistillationTerm` with validated parameters, found by name
through the entry-point group `ctxray_bench.objectives` (see pyproject.toml).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from benchmark.methods.losses import DistillationTerm, TermContext
from benchmark.methods.models import ModelOutput


class LogitMSEParams(BaseModel):
    """The objective's parameters (a configuration's `params` table), validated before any training."""

    model_config = ConfigDict(extra="forbid")

    center: bool = Field(default=True, description="subtract each sample's mean logit first (logits are shift-free)")


class LogitMSE(DistillationTerm):
    """mean over the batch and classes of (z_s - z_t)^2, optionally after centring each sample's logits."""

    Params = LogitMSEParams

    def __init__(self, params: LogitMSEParams, context: TermContext) -> None:
        super().__init__()
        self.center = params.center

    def forward(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> Tensor:
        """The squared logit difference; the teacher's logits are a fixed target."""
        s, t = student.logits, teacher.logits.detach()
        if self.center:
            s, t = s - s.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
        return (s - t).pow(2).mean()
