"""Smoke: every configuration of PROTOCOL.md section 5 trains for one epoch and predicts every case."""

from __future__ import annotations

import math

import pytest

from benchmark.methods.configurations import load_configurations
from tests.conftest import fast

CONFIGURATIONS = load_configurations()


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_every_configuration_trains_one_epoch_and_predicts(engine_factory, name: str) -> None:
    engine = engine_factory()
    config = fast(CONFIGURATIONS[name])
    regime = {"all-xray": "reference-all-xray", "all-ct": "reference-all-ct"}.get(config.manifest,
                                                                                   "paired-monte-carlo")
    split = next(r for r in engine.prepared.regimes if r.name == regime).splits[0]
    output = engine.run(config, split, split.seed)
    expected = engine.prepared.manifests[config.manifest].records_of(split.val_patients)
    assert len(output.predictions) == len(expected) > 0
    assert all(math.isfinite(p.score) and 0 <= p.score <= 1 for p in output.predictions)
    assert output.fitted.fit_log.epochs == 1 and all(math.isfinite(v) for v in
                                                      output.fitted.fit_log.epoch_terms[-1].values())
