"""The training engine: determinism, teachers that respect the split, deployment without CT."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmark.errors import ConfigError, LeakageError
from benchmark.methods.configurations import load_configurations
from benchmark.methods.engine import predict
from benchmark.methods.training import derive_generator, epoch_order, resolve_device
from tests.conftest import fast

CONFIGURATIONS = load_configurations()
PAIRED = [name for name, c in CONFIGURATIONS.items() if c.manifest == "paired"]
XRAY_ONLY = [name for name in PAIRED if CONFIGURATIONS[name].deployable]


def fixed_split(engine):
    return next(r for r in engine.prepared.regimes if r.name == "paired-fixed").splits[0]


def scores(output) -> list[float]:
    return [p.score for p in output.predictions]


@pytest.mark.parametrize("name", ["student-only", "plain-ct-kd", "jdcnet", "late-fusion"])
def test_same_configuration_split_and_seed_give_bit_identical_predictions(engine_factory, name: str) -> None:
    config = fast(CONFIGURATIONS[name], epochs=2)
    first = engine_factory().run(config, fixed_split(engine_factory()), 42)
    second = engine_factory().run(config, fixed_split(engine_factory()), 42)
    assert scores(first) == scores(second)


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_predictions_do_not_depend_on_the_global_random_state(engine_factory, name: str) -> None:
    config = fast(CONFIGURATIONS[name])
    engine = engine_factory()
    regime = {"all-xray": "reference-all-xray", "all-ct": "reference-all-ct"}.get(config.manifest, "paired-fixed")
    split = next(r for r in engine.prepared.regimes if r.name == regime).splits[0]
    engine.teacher_for(config, split) if config.teacher else None
    torch.manual_seed(1)
    first = scores(engine.run(config, split, 42))
    torch.manual_seed(2)
    torch.rand(1000)
    assert scores(engine.run(config, split, 42)) == first


def test_another_seed_gives_other_predictions(engine_factory) -> None:
    engine = engine_factory()
    config = fast(CONFIGURATIONS["student-only"], epochs=2)
    assert scores(engine.run(config, fixed_split(engine), 42)) != scores(engine.run(config, fixed_split(engine), 43))


def test_predictions_are_bit_identical_in_another_process(engine_factory, small_prepared, tmp_path: Path) -> None:
    engine = engine_factory()
    config = fast(CONFIGURATIONS["plain-ct-kd"])
    here = scores(engine.run(config, fixed_split(engine), 7))
    prepared, cache = small_prepared
    script = textwrap.dedent(f"""
        import json, torch
        torch.set_num_threads({torch.get_num_threads()})
        from pathlib import Path
        from benchmark.config import Settings
        from benchmark.methods.configurations import load_configurations
        from benchmark.data.imaging import ImageCache
        from benchmark.data.pipeline import prepare_data
        from benchmark.experiment.study import build_engine
        from tests.conftest import fast
        settings = Settings.model_validate({{"data": {{"image_size": 32}},
            "splits": {{"monte_carlo_resamples": 2, "monte_carlo_val_patients": 3}}}})
        cache = ImageCache({str(cache.root)!r}, 32)
        prepared = prepare_data(Path({str(prepared.cohort.image_root)!r}), settings, cache)
        engine = build_engine(prepared, settings, cache, None, "cpu")
        split = next(r for r in prepared.regimes if r.name == "paired-fixed").splits[0]
        out = engine.run(fast(load_configurations()["plain-ct-kd"]), split, 7)
        print(json.dumps([p.score for p in out.predictions]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parent.parent)
    assert json.loads(result.stdout) == here


@pytest.mark.parametrize("name", XRAY_ONLY)
def test_xray_only_predictions_ignore_ct_removed_or_replaced_by_noise(engine_factory, name: str) -> None:
    engine = engine_factory()
    config = fast(CONFIGURATIONS[name])
    fitted = engine.fit(config, fixed_split(engine), 42)
    val = engine.prepared.manifests["paired"].records_of(fixed_split(engine).val_patients)
    inputs = engine.inputs_for(config, val)
    with_ct = predict(fitted.model, config, inputs)
    noise = predict(fitted.model, config, {**inputs, "ct": torch.randn_like(inputs["ct"]) * 5})
    removed = predict(fitted.model, config, {"xray": inputs["xray"]})
    assert torch.equal(with_ct, noise) and torch.equal(with_ct, removed)
    assert not config.reads_ct_at_inference


def test_late_fusion_is_the_only_paired_configuration_reading_ct(engine_factory) -> None:
    assert [n for n in PAIRED if CONFIGURATIONS[n].reads_ct_at_inference] == ["late-fusion"]
    engine = engine_factory()
    config = fast(CONFIGURATIONS["late-fusion"])
    fitted = engine.fit(config, fixed_split(engine), 42)
    val = engine.prepared.manifests["paired"].records_of(fixed_split(engine).val_patients)
    inputs = engine.inputs_for(config, val)
    with pytest.raises(ValueError, match="needs ct at inference"):
        predict(fitted.model, config, {"xray": inputs["xray"]})
    noise = predict(fitted.model, config, {**inputs, "ct": torch.randn_like(inputs["ct"]) * 5})
    assert not torch.equal(predict(fitted.model, config, inputs), noise)


@pytest.mark.parametrize("name", ["same-modality-kd", "plain-ct-kd", "jdcnet"])
def test_teachers_are_trained_only_on_patients_outside_the_validation_set(engine_factory, name: str) -> None:
    engine = engine_factory()
    for regime in engine.prepared.regimes:
        if regime.manifest != "paired":
            continue
        for split in regime.splits:
            teacher = engine.teacher_for(fast(CONFIGURATIONS[name]), split)
            assert not set(teacher.training_patients) & set(split.val_patients)


def test_ct_teacher_uses_ct_only_patients_too(engine_factory) -> None:
    engine = engine_factory()
    teacher = engine.teacher_for(fast(CONFIGURATIONS["plain-ct-kd"]), fixed_split(engine))
    assert {"ct0", "ct1"} <= set(teacher.training_patients)


def test_the_store_refuses_a_teacher_that_saw_a_validation_patient(engine_factory) -> None:
    engine = engine_factory()
    split = fixed_split(engine)
    config = fast(CONFIGURATIONS["plain-ct-kd"])
    records = engine.prepared.manifests["all-ct"].records  # every CT, validation patients included
    with pytest.raises(LeakageError, match=f"validation patient.*{split.val_patients[0]}"):
        engine.teachers.get(config.teacher, records, split.val_patients, 42, engine.bank, engine.device)


def test_teacher_outputs_are_computed_once_not_per_step(engine_factory, monkeypatch) -> None:
    engine = engine_factory()
    config = fast(CONFIGURATIONS["ct-attention-transfer"], epochs=3)
    teacher = engine.teacher_for(config, fixed_split(engine))
    calls = []
    teacher.model.register_forward_hook(lambda *_: calls.append(1))
    fitted = engine.fit(config, fixed_split(engine), 42)
    # once on the training images, once on the validation cases' matched CT (its head-room); never per step
    assert fitted.fit_log.steps >= 3 and len(calls) == 2


def test_trained_teachers_are_reused_from_disk(engine_factory, tmp_path: Path) -> None:
    config = fast(CONFIGURATIONS["plain-ct-kd"])
    first_engine = engine_factory(tmp_path / "store")
    first = first_engine.run(config, fixed_split(first_engine), 42)
    second_engine = engine_factory(tmp_path / "store")
    second = second_engine.run(config, fixed_split(second_engine), 42)
    assert first.fitted.teacher is not None and second.fitted.teacher is not None
    assert (first.fitted.teacher.from_cache, second.fitted.teacher.from_cache) == (False, True)
    assert first.fitted.teacher.teacher_id == second.fitted.teacher.teacher_id
    assert scores(first) == scores(second)
    assert len(list((tmp_path / "store").rglob("*.pt"))) == 1


def test_teacher_identity_changes_with_its_training_patients(engine_factory) -> None:
    engine = engine_factory()
    mc = next(r for r in engine.prepared.regimes if r.name == "paired-monte-carlo").splits
    config = fast(CONFIGURATIONS["plain-ct-kd"])
    assert engine.teacher_for(config, mc[0]).teacher_id != engine.teacher_for(config, mc[1]).teacher_id


def test_every_validation_case_is_predicted_once(engine_factory) -> None:
    engine = engine_factory()
    split = fixed_split(engine)
    output = engine.run(fast(CONFIGURATIONS["student-only"]), split, 42)
    expected = engine.prepared.manifests["paired"].records_of(split.val_patients)
    assert [p.image_id for p in output.predictions] == [r.image_id for r in expected]
    assert all(0.0 <= p.score <= 1.0 for p in output.predictions)


def test_a_configuration_refuses_a_split_of_another_manifest(engine_factory) -> None:
    engine = engine_factory()
    reference = next(r for r in engine.prepared.regimes if r.name == "reference-all-xray").splits[0]
    with pytest.raises(ValueError, match="trains on paired"):
        engine.fit(fast(CONFIGURATIONS["student-only"]), reference, 42)


def test_shuffle_is_a_permutation_and_balanced_sampling_evens_the_classes() -> None:
    labels = torch.tensor([0] * 10 + [1] * 90)
    generator = derive_generator(0, "order")
    assert sorted(epoch_order(labels, "shuffle", generator).tolist()) == list(range(100))
    draws = torch.cat([epoch_order(labels, "balanced", generator) for _ in range(50)])
    assert abs(labels[draws].float().mean().item() - 0.5) < 0.03


def test_init_and_order_generators_are_independent_streams() -> None:
    assert not torch.equal(torch.rand(5, generator=derive_generator(3, "init")),
                           torch.rand(5, generator=derive_generator(3, "order")))


def test_auto_device_falls_back_to_cpu_and_unavailable_cuda_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
