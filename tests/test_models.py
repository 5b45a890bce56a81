"""Networks: shapes, named features, module switches, late fusion and explicit-generator initialisation."""

from __future__ import annotations

import pytest
import torch

from benchmark.methods.models import (
    DFPN,
    DPE,
    MHRA,
    NetworkConfig,
    build_classifier,
    build_late_fusion,
)

TEACHER = NetworkConfig(widths=(32, 64, 128, 256))
STUDENT = NetworkConfig(widths=(16, 32, 64, 128))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("config, widths", [(TEACHER, (32, 64, 128, 256)), (STUDENT, (16, 32, 64, 128))])
def test_classifier_returns_logits_and_every_stage_map(config: NetworkConfig, widths: tuple[int, ...]) -> None:
    out = build_classifier(config, gen())(torch.randn(3, 1, 128, 128))
    assert out.logits.shape == (3, 2)
    for i, (width, size) in enumerate(zip(widths, (64, 32, 16, 8), strict=True), start=1):
        assert out.features[f"stage{i}"].shape == (3, width, size, size)
    assert out.features["embedding"].shape == (3, widths[-1])


def test_teacher_backbone_is_larger_than_the_students() -> None:
    count = lambda cfg: sum(p.numel() for p in build_classifier(cfg, gen()).parameters())  # noqa: E731
    assert count(TEACHER) > 3 * count(STUDENT)


def test_dpe_reweights_features_by_a_saliency_map_in_unit_range() -> None:
    dpe = DPE(8)
    features = torch.randn(2, 8, 4, 4)
    reweighted, saliency = dpe(features)
    assert saliency.shape == (2, 1, 4, 4) and 0 <= saliency.min() and saliency.max() <= 1
    torch.testing.assert_close(reweighted, features * saliency)


def test_mhra_keeps_the_feature_shape_and_mixes_with_a_gate() -> None:
    mhra = MHRA(16, heads=4)
    features = torch.randn(2, 16, 3, 3)
    assert mhra(features).shape == features.shape
    with torch.no_grad():  # gate fully closed: the original features are retained unchanged
        mhra.gate.weight.zero_()
        mhra.gate.bias.fill_(-1e4)
    torch.testing.assert_close(mhra(features), features)


def test_dfpn_fuses_three_scales_top_down() -> None:
    dfpn = DFPN((16, 32, 64), channels=8)
    maps = (torch.randn(2, 16, 16, 16), torch.randn(2, 32, 8, 8), torch.randn(2, 64, 4, 4))
    pooled, levels = dfpn(maps)
    assert pooled.shape == (2, 24) and [lv.shape[-1] for lv in levels] == [16, 8, 4]
    coarse_only = (torch.zeros_like(maps[0]), torch.zeros_like(maps[1]), maps[2])
    _, levels_from_top = dfpn(coarse_only)
    assert levels_from_top[0].abs().sum() > 0  # the coarsest level reaches the finest one


@pytest.mark.parametrize("dpe, mhra, dfpn", [(a, b, c) for a in (False, True) for b in (False, True)
                                              for c in (False, True)])
def test_every_module_combination_is_a_configuration(dpe: bool, mhra: bool, dfpn: bool) -> None:
    config = NetworkConfig(widths=(8, 16, 32, 64), dpe=dpe, mhra=mhra, dfpn=dfpn, dfpn_channels=8)
    out = build_classifier(config, gen())(torch.randn(2, 1, 32, 32))
    assert out.logits.shape == (2, 2)
    assert ("dpe_saliency" in out.features) is dpe and ("dfpn1" in out.features) is dfpn


def test_mhra_heads_must_divide_the_final_width() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        NetworkConfig(widths=(8, 16, 30), mhra=True, mhra_heads=4)


def test_late_fusion_reads_both_modalities() -> None:
    model = build_late_fusion(STUDENT, gen()).eval()
    xray, ct = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        base = model(xray, ct).logits
        assert not torch.equal(base, model(xray, torch.randn_like(ct)).logits)
        assert not torch.equal(base, model(torch.randn_like(xray), ct).logits)


def test_same_generator_seed_gives_identical_parameters() -> None:
    a, b = build_classifier(TEACHER, gen(7)), build_classifier(TEACHER, gen(7))
    c = build_classifier(TEACHER, gen(8))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_building_a_model_leaves_the_global_random_state_to_the_caller() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = build_classifier(STUDENT, gen(1))
    torch.manual_seed(999)  # whatever the global state, the weights depend only on the generator
    second = build_classifier(STUDENT, gen(1))
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters(), strict=True))
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), expected)
