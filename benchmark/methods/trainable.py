"""A configuration's trainable parts (network and objective), built by one function for every caller.

Training, teacher training, the preflight check and the bench's FLOP count all build here, so they agree; here too a
network's input channels follow the reader policy of the modality it reads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.errors import ConfigError
from benchmark.methods.configurations import Configuration, TeacherConfig
from benchmark.methods.losses import LossConfig, Objective
from benchmark.methods.models import NetworkConfig, build_network, init_parameters
from benchmark.methods.registry import NETWORKS
from benchmark.schemas import Modality, ReaderPolicy


# A network's input channels are those of the images it reads (`ReaderPolicy.channels_for`): 1, or 3 for the
# privileged modality under [cohort.readers] privileged_slices = "middle-three-axial" (a CT teacher, the all-CT
# reference, late fusion's CT encoder). Configurations leave `in_channels` at its 1 (dumps always hold it, so 1
# cannot be told from unset); one that declares more channels than its images have is refused, not changed.
def input_network(network: NetworkConfig, modality: Modality, readers: ReaderPolicy | None = None,
                  what: str = "network") -> NetworkConfig:
    """`network` with the input channels of `modality`'s images under `readers`; ConfigError on a contradiction."""
    channels = (readers or ReaderPolicy()).channels_for(modality)
    if network.in_channels == channels:
        return network
    if network.in_channels != 1:
        raise ConfigError(f"{what}: in_channels = {network.in_channels}, but its {modality} images have {channels} "
                          f"channel(s) under [cohort.readers] privileged_slices = "
                          f"{(readers or ReaderPolicy()).privileged_slices!r}; leave in_channels out (1): it "
                          "follows the reader policy")
    return network.model_copy(update={"in_channels": channels})


def build_trainable(network: NetworkConfig, loss: LossConfig, class_weights: Tensor, generator: torch.Generator, *,
                    teacher: nn.Module | None = None, late_fusion: bool = False, reads: Modality = "xray",
                    readers: ReaderPolicy | None = None) -> tuple[nn.Module, Objective]:
    """A network reading `reads` (late fusion: X-ray and CT) with the input channels `readers` gives that modality,
    and its objective (terms sized by the teacher's features), both initialised from `generator`, network first."""
    if late_fusion:
        model: nn.Module = NETWORKS.get("late-fusion")(  # type: ignore[assignment]
            input_network(network, "xray", readers, "late fusion"), generator,
            ct_channels=(readers or ReaderPolicy()).channels_for("ct"))
        return model, Objective(loss, class_weights, has_teacher=False)
    model = build_network(input_network(network, reads, readers), generator)
    objective = Objective(loss, class_weights, has_teacher=teacher is not None,
                          student_channels=model.stage_channels,  # type: ignore[arg-type]
                          teacher_channels=teacher.stage_channels if teacher is not None else None)  # type: ignore[arg-type]
    init_parameters(objective, generator)  # trainable parts of terms (a hint regressor), seeded like the model
    return model, objective


def configuration_trainable(configuration: Configuration, class_weights: Tensor, generator: torch.Generator,
                            teacher: nn.Module | None, readers: ReaderPolicy | None = None
                            ) -> tuple[nn.Module, Objective]:
    """The trainable parts of a configuration's run (student, or late-fusion model) under the reader policy."""
    return build_trainable(configuration.network, configuration.loss, class_weights, generator, teacher=teacher,
                           late_fusion=configuration.kind == "late-fusion", reads=configuration.input_modality,
                           readers=readers)


def teacher_trainable(config: TeacherConfig, class_weights: Tensor, generator: torch.Generator,
                      readers: ReaderPolicy | None = None) -> tuple[nn.Module, Objective]:
    """The trainable parts of a teacher (its network reading its modality under the reader policy, and weighted
    cross-entropy)."""
    return build_trainable(config.network, LossConfig(), class_weights, generator, reads=config.modality,
                           readers=readers)
