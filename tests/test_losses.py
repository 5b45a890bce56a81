"""Losses against hand computations on small tensors (the torchdistill loss-test habit)."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.methods.losses import (
    HintRegressor,
    LossConfig,
    Objective,
    attention_map,
    attention_transfer_loss,
    inverse_frequency_weights,
    kd_kl_term,
    kd_loss,
    weighted_cross_entropy,
)
from benchmark.methods.models import ModelOutput, NetworkConfig, build_classifier


def test_inverse_frequency_weights_by_hand() -> None:
    weights = inverse_frequency_weights(torch.tensor([0, 1, 1, 1]))
    torch.testing.assert_close(weights, torch.tensor([4 / (2 * 1), 4 / (2 * 3)]))


def test_an_absent_class_gets_zero_weight() -> None:
    torch.testing.assert_close(inverse_frequency_weights(torch.tensor([1, 1])), torch.tensor([0.0, 1.0]))


def test_weighted_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    weights = torch.tensor([3.0, 1.0])
    nll0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    nll1 = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = (3 * nll0 + 1 * nll1) / (3 + 1)
    assert weighted_cross_entropy(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)


def test_kd_with_alpha_zero_is_cross_entropy() -> None:
    s, t, y, w = torch.randn(5, 2), torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1]), torch.tensor([1.2, 0.8])
    torch.testing.assert_close(kd_loss(s, t, y, w, alpha=0.0, temperature=4.0), weighted_cross_entropy(s, y, w))


def test_kl_term_is_zero_when_student_and_teacher_agree() -> None:
    logits = torch.randn(4, 2)
    assert kd_kl_term(logits, logits.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-5)


def test_kd_objective_by_hand() -> None:
    s = torch.tensor([[1.0, -1.0]])
    t = torch.tensor([[-2.0, 2.0]])
    y = torch.tensor([0])
    w = torch.tensor([1.0, 1.0])
    T, a = 2.0, 0.6
    p_t = torch.softmax(t / T, 1)[0].tolist()
    p_s = torch.softmax(s / T, 1)[0].tolist()
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    ce = -math.log(math.exp(1) / (math.exp(1) + math.exp(-1)))
    expected = (1 - a) * ce + a * T**2 * kl
    assert kd_loss(s, t, y, w, alpha=a, temperature=T).item() == pytest.approx(expected, rel=1e-6)


def test_attention_map_is_unit_norm_channel_mean_of_squares() -> None:
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2 channels, 1, 2)
    raw = torch.tensor([(1 + 9) / 2, (4 + 0) / 2])
    torch.testing.assert_close(attention_map(features), (raw / raw.norm()).unsqueeze(0))


def test_attention_transfer_is_zero_for_proportional_maps_and_pools_to_a_common_size() -> None:
    teacher = torch.rand(2, 8, 4, 4)
    assert attention_transfer_loss(teacher * 3, teacher).item() == pytest.approx(0.0, abs=1e-7)
    student = torch.rand(2, 4, 8, 8)
    pooled = torch.nn.functional.adaptive_avg_pool2d(student, (4, 4))
    expected = (attention_map(pooled) - attention_map(teacher)).pow(2).mean()
    torch.testing.assert_close(attention_transfer_loss(student, teacher), expected)


def test_hint_is_mse_of_the_regressed_student_map() -> None:
    regressor = HintRegressor(2, 2)
    with torch.no_grad():
        regressor.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        regressor.conv.bias.zero_()
    student, teacher = torch.rand(1, 2, 2, 2), torch.rand(1, 2, 2, 2)
    torch.testing.assert_close(regressor(student, teacher), ((student - teacher) ** 2).mean())


def _student_and_teacher() -> tuple[torch.nn.Module, torch.nn.Module]:
    student = build_classifier(NetworkConfig(widths=(4, 8, 16)), torch.Generator().manual_seed(0))
    teacher = build_classifier(NetworkConfig(widths=(8, 16, 32)), torch.Generator().manual_seed(1))
    teacher.eval().requires_grad_(False)
    return student, teacher


@pytest.mark.parametrize("loss", [LossConfig(),
                                  LossConfig(attention_weight=1000.0, attention_stages=("stage2", "stage3")),
                                  LossConfig(hint_weight=1.0, hint_stage="stage2")])
def test_gradients_reach_the_student_and_never_the_teacher(loss: LossConfig) -> None:
    student, teacher = _student_and_teacher()
    objective = Objective(loss, torch.tensor([1.0, 1.0]), has_teacher=True,
                          student_channels={"stage1": 4, "stage2": 8, "stage3": 16},
                          teacher_channels={"stage1": 8, "stage2": 16, "stage3": 32})
    x = torch.randn(3, 1, 16, 16)
    total, _ = objective(student(x), torch.tensor([0, 1, 1]), teacher(x))
    total.backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_tensors_are_detached_even_when_they_require_grad() -> None:
    s = torch.randn(2, 2, requires_grad=True)
    t = torch.randn(2, 2, requires_grad=True)
    kd_kl_term(s, t, 4.0).backward()
    assert s.grad is not None and t.grad is None


def test_objective_without_teacher_is_weighted_cross_entropy() -> None:
    objective = Objective(LossConfig(), torch.tensor([2.0, 1.0]), has_teacher=False)
    logits = torch.randn(4, 2)
    labels = torch.tensor([0, 1, 1, 0])
    total, terms = objective(ModelOutput(logits), labels)
    torch.testing.assert_close(total, weighted_cross_entropy(logits, labels, torch.tensor([2.0, 1.0])))
    assert set(terms) == {"ce"}


def test_attention_transfer_without_a_teacher_is_refused() -> None:
    with pytest.raises(ValueError, match="need a teacher"):
        Objective(LossConfig(attention_weight=1.0), torch.ones(2), has_teacher=False)
