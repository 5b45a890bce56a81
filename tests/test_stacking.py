"""The stacked training path (benchmark.methods.stacking): the same networks, batches and losses as the per-run path,
computed together; deterministic whatever it is stacked with; recorded on every run; within a stated tolerance
of the per-run path on real power-study runs, with the same statuses."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.experiment.power_study import load_grid
from benchmark.experiment.store import ResultsStore
from benchmark.methods.configurations import merge_overrides
from benchmark.methods.losses import LossConfig, Objective, inverse_frequency_weights
from benchmark.methods.models import NetworkConfig, build_network
from benchmark.methods.stacking import StackedClassifier, fit_stacked, stack_key, stackable
from benchmark.methods.training import TrainingConfig, TrainingSet, derive_generator, fit
from tests.power_run import run_power

STUDENT = NetworkConfig()
CPU = torch.device("cpu")
# per-run vs stacked power-study runs: most scores agree to ~1e-6; training amplifies rounding differences in
# a few runs, so the bound on one case's score is loose, the bound on the typical run tight, statuses equal
MAX_SCORE_DIFFERENCE = 0.25
MEDIAN_SCORE_DIFFERENCE = 1e-4


def _networks(config: NetworkConfig, count: int) -> list:
    return [build_network(config, derive_generator(100 + i, "init")) for i in range(count)]


def _datasets(count: int, n: int = 40, size: int = 16) -> list[TrainingSet]:
    generator = torch.Generator().manual_seed(0)
    return [TrainingSet(torch.randn(n, 1, size, size, generator=generator),
                        torch.randint(0, 2, (n,), generator=generator)) for _ in range(count)]


def _train(indices: list[int], datasets: list[TrainingSet], config: TrainingConfig) -> dict[int, torch.nn.Module]:
    models = {i: build_network(STUDENT, derive_generator(100 + i, "init")) for i in indices}
    objectives = [Objective(LossConfig(), inverse_frequency_weights(datasets[i].labels), has_teacher=False)
                  for i in indices]
    fit_stacked([models[i] for i in indices], objectives, [datasets[i] for i in indices], config,
                [7 + i for i in indices], CPU)
    return models


def _same_bits(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize(("widths", "convs_per_stage", "size"), [((16, 32, 64, 128), 1, 16), ((8, 16, 32), 2, 24),
                                                                  ((8, 16, 32, 64), 1, 17)])
def test_a_stacked_forward_and_gradient_match_each_plain_network(widths: tuple[int, ...], convs_per_stage: int,
                                                                   size: int) -> None:
    config = NetworkConfig(widths=widths, convs_per_stage=convs_per_stage)
    models = _networks(config, 3)
    plain = copy.deepcopy(models)
    stacked = StackedClassifier(models, image_size=size).train()
    images = torch.randn(6, 3, size, size, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(6) % 2
    outputs = StackedClassifier.outputs(*stacked(images))
    sum(F.cross_entropy(o.logits, labels) + o.features["stage2"].mean() for o in outputs).backward()
    for k, model in enumerate(plain):
        expected = model(images[:, k:k + 1])
        (F.cross_entropy(expected.logits, labels) + expected.features["stage2"].mean()).backward()
        torch.testing.assert_close(outputs[k].logits, expected.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outputs[k].features["stage2"], expected.features["stage2"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outputs[k].features["embedding"], expected.features["embedding"])
        last, reference = stacked.layers[-1], model.backbone.stages[-1][-3].weight.grad
        for t, (i, j) in enumerate(last.taps):
            torch.testing.assert_close(last.weight.grad[k, t].t(), reference[:, :, i, j], rtol=1e-4, atol=1e-6)


def test_unstacking_returns_every_parameter_and_running_statistic() -> None:
    models = _networks(STUDENT, 2)
    before = copy.deepcopy(models)
    stacked = StackedClassifier(models, image_size=16)
    stacked.unstack_into(models, steps=0)
    assert all(_same_bits(a, b) for a, b in zip(models, before, strict=True))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_runs_bits_do_not_depend_on_what_it_is_stacked_with_or_on_the_thread_count(threads: int) -> None:
    datasets = _datasets(6)
    config = TrainingConfig(epochs=3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        alone = _train([0], datasets, config)
        first = _train([0, 1, 2], datasets, config)
        other = _train([3, 4, 0, 5, 1], datasets, config)
        assert torch.get_num_threads() == threads  # the process's setting is restored
    finally:
        torch.set_num_threads(before)
    assert _same_bits(alone[0], first[0]) and _same_bits(first[0], other[0]) and _same_bits(first[1], other[1])


def test_stacked_training_matches_per_run_training_closely() -> None:
    datasets = _datasets(1)
    config = TrainingConfig(epochs=3)
    stacked = _train([0], datasets, config)[0]
    plain = build_network(STUDENT, derive_generator(100, "init"))
    fit(plain, Objective(LossConfig(), inverse_frequency_weights(datasets[0].labels), has_teacher=False),
        datasets[0], config, 7, CPU)
    images = torch.randn(20, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(stacked(images).logits, 1), torch.softmax(plain(images).logits, 1),
                                   rtol=0, atol=1e-4)


def test_kernel_taps_that_only_read_padding_decay_as_adamw_decays_them() -> None:
    datasets = _datasets(1)
    config = TrainingConfig(epochs=2, weight_decay=0.5, lr=0.01)
    initial = build_network(STUDENT, derive_generator(100, "init"))
    stacked = _train([0], datasets, config)[0]
    plain = copy.deepcopy(initial)
    fit(plain, Objective(LossConfig(), inverse_frequency_weights(datasets[0].labels), has_teacher=False),
        datasets[0], config, 7, CPU)
    # a 2 x 2 map into the last stride-2 stage: row and column 0 of its kernels only ever read padding
    last = lambda m: m.backbone.stages[-1][0].weight  # noqa: E731
    torch.testing.assert_close(last(stacked)[:, :, 0, :], last(plain)[:, :, 0, :], rtol=1e-5, atol=0)
    assert not torch.equal(last(stacked)[:, :, 0, :], last(initial)[:, :, 0, :])


def test_only_plain_cnn_classifiers_of_one_schedule_and_size_share_a_stack_key() -> None:
    data = _datasets(2)
    config = TrainingConfig()
    plain = build_network(STUDENT, derive_generator(0, "init"))
    assert stackable(plain) and stack_key(plain, data[0], config) == stack_key(plain, data[1], config)
    assert stack_key(plain, _datasets(1, n=41)[0], config) != stack_key(plain, data[0], config)
    assert stack_key(plain, data[0], TrainingConfig(epochs=6)) != stack_key(plain, data[0], config)
    dfpn = build_network(NetworkConfig(dfpn=True), derive_generator(0, "init"))
    assert not stackable(dfpn) and stack_key(dfpn, data[0], config) is None


@pytest.fixture(scope="module")
def per_run_power(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny grid's first replicate computed on the per-run (reference) path."""
    grid = load_grid("tiny")
    grid = grid.model_copy(update={"replicates": 1,
                                   "settings": merge_overrides(grid.settings, {"engine": {"path": "per-run"}})})
    out = tmp_path_factory.mktemp("per-run-power")
    run_power(grid, out, workers=2, progress=False)
    return out


