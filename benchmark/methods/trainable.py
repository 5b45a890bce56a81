"""A configuration's trainable parts (network and objective), built by one function for every caller.

Training, teacher training, the preflight check and the bench's FLOP count all build here, so they agree."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.methods.configurations import Configuration, TeacherConfig
from benchmark.methods.losses import LossConfig, Objective
from benchmark.methods.models import NetworkConfig, build_network, init_parameters
from benchmark.methods.registry import NETWORKS


def build_trainable(network: NetworkConfig, loss: LossConfig, class_weights: Tensor, generator: torch.Generator, *,
                    teacher: nn.Module | None = None, late_fusion: bool = False) -> tuple[nn.Module, Objective]:
    """A network and its objective (terms sized by the teacher's features), both initialised from `generator`,
    network first."""
    if late_fusion:
        model: nn.Module = NETWORKS.get("late-fusion")(network, generator)  # type: ignore[assignment]
        return model, Objective(loss, class_weights, has_teacher=False)
    model = build_network(network, generator)
    objective = Objective(loss, class_weights, has_teacher=teacher is not None,
                          student_channels=model.stage_channels,  # type: ignore[arg-type]
                          teacher_channels=teacher.stage_channels if teacher is not None else None)  # type: ignore[arg-type]
    init_parameters(objective, generator)  # trainable parts of terms (a hint regressor), seeded like the model
    return model, objective


def configuration_trainable(configuration: Configuration, class_weights: Tensor, generator: torch.Generator,
                            teacher: nn.Module | None) -> tuple[nn.Module, Objective]:
    """The trainable parts of a configuration's run (student, or late-fusion model)."""
    return build_trainable(configuration.network, configuration.loss, class_weights, generator, teacher=teacher,
                           late_fusion=configuration.kind == "late-fusion")


def teacher_trainable(config: TeacherConfig, class_weights: Tensor, generator: torch.Generator
                      ) -> tuple[nn.Module, Objective]:
    """The trainable parts of a teacher: its network and weighted cross-entropy."""
    return build_trainable(config.network, LossConfig(), class_weights, generator)
