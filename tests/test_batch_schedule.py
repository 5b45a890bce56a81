"""One batch schedule serves the per-run and the stacked fit loops: a run's batches depend on its own seed, labels and
schedule only, never on the runs stacked beside it."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.methods.training import TrainingConfig, batch_schedule


def _batches(labels: list[torch.Tensor], config: TrainingConfig, seeds: list[int]) -> list[list[torch.Tensor]]:
    return [list(batches) for _, batches in batch_schedule(labels, config, seeds)]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), batch=st.integers(1, 16), epochs=st.integers(1, 3), sampler=st.sampled_from(
    ["shuffle", "balanced"]), seeds=st.lists(st.integers(0, 10_000), min_size=2, max_size=4, unique=True))
def test_a_runs_batches_are_the_same_alone_and_stacked(n: int, batch: int, epochs: int, sampler: str,
                                                        seeds: list[int]) -> None:
    config = TrainingConfig(epochs=epochs, batch_size=batch, sampler=sampler)
    labels = [torch.arange(n) % 2 for _ in seeds]
    stacked = _batches(labels, config, seeds)
    for k, seed in enumerate(seeds):
        alone = _batches([labels[k]], config, [seed])
        assert len(alone) == len(stacked) == epochs
        for alone_epoch, stacked_epoch in zip(alone, stacked, strict=True):
            assert [b[0].tolist() for b in alone_epoch] == [b[k].tolist() for b in stacked_epoch]


def test_every_epoch_covers_each_sample_once_when_shuffled() -> None:
    config = TrainingConfig(epochs=2, batch_size=4, sampler="shuffle")
    for _, batches in batch_schedule([torch.arange(10) % 2], config, [1]):
        assert sorted(torch.cat([b[0] for b in batches]).tolist()) == list(range(10))
