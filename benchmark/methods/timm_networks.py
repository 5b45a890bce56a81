"""Any timm model as a network of the registry (architecture `timm`), teacher or student.

It opens the benchmark to timm's architectures without downloads, seeded like every other network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from benchmark.config import validation_problems
from benchmark.errors import ConfigError
from benchmark.methods.models import NUM_CLASSES, ModelOutput, NetworkConfig, init_parameters

# `options.model` names the timm model (`timm.list_models()`); it is built with `in_channels` inputs (one, or three
# for the privileged modality's middle three axial slices, set by `benchmark.methods.trainable`) and
# `features_only=True`, so its stages are the named features `stage1..stageN` that attention transfer, hints and
# DFPN-free students need; the last stage's global average is the `embedding` and a linear head gives the two
# logits. Nothing is downloaded: `options.weights` may name a local weight file (`.pth`, `.bin` or `.safetensors`
# of the full timm model, as `timm.create_model(..., pretrained=True)` would load), whose first convolution timm
# adapts to those channels; without it the weights are timm's own initialisation, drawn from a generator seeded from
# the run's (the global random state is left as it was).


class TimmOptions(BaseModel):
    """The options of a timm network."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="a timm model name, e.g. resnet10t, efficientnet_b0, convnext_atto")
    weights: str | None = Field(default=None, description="a local weight file of that model (never downloaded)")


class TimmClassifier(nn.Module):
    """A timm backbone's stages as named features, global average pooling and a two-class head."""

    def __init__(self, config: NetworkConfig) -> None:
        import timm

        super().__init__()
        self.config = config
        try:
            options = TimmOptions.model_validate(config.options)
        except ValidationError as exc:
            raise ConfigError(f"timm network options: {validation_problems(exc)}") from exc
        if not timm.is_model(options.model):
            raise ConfigError(f"timm has no model {options.model!r} (timm {timm.__version__}; see timm.list_models())")
        pretrained = options.weights is not None
        if pretrained and not Path(options.weights).is_file():  # type: ignore[arg-type]
            raise ConfigError(f"{options.weights}: timm weight file not found")
        self.backbone = timm.create_model(options.model, pretrained=pretrained, in_chans=config.in_channels,
                                          features_only=True,
                                          pretrained_cfg_overlay={"file": options.weights} if pretrained else None)
        channels = self.backbone.feature_info.channels()
        self.stage_channels = {f"stage{i}": c for i, c in enumerate(channels, 1)}
        self.head = nn.Linear(channels[-1], NUM_CLASSES)

    def forward(self, x: Tensor) -> ModelOutput:
        """Logits, every stage's map, the last map as `final` and its global average as `embedding`."""
        maps = self.backbone(x)
        features = {f"stage{i}": m for i, m in enumerate(maps, 1)}
        features["final"] = maps[-1]
        features["embedding"] = maps[-1].mean(dim=(2, 3))
        return ModelOutput(self.head(features["embedding"]), features)


def build_timm_classifier(config: NetworkConfig, generator: torch.Generator) -> TimmClassifier:
    """A timm network from `config.options`; timm initialises it under a seed drawn from `generator`."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TimmClassifier(config)
    init_parameters(model.head, generator)
    return model