def test_the_power_grids_train_on_the_stacked_path_and_every_record_says_so(tiny_power) -> None:
    result, out = tiny_power
    assert load_grid("default").settings["engine"]["path"] == "stacked"
    records = [r for store in sorted((out / "stores").iterdir()) for r in ResultsStore(store).load_all()]
    assert records and {r.training_path for r in records} == {"stacked"}
    assert {r.teacher.path for r in records if r.teacher is not None} == {"stacked"}
    metas = [json.loads(p.read_text()) for p in (out / "teachers").rglob("*.json")]
    assert metas and {m["path"] for m in metas} == {"stacked"}


def test_stacked_and_per_run_power_runs_agree_within_the_stated_tolerance(tiny_power, per_run_power: Path) -> None:
    result, out = tiny_power
    differences = []
    for store in sorted((per_run_power / "stores").iterdir()):
        reference = ResultsStore(store).load_all()
        stacked = {r.spec.run_id: r for r in ResultsStore(out / "stores" / store.name).load_all()}
        assert reference and {r.training_path for r in reference} == {"per-run"}
        for record in reference:
            other = stacked[record.spec.run_id]
            differences += [abs(a.score - b.score) for a, b in zip(record.predictions, other.predictions, strict=True)]
    assert max(differences) <= MAX_SCORE_DIFFERENCE
    assert float(np.median(differences)) <= MEDIAN_SCORE_DIFFERENCE


def test_stacked_and_per_run_power_runs_reach_the_same_statuses(tiny_power, per_run_power: Path) -> None:
    result, _ = tiny_power
    reference = run_power(load_grid("tiny").model_copy(update={"replicates": 1, "settings": merge_overrides(
        load_grid("tiny").settings, {"engine": {"path": "per-run"}})}), per_run_power, workers=1, progress=False)
    stacked = {(o.mode, o.resamples): (o.h1_confirmed, o.h2_confirmed) for o in result.replicates if o.replicate == 0}
    assert {(o.mode, o.resamples): (o.h1_confirmed, o.h2_confirmed) for o in reference.replicates} == stacked


def test_a_store_computed_on_the_stacked_path_passes_every_claim_its_runs_reproducing_alone(tmp_path: Path) -> None:
    from tests.conftest import write_smoke_store
    from tests.test_claims_can_fail import run_claims

    store = write_smoke_store(tmp_path, settings='[data]\nimage_size = 32\n\n[engine]\npath = "stacked"\n')
    records = ResultsStore(store).load_all()
    assert {r.training_path for r in records} == {"per-run", "stacked"}  # late fusion and jdcnet fall back
    result = run_claims(store)
    assert result.returncode == 0, result.stdout[-3000:]
