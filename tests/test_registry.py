"""Objectives and networks are found by name (built-ins through the same entry points as plugins); an unknown or
broken name fails before any training, naming it; timm backbones train as teacher and as student."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from benchmark.errors import ConfigError, RegistryError
from benchmark.methods.configurations import Configuration, load_configurations
from benchmark.methods.losses import LossConfig, TermSpec
from benchmark.methods.models import NetworkConfig, build_network
from benchmark.methods.registry import NETWORKS, OBJECTIVES, Registry
from benchmark.methods.training import derive_generator
from tests.conftest import fast

PLUGIN = '''
import torch
from benchmark.methods.losses import DistillationTerm


class LogitMatch(DistillationTerm):
    """Mean squared difference of the logits."""

    def __init__(self, params, context):
        super().__init__()
        self.scale = float(params.get("scale", 1.0))

    def forward(self, student, teacher, labels):
        return self.scale * (student.logits - teacher.logits.detach()).pow(2).mean()


def not_a_module(params, context):
    return 42
'''


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module `my_terms` on the Python path holding one objective and one broken factory."""
    (tmp_path / "my_terms.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_terms"
    sys.modules.pop("my_terms", None)


def test_the_built_in_methods_are_found_through_the_entry_points() -> None:
    from importlib.metadata import entry_points

    assert {"kd", "attention", "hint", "dkd", "rkd"} <= {e.name for e in entry_points(group=OBJECTIVES.group)}
    assert {"cnn", "late-fusion", "timm"} <= {e.name for e in entry_points(group=NETWORKS.group)}
    assert OBJECTIVES.get("dkd").__name__ == "DecoupledKD"


def test_an_unknown_name_is_an_error_listing_what_is_known() -> None:
    with pytest.raises(RegistryError, match="unknown objective 'nope'.*dkd.*ctxray_bench.objectives"):
        OBJECTIVES.get("nope")


def test_a_module_attribute_that_does_not_import_is_an_error_naming_it() -> None:
    with pytest.raises(RegistryError, match="'no_such_module:Term'.*does not load.*ModuleNotFoundError"):
        OBJECTIVES.get("no_such_module:Term")


def test_a_name_registered_twice_is_an_error() -> None:
    registry: Registry = Registry("objective", "ctxray_bench.test-only")
    registry.register("a")(lambda params, context: None)
    with pytest.raises(RegistryError, match="registered twice"):
        registry.register("a")(lambda params, context: None)


def test_fields_added_for_plugins_leave_earlier_run_ids_alone() -> None:
    dumped = load_configurations()["plain-ct-kd"].model_dump(mode="json")
    assert "architecture" not in dumped["network"] and "options" not in dumped["network"]
    assert "terms" not in dumped["loss"]


def _with_term(base: Configuration, term: TermSpec) -> Configuration:
    return base.with_overrides(f"{base.name}+{term.objective}", {"loss": {"terms": [term.model_dump()]}})


def test_a_plugin_term_named_module_attribute_trains_through_the_engine(engine_factory, small_prepared,
                                                                        plugin_module: str) -> None:
    _, cache = small_prepared
    configuration = _with_term(fast(load_configurations()["plain-ct-kd"]),
                               TermSpec(objective=f"{plugin_module}:LogitMatch", weight=0.5, params={"scale": 2.0}))
    regime = next(r for r in engine_factory().prepared.regimes if r.name == "paired-fixed")
    fitted = engine_factory().fit(configuration, regime.splits[0], 42)
    assert f"{plugin_module}:LogitMatch" in fitted.fit_log.epoch_terms[0]


def test_a_factory_that_builds_no_module_fails_the_preflight(plugin_module: str) -> None:
    from benchmark.methods.preflight import check_configuration

    configuration = _with_term(load_configurations()["plain-ct-kd"],
                               TermSpec(objective=f"{plugin_module}:not_a_module"))
    with pytest.raises(RegistryError, match="not_a_module.*int, not a torch nn.Module"):
        check_configuration(configuration, 32)


def test_a_declared_term_needs_a_teacher() -> None:
    with pytest.raises(ValueError, match="need a teacher"):
        load_configurations()["student-only"].with_overrides("x", {"loss": {"terms": [{"objective": "dkd"}]}})


def test_run_stops_before_any_training_on_an_unknown_objective(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main
    from benchmark.data.synthetic import write_synthetic_cohort

    (tmp_path / "configurations.toml").write_text(
        '[[configurations]]\nname = "mine"\nrole = "candidate"\nmanifest = "paired"\nnetwork = "student"\n'
        'teacher = { modality = "ct", network = "teacher" }\nloss = { terms = [{ objective = "nope" }] }\n'
        'candidate = true\n')
    (tmp_path / "settings.toml").write_text("[data]\nimage_size = 32\n")
    data = write_synthetic_cohort(tmp_path / "data", size=48)
    code = main(["run", "--data", str(data), "--profile", "smoke", "--out", str(tmp_path / "out"), "--quiet",
                 "--configurations", str(tmp_path / "configurations.toml"), "--config", str(tmp_path / "settings.toml"),
                 "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "configuration 'mine'" in err and "unknown objective 'nope'" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "out").glob("runs/*.json"))


TIMM_STUDENT = {"architecture": "timm", "options": {"model": "resnet10t"}}
TIMM_TEACHER = {"architecture": "timm", "options": {"model": "resnet14t"}}


def test_a_timm_network_is_built_deterministically_without_touching_the_global_seed() -> None:
    config = NetworkConfig.model_validate(TIMM_STUDENT)
    state = torch.random.get_rng_state()
    first, second = (build_network(config, derive_generator(3, "init")) for _ in range(2))
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(),
                                                 strict=True))
    assert first.stage_channels == {"stage1": 64, "stage2": 64, "stage3": 128, "stage4": 256, "stage5": 512}


def test_a_timm_network_loads_a_local_weight_file(tmp_path: Path) -> None:
    import timm

    source = timm.create_model("resnet10t", pretrained=False, in_chans=1)
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    weights = str(tmp_path / "resnet10t.pth")
    config = NetworkConfig(architecture="timm", options={"model": "resnet10t", "weights": weights})
    model = build_network(config, derive_generator(0, "init"))
    torch.testing.assert_close(model.backbone.conv1[0].weight, source.conv1[0].weight)  # type: ignore[index]


@pytest.mark.parametrize("problem, message", [({"model": "no-such-net"}, "timm has no model"),
                                              ({"model": "resnet10t", "weights": "/nowhere.pth"}, "not found"),
                                              ({"modle": "resnet10t"}, "timm network options")])
def test_a_bad_timm_network_is_a_config_error(problem: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_network(NetworkConfig(architecture="timm", options=problem), derive_generator(0, "init"))


def test_timm_backbones_train_as_teacher_and_as_student(engine_factory) -> None:
    base = fast(load_configurations()["ct-attention-transfer"])
    configuration = base.with_overrides("timm-at", {
        "network": TIMM_STUDENT, "teacher": {"network": TIMM_TEACHER},
        "loss": {"attention_stages": ["stage2", "stage3"], "terms": [{"objective": "rkd", "weight": 0.1}]}})
    engine = engine_factory()
    split = next(r for r in engine.prepared.regimes if r.name == "paired-fixed").splits[0]
    first = engine.run(configuration, split, 42)
    again = engine_factory().run(configuration, split, 42)
    assert [p.score for p in first.predictions] == [p.score for p in again.predictions]
    terms = first.fitted.fit_log.epoch_terms[0]
    assert {"kd", "attention", "rkd"} <= set(terms) and all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert type(first.fitted.model).__name__ == "TimmClassifier"


def test_loss_terms_are_summed_in_declaration_order_after_the_built_ins() -> None:
    loss = LossConfig(attention_weight=2.0, hint_weight=1.0, terms=(TermSpec(objective="dkd", weight=0.5),))
    assert [t.objective for t in loss.distillation_terms()] == ["kd", "attention", "hint", "dkd"]
