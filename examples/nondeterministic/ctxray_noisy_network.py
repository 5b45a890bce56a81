"""A network plugin that breaks reproducibility on purpose: the preflight of `ctxray-bench run` must stop it.

It is the protocol's student backbone, but after initialising from the generator it is given it adds noise drawn
from torch's global random number generator. Two runs of the same configuration, split and seed would then
predict differently, and a verdict about it could not be reproduced (PROTOCOL.md section 9, claim 7). Found as
`module:attribute` on the Python path: `architecture = "ctxray_noisy_network:build_noisy_classifier"`.
"""

from __future__ import annotations

import torch

from benchmark.methods.models import Classifier, NetworkConfig, build_classifier


def build_noisy_classifier(config: NetworkConfig, generator: torch.Generator) -> Classifier:
    """The student backbone with global-RNG noise on its first weights: NOT deterministic."""
    model = build_classifier(config, generator)
    first = next(model.parameters())
    with torch.no_grad():
        first.add_(torch.randn(first.shape) * 0.01)  # no generator: the global RNG, another draw each build
    return model
