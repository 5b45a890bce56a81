"""The experiment matrix: declared profiles expand to deduplicated run specifications with stable ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.experiment.matrix import Profile, expand_profile, load_profile, run_id
from benchmark.methods.configurations import load_configurations

CONFIGURATIONS = load_configurations()


@pytest.fixture
def regimes(small_prepared):
    return small_prepared[0].regimes


def count(regimes, name: str) -> int:
    regime = next(r for r in regimes if r.name == name)
    return sum(len(regime.seeds_for(s)) for s in regime.splits)


def by_block(specs, block: str):
    return [s for s in specs if block in s.blocks]


def test_paper_profile_runs_tiers_in_both_paired_regimes_and_the_references(regimes) -> None:
    specs = expand_profile(load_profile("paper"), CONFIGURATIONS, regimes)
    per_config = count(regimes, "paired-fixed") + count(regimes, "paired-monte-carlo")
    assert len(by_block(specs, "tier-1")) == 4 * per_config
    assert len(by_block(specs, "tier-2")) == 2 * per_config
    assert len(by_block(specs, "tier-3")) == per_config
    assert sorted(s.regime for s in by_block(specs, "reference")) == ["reference-all-ct", "reference-all-xray"]


def test_paper_stress_blocks_follow_section_7(regimes) -> None:
    specs = expand_profile(load_profile("paper"), CONFIGURATIONS, regimes)
    fixed_seeds = count(regimes, "paired-fixed")
    grid = by_block(specs, "temperature-alpha")
    assert len(grid) == 2 * 9 and {s.seed for s in grid} == {42}
    assert {(s.configuration.loss.temperature, s.configuration.loss.kd_alpha) for s in grid} == {
        (t, a) for t in (2.0, 4.0, 6.0) for a in (0.3, 0.6, 0.9)}
    assert len(by_block(specs, "leave-one-out")) == 3 * fixed_seeds
    assert len(by_block(specs, "progressive")) == 5 * fixed_seeds
    assert len(by_block(specs, "balanced-sampler")) == 3 * (fixed_seeds + count(regimes, "paired-monte-carlo"))
    lengths = by_block(specs, "training-length")
    assert {s.configuration.training.epochs for s in lengths} == {5, 20, 50}
    assert all(s.configuration.teacher is None or s.configuration.teacher.training.epochs == 5 for s in lengths)


def test_a_run_declared_by_two_blocks_is_run_once_under_both_names(regimes) -> None:
    specs = expand_profile(load_profile("paper"), CONFIGURATIONS, regimes)
    assert len({s.run_id for s in specs}) == len(specs)
    plain_fixed = [s for s in specs if "plain-ct-kd" in s.names and s.regime == "paired-fixed"]
    assert all("progressive-plain" in s.names and {"tier-1", "progressive"} <= set(s.blocks) for s in plain_fixed)
    assert all("student-only@epochs=5" in s.names for s in specs
               if "student-only" in s.names and s.regime == "paired-monte-carlo")


def test_leave_one_out_variants_switch_off_exactly_one_module(regimes) -> None:
    specs = expand_profile(load_profile("paper"), CONFIGURATIONS, regimes)
    modules = {s.name: (s.configuration.teacher.network.dpe, s.configuration.teacher.network.mhra,
                        s.configuration.network.dfpn) for s in by_block(specs, "leave-one-out")}
    assert modules == {"jdcnet-no-dpe": (False, True, True), "jdcnet-no-mhra": (True, False, True),
                       "jdcnet-no-dfpn": (True, True, False)}


def test_the_smoke_profile_overrides_epochs_of_students_and_teachers(regimes) -> None:
    specs = expand_profile(load_profile("smoke"), CONFIGURATIONS, regimes)
    assert {s.configuration.training.epochs for s in specs if s.blocks != ("training-length",)} == {1}
    assert {s.configuration.training.epochs for s in specs if "training-length" in s.blocks} == {1, 2}
    assert {s.configuration.teacher.training.epochs for s in specs if s.configuration.teacher} == {1}


def test_the_paper_training_length_block_holds_every_configuration_a_hypothesis_reads(regimes) -> None:
    specs = expand_profile(load_profile("paper"), CONFIGURATIONS, regimes)
    by_length: dict[int, set[tuple[str, str]]] = {}
    for spec in specs:
        for d in spec.declarations:
            if d.block == "training-length":
                by_length.setdefault(spec.configuration.training.epochs, set()).add(
                    (d.name.rsplit("@epochs=", 1)[0], spec.regime))
    needed = {(name, regime) for name in ("student-only", "late-fusion", "same-modality-kd", "plain-ct-kd", "jdcnet",
                                          "student-only@balanced", "plain-ct-kd@balanced")
              for regime in ("paired-fixed", "paired-monte-carlo")}
    assert set(by_length) == {5, 20, 50} and all(declared == needed for declared in by_length.values())


def test_run_id_hashes_content_split_and_seed_not_the_name(regimes) -> None:
    split = regimes[2].splits[0]
    plain = CONFIGURATIONS["plain-ct-kd"]
    assert run_id(plain, split, 42) == run_id(plain.with_overrides("alias", {}), split, 42)
    assert run_id(plain, split, 42) != run_id(plain, split, 43)
    assert run_id(plain, split, 42) != run_id(plain.with_overrides("x", {"loss": {"temperature": 2.0}}), split, 42)
    assert run_id(plain, split, 42) != run_id(plain, regimes[3].splits[0], 42)


def test_run_ids_are_stable_across_processes(small_prepared) -> None:
    prepared, cache = small_prepared
    here = [s.run_id for s in expand_profile(load_profile("paper"), CONFIGURATIONS, prepared.regimes)]
    script = (
        "import json, sys\nfrom pathlib import Path\nfrom benchmark.config import Settings\n"
        "from benchmark.methods.configurations import load_configurations\n"
        "from benchmark.data.imaging import ImageCache\n"
        "from benchmark.experiment.matrix import expand_profile, load_profile\n"
        "from benchmark.data.pipeline import prepare_data\n"
        "s = Settings.model_validate({'data': {'image_size': 32}, 'splits': {'monte_carlo_resamples': 2, "
        "'monte_carlo_val_patients': 3}})\n"
        f"p = prepare_data(Path({str(prepared.cohort.image_root)!r}), s, ImageCache({str(cache.root)!r}, 32))\n"
        "print(json.dumps([x.run_id for x in expand_profile(load_profile('paper'), load_configurations(), "
        "p.regimes)]))\n")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "99", "PATH": ""}, cwd=Path(__file__).parent.parent)
    assert json.loads(other.stdout) == here


def test_unknown_profile_lists_the_declared_ones() -> None:
    with pytest.raises(ConfigError, match="no profile 'nope'; declared: paper, smoke"):
        load_profile("nope")


def _one_block_profile(tmp_path: Path, configuration: str, regime: str) -> Profile:
    """Profile 'p' of a matrix file with one block 'b' running `configuration` in `regime`."""
    path = tmp_path / "m.toml"
    path.write_text('[profiles.p]\ndescription = "d"\n[[profiles.p.blocks]]\nname = "b"\npurpose = "x"\n'
                    f'configurations = ["{configuration}"]\nregimes = ["{regime}"]\n')
    return load_profile("p", path)


def test_unknown_configuration_in_a_block_names_the_block(tmp_path: Path, regimes) -> None:
    with pytest.raises(ConfigError, match="block 'b': unknown configuration 'nope'"):
        expand_profile(_one_block_profile(tmp_path, "nope", "paired-fixed"), CONFIGURATIONS, regimes)


def test_a_block_with_a_regime_of_another_manifest_is_refused(tmp_path: Path, regimes) -> None:
    with pytest.raises(ConfigError, match="xray-teacher-ref trains on all-xray"):
        expand_profile(_one_block_profile(tmp_path, "xray-teacher-ref", "paired-fixed"), CONFIGURATIONS, regimes)
