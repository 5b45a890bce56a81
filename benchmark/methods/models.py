"""Networks (PROTOCOL.md section 4): small CNN backbones, DPE, MHRA, DFPN and late fusion.

Each is built from a `NetworkConfig` and seeded from an explicit generator, so every architecture is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from benchmark.errors import RegistryError
from benchmark.methods.registry import NETWORKS

# Every network is an `nn.Module` built from a `NetworkConfig`; `forward` returns a `ModelOutput` holding the logits
# and the named intermediate features that attention transfer, hints and DFPN read. Parameters are initialised from
# an explicit `torch.Generator` (`init_parameters`), never from the global random state.
# Architecture choices (also in the report's method section):
# - Backbone: one stage per width, each stage a 3x3 convolution with stride 2, batch norm and ReLU; 128 x 128 input
#   gives maps of 64, 32, 16 and 8 pixels. Teacher widths 32-64-128-256, student 16-32-64-128 (`convs_per_stage`
#   adds stride-1 convolutions per stage).
# - DPE: a 1x1 convolution to one channel, a sigmoid saliency map, features multiplied by it.
# - MHRA: multi-head self-attention over the final map's tokens; a learned gate g = sigmoid(W [attended; original] +
#   b) retains g * attended + (1 - g) * original.
# - DFPN: lateral 1x1 convolutions of the last three stages to a common width, a top-down pathway (nearest
#   upsampling and addition), 3x3 smoothing, and the three levels' global averages concatenated before the head.
# - Late fusion: an X-ray and a CT backbone (student widths); pooled features concatenated; one head. The CT encoder
#   takes `ct_channels` inputs (3 under the privileged modality's middle-three-axial slices), the X-ray one
#   `in_channels`.

NUM_CLASSES = 2


class NetworkConfig(BaseModel):
    """A single-modality classifier: the architecture found by name, its backbone widths and modules, options.

    `architecture` names a network of the registry (`cnn`, the protocol's backbones; `timm`, any timm model by
    `options.model`; a plugin's). Fields added after the first stores are left out of dumps at their defaults,
    so run ids and teacher keys of earlier stores do not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str = Field(default="cnn", exclude_if=lambda name: name == "cnn",
                              description="a network of the registry: cnn, timm, a plugin's, or module:attribute")
    options: dict[str, Any] = Field(default_factory=dict, exclude_if=lambda options: not options,
                                    description="the architecture's own options (timm: model, weights)")
    widths: tuple[int, ...] = Field(default=(16, 32, 64, 128), min_length=3)
    convs_per_stage: int = Field(default=1, ge=1, le=4)
    in_channels: int = 1
    dpe: bool = False
    mhra: bool = False
    mhra_heads: int = Field(default=4, ge=1)
    dfpn: bool = False
    dfpn_channels: int = Field(default=64, ge=4)

    @property
    def stage_channels(self) -> dict[str, int]:
        """Channels of each named backbone stage (stage1, stage2, ...) of the cnn architecture."""
        return {f"stage{i}": width for i, width in enumerate(self.widths, 1)}

    @model_validator(mode="after")
    def _heads_divide_width(self) -> NetworkConfig:
        if self.mhra and self.widths[-1] % self.mhra_heads:
            raise ValueError(f"mhra_heads = {self.mhra_heads} does not divide the final width {self.widths[-1]}")
        return self


@dataclass
class ModelOutput:
    """What every network returns: class logits and named feature maps/vectors."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


class ConvBackbone(nn.Module):
    """Stride-2 convolutional stages; returns every stage's feature map by name (stage1, stage2, ...)."""

    def __init__(self, widths: tuple[int, ...], in_channels: int = 1, convs_per_stage: int = 1) -> None:
        super().__init__()
        self.widths = widths
        stages = []
        channels = in_channels
        for width in widths:
            layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            for _ in range(convs_per_stage - 1):
                layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Feature map of each stage, keyed stage1..stageN."""
        features = {}
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            features[f"stage{index}"] = x
        return features


class DPE(nn.Module):
    """Teacher-side spatial saliency re-weighting: features x sigmoid(1x1 conv(features))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.saliency = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(re-weighted features, saliency map in [0, 1])."""
        saliency = torch.sigmoid(self.saliency(features))
        return features * saliency, saliency


class MHRA(nn.Module):
    """Teacher-side multi-head self-attention over feature tokens with a learned retain gate."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.gate = nn.Linear(2 * channels, channels)

    def forward(self, features: Tensor) -> Tensor:
        """Gated mix of attended and original features, same shape as the input map."""
        b, c, h, w = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # (B, HW, C)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        gate = torch.sigmoid(self.gate(torch.cat([attended, tokens], dim=-1)))
        mixed = gate * attended + (1 - gate) * tokens
        return mixed.transpose(1, 2).reshape(b, c, h, w)


class DFPN(nn.Module):
    """Student-side three-scale top-down feature-pyramid fusion of the last three stages."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, kernel_size=1) for c in in_channels)
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.out_features = 3 * channels

    def forward(self, maps: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(concatenated global averages of the three fused levels, the fused levels fine to coarse)."""
        laterals = [conv(m) for conv, m in zip(self.lateral, maps, strict=True)]
        fused = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            fused.insert(0, lateral + F.interpolate(fused[0], size=lateral.shape[-2:], mode="nearest"))
        smoothed = [conv(level) for conv, level in zip(self.smooth, fused, strict=True)]
        pooled = torch.cat([level.mean(dim=(2, 3)) for level in smoothed], dim=1)
        return pooled, smoothed


class Classifier(nn.Module):
    """Single-modality classifier: backbone, optional DPE/MHRA (teacher side) or DFPN (student side), head."""

    stage_channels: dict[str, int]

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ConvBackbone(config.widths, config.in_channels, config.convs_per_stage)
        final = config.widths[-1]
        self.dpe = DPE(final) if config.dpe else None
        self.mhra = MHRA(final, config.mhra_heads) if config.mhra else None
        self.dfpn = DFPN(config.widths[-3:], config.dfpn_channels) if config.dfpn else None  # type: ignore[arg-type]
        self.head = nn.Linear(self.dfpn.out_features if self.dfpn else final, NUM_CLASSES)
        self.stage_channels = config.stage_channels

    def forward(self, x: Tensor) -> ModelOutput:
        """Logits plus stage maps, the final map after DPE/MHRA, and the pooled embedding."""
        features = self.backbone(x)
        final = features[f"stage{len(self.config.widths)}"]
        if self.dpe is not None:
            final, features["dpe_saliency"] = self.dpe(final)
        if self.mhra is not None:
            final = self.mhra(final)
        features["final"] = final
        if self.dfpn is not None:
            stages = tuple(features[f"stage{i}"] for i in range(len(self.config.widths) - 2,
                                                                 len(self.config.widths) + 1))
            embedding, levels = self.dfpn(stages)  # type: ignore[arg-type]
            for i, level in enumerate(levels, start=1):
                features[f"dfpn{i}"] = level
        else:
            embedding = final.mean(dim=(2, 3))
        features["embedding"] = embedding
        return ModelOutput(self.head(embedding), features)


class LateFusion(nn.Module):
    """Fusion control: X-ray and CT backbones, pooled features concatenated before one head (reads CT)."""

    def __init__(self, config: NetworkConfig, ct_channels: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.ct_channels = ct_channels or config.in_channels
        self.stage_channels = {f"{side}_{k}": v for side in ("xray", "ct") for k, v in config.stage_channels.items()}
        self.xray = ConvBackbone(config.widths, config.in_channels, config.convs_per_stage)
        self.ct = ConvBackbone(config.widths, self.ct_channels, config.convs_per_stage)
        self.head = nn.Linear(2 * config.widths[-1], NUM_CLASSES)

    def forward(self, xray: Tensor, ct: Tensor) -> ModelOutput:
        """Logits from both modalities; features of each encoder prefixed xray_/ct_."""
        last = f"stage{len(self.config.widths)}"
        xray_features, ct_features = self.xray(xray), self.ct(ct)
        embedding = torch.cat([xray_features[last].mean(dim=(2, 3)), ct_features[last].mean(dim=(2, 3))], dim=1)
        features = {f"xray_{k}": v for k, v in xray_features.items()}
        features.update({f"ct_{k}": v for k, v in ct_features.items()})
        features["embedding"] = embedding
        return ModelOutput(self.head(embedding), features)


def init_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every parameter from `generator` (PyTorch's default schemes), leaving global RNG alone."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
                if sub.bias is not None:
                    fan_in = sub.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(sub.bias, -bound, bound, generator=generator)
            elif isinstance(sub, nn.BatchNorm2d | nn.LayerNorm):
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.MultiheadAttention):
                nn.init.xavier_uniform_(sub.in_proj_weight, generator=generator)
                nn.init.zeros_(sub.in_proj_bias)
        for buffer_owner in module.modules():
            if isinstance(buffer_owner, nn.BatchNorm2d):
                buffer_owner.reset_running_stats()
    return module


def build_classifier(config: NetworkConfig, generator: torch.Generator) -> Classifier:
    """The protocol's single-modality classifier (architecture `cnn`) initialised from `generator`."""
    model = Classifier(config)
    init_parameters(model, generator)
    return model


def build_network(config: NetworkConfig, generator: torch.Generator) -> nn.Module:
    """The single-modality network `config.architecture` names in the registry, initialised from `generator`.

    A network is an nn.Module whose forward(images) returns a ModelOutput (logits and named features) and
    which says the channels of its named feature maps in `stage_channels`."""
    model = NETWORKS.get(config.architecture)(config, generator)
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "stage_channels", None), dict):
        raise RegistryError(f"network {config.architecture!r} built a {type(model).__name__} without a "
                            f"stage_channels dict; a network is an nn.Module returning a ModelOutput")
    return model


def build_late_fusion(config: NetworkConfig, generator: torch.Generator, ct_channels: int | None = None
                      ) -> LateFusion:
    """The late-fusion control (network `late-fusion`: two cnn backbones, the CT one of `ct_channels` inputs,
    default `config.in_channels`) initialised from `generator`."""
    if config.architecture != "cnn":
        raise ValueError(f"late fusion is built from the protocol's cnn backbones, not {config.architecture!r}")
    if config.dpe or config.mhra or config.dfpn:
        raise ValueError("late fusion takes plain backbones: switch off dpe, mhra and dfpn")
    model = LateFusion(config, ct_channels)
    init_parameters(model, generator)
    return model
