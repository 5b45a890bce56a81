"""Preflight of a configuration: it builds, takes one finite loss and is deterministic, before any training.

An unknown or broken network or objective (a plugin's too) then fails in one line naming it, not mid-run."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.errors import ConfigError
from benchmark.methods.configurations import Configuration
from benchmark.methods.losses import Objective
from benchmark.methods.models import ModelOutput
from benchmark.methods.trainable import configuration_trainable, teacher_trainable
from benchmark.schemas import Modality, ReaderPolicy

Images = dict[Modality, Tensor]


def _built_for_check(configuration: Configuration, image_size: int, readers: ReaderPolicy | None = None
                     ) -> tuple[Images, nn.Module | None, nn.Module, Objective]:
    """Two random images per modality (as many channels as the reader policy gives it: the privileged modality's are
    the X-ray ones repeated) and the configuration's teacher network, network and objective, all from one generator
    seeded 0: the same call gives the same parts, unless a part draws randomness from elsewhere."""
    generator = torch.Generator().manual_seed(0)
    xray = torch.randn(2, 1, image_size, image_size, generator=generator)
    channels = (readers or ReaderPolicy()).channels_for("ct")
    images: Images = {"xray": xray, "ct": xray.expand(-1, channels, -1, -1).contiguous() if channels > 1 else xray}
    teacher = (teacher_trainable(configuration.teacher, torch.ones(2), generator, readers)[0]
               if configuration.teacher else None)
    model, objective = configuration_trainable(configuration, torch.ones(2), generator, teacher, readers)
    return images, teacher, model, objective


def _forward(network: nn.Module, configuration: Configuration, images: Images) -> ModelOutput:
    """The configuration's network on the images of the modalities it reads."""
    if configuration.kind == "late-fusion":
        return network(images["xray"], images["ct"])
    return network(images[configuration.input_modality])


def _first_difference(a: nn.Module, b: nn.Module) -> str | None:
    """The first parameter or buffer whose values differ between two modules of the same build, or None."""
    left, right = a.state_dict(), b.state_dict()
    if list(left) != list(right):
        return f"other parameter names ({sorted(set(left) ^ set(right))[:3]})"
    return next((name for name in left if not torch.equal(left[name], right[name])), None)


def _outputs_differ(model: nn.Module, other: nn.Module, configuration: Configuration, images: Images) -> str | None:
    """Where two eval-mode forward passes of `model`, and one of its twin `other`, on the same images disagree."""
    def forward(network: nn.Module) -> ModelOutput:
        network.eval()
        with torch.no_grad():
            return _forward(network, configuration, images)

    first, second, twin = forward(model), forward(model), forward(other)
    for label, output in (("a second forward pass", second), ("a second build", twin)):
        if not torch.equal(first.logits, output.logits):
            return f"{label} gives other logits for the same images"
        for name, value in first.features.items():
            if name in output.features and not torch.equal(value, output.features[name]):
                return f"{label} gives another {name!r} feature map for the same images"
    return None


def check_determinism(configuration: Configuration, image_size: int, readers: ReaderPolicy | None = None) -> None:
    """ConfigError (one line naming the configuration and the plugin) when building its network and objective twice
    from the same generator gives other parameters, or one forward pass twice gives other outputs: a network or
    objective that draws from the global RNG or the operating system would make runs irreproducible (claim 7)."""
    images, teacher, model, objective = _built_for_check(configuration, image_size, readers)
    _, teacher_twin, model_twin, objective_twin = _built_for_check(configuration, image_size, readers)
    network = f"network {configuration.network.architecture!r}"
    terms = [t.objective for t in configuration.loss.distillation_terms()]
    parts: list[tuple[str, nn.Module | None, nn.Module | None]] = [
        (network, model, model_twin), (f"objective terms {', '.join(map(repr, terms))}", objective, objective_twin)]
    if configuration.teacher is not None:
        parts.append((f"teacher network {configuration.teacher.network.architecture!r}", teacher, teacher_twin))
    advice = "; a plugin must draw every random number from the torch.Generator it is given"
    for what, part, twin in parts:
        assert part is not None and twin is not None
        differs = _first_difference(part, twin)
        if differs is not None:
            raise ConfigError(f"configuration {configuration.name!r} is not deterministic: its {what} gets other "
                              f"values of {differs} when built twice from the same generator{advice}")
    differs = _outputs_differ(model, model_twin, configuration, images)
    if differs is not None:
        raise ConfigError(f"configuration {configuration.name!r} is not deterministic: for its {network}, {differs} "
                          f"(in eval mode){advice}")


def check_configuration(configuration: Configuration, image_size: int, readers: ReaderPolicy | None = None) -> None:
    """Build the configuration's networks and objective (input channels by the reader policy) and take one loss on
    two random images, so that an unknown or broken network or objective (a plugin's too) fails before any training,
    then check that building and running them is deterministic; ConfigError naming the configuration (and the
    plugin) otherwise."""
    labels = torch.tensor([0, 1])
    try:
        images, teacher, model, objective = _built_for_check(configuration, image_size, readers)
        teacher_output = None
        if teacher is not None and configuration.teacher is not None:
            with torch.no_grad():
                teacher_output = teacher(images[configuration.teacher.modality])
        output = _forward(model, configuration, images)
        loss, _ = objective(output, labels, teacher_output)
        if not torch.isfinite(loss):
            raise ValueError(f"the loss on two random images is {float(loss)}")
    except ConfigError as exc:
        raise type(exc)(f"configuration {configuration.name!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a plugin can fail in any way; name the configuration and the cause
        raise ConfigError(f"configuration {configuration.name!r} cannot be built or trained: "
                          f"{type(exc).__name__}: {exc}") from exc
    try:
        check_determinism(configuration, image_size, readers)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a plugin that builds once and fails the second time
        raise ConfigError(f"configuration {configuration.name!r} cannot be built twice: "
                          f"{type(exc).__name__}: {exc}") from exc
