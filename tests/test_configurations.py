"""The configuration table of PROTOCOL.md section 5, declared in TOML and validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.methods.configurations import load_configurations

SECTION_5 = ["xray-teacher-ref", "ct-teacher-ref", "student-only", "late-fusion", "same-modality-kd",
             "plain-ct-kd", "ct-attention-transfer", "ct-feature-hint", "jdcnet"]


PACKAGED_CANDIDATES = ["ct-confidence-gated"]  # judged against section 5's controls by the profiles that name them


def test_the_packaged_table_declares_every_configuration_of_section_5_then_its_candidates() -> None:
    configurations = load_configurations()
    assert list(configurations) == SECTION_5 + PACKAGED_CANDIDATES
    assert {n: c.tier for n, c in configurations.items() if c.tier} == {
        "student-only": 1, "late-fusion": 1, "same-modality-kd": 1, "plain-ct-kd": 1,
        "ct-attention-transfer": 2, "ct-feature-hint": 2, "jdcnet": 3, "ct-confidence-gated": 1}


def test_teachers_students_and_modules_follow_the_protocol() -> None:
    c = load_configurations()
    assert c["xray-teacher-ref"].network.widths == (32, 64, 128, 256)
    assert c["student-only"].network.widths == (16, 32, 64, 128)
    assert c["same-modality-kd"].teacher.modality == "xray"
    assert {c[n].teacher.modality for n in ("plain-ct-kd", "ct-attention-transfer", "ct-feature-hint", "jdcnet")} \
        == {"ct"}
    assert (c["jdcnet"].teacher.network.dpe, c["jdcnet"].teacher.network.mhra, c["jdcnet"].network.dfpn) == (
        True, True, True)
    assert not (c["plain-ct-kd"].teacher.network.dpe or c["plain-ct-kd"].teacher.network.mhra)
    assert (c["plain-ct-kd"].loss.kd_alpha, c["plain-ct-kd"].loss.temperature) == (0.6, 4.0)
    assert all((x.training.epochs, x.training.batch_size, x.training.lr) == (5, 16, 3e-4) for x in c.values())


def test_only_xray_only_paired_configurations_are_deployable() -> None:
    c = load_configurations()
    assert [n for n, x in c.items() if x.deployable] == [
        "student-only", "same-modality-kd", "plain-ct-kd", "ct-attention-transfer", "ct-feature-hint", "jdcnet",
        *PACKAGED_CANDIDATES]
    assert c["late-fusion"].inference_inputs == ("xray", "ct") and c["late-fusion"].reads_ct_at_inference


def test_module_leave_one_out_is_a_configuration_not_code() -> None:
    jdcnet = load_configurations()["jdcnet"]
    without_mhra = jdcnet.with_overrides("jdcnet-no-mhra", {"teacher": {"network": {"mhra": False}}})
    assert without_mhra.teacher.network.dpe and not without_mhra.teacher.network.mhra
    assert without_mhra.network.dfpn and jdcnet.teacher.network.mhra


def test_an_override_that_breaks_the_rules_is_refused() -> None:
    with pytest.raises(ValueError, match="need a teacher"):
        load_configurations()["student-only"].with_overrides("bad", {"loss": {"attention_weight": 1.0}})


def test_a_bad_entry_is_an_error_naming_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[networks.s]\nwidths = [4, 8, 16]\n\n[[configurations]]\nname = "x"\nrole = "r"\n'
                    'manifest = "paired"\nnetwork = "s"\nloss = { temperature = -1 }\n')
    with pytest.raises(ConfigError, match=r"c\.toml: configurations\[0\] \(x\): loss\.temperature"):
        load_configurations(path)


def test_an_unknown_network_name_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[configurations]]\nname = "x"\nrole = "r"\nmanifest = "paired"\nnetwork = "nope"\n')
    with pytest.raises(ConfigError, match="unknown network 'nope'"):
        load_configurations(path)
