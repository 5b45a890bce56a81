"""DKD and RKD through the registry match mdistiller's reference formulas (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from benchmark.methods.baselines import dkd_loss, rkd_loss
from benchmark.methods.losses import LogitKD, TermContext, TermSpec, build_term
from benchmark.methods.models import ModelOutput
from tests import reference_mdistiller as reference


def _logits(classes: int, batch: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = (torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    teacher = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, labels


@pytest.mark.parametrize("classes", [2, 3, 10, 100])
@pytest.mark.parametrize("alpha, beta, temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.0, 8.0)])
def test_dkd_matches_mdistiller_in_value_and_gradient(classes: int, alpha: float, beta: float,
                                                      temperature: float) -> None:
    student, teacher, labels = _logits(classes, seed=classes)
    ours = dkd_loss(student, teacher, labels, alpha, beta, temperature)
    (ours_grad,) = torch.autograd.grad(ours, student)
    theirs = reference.dkd_loss(student, teacher, labels, alpha, beta, temperature)
    (theirs_grad,) = torch.autograd.grad(theirs, student)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-8, atol=1e-12)


def test_dkd_on_two_classes_is_its_tckd_weight_times_logit_kd() -> None:
    student, teacher, labels = _logits(2)
    kd = LogitKD(LogitKD.Params(temperature=4.0), TermContext({}, {}))
    expected = 3.0 * kd(ModelOutput(student), ModelOutput(teacher), labels)
    torch.testing.assert_close(dkd_loss(student, teacher, labels, 3.0, 8.0, 4.0), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("student_width, teacher_width", [(16, 16), (128, 256)])
def test_rkd_matches_mdistiller_in_value_and_gradient(squared: bool, student_width: int, teacher_width: int) -> None:
    generator = torch.Generator().manual_seed(student_width)
    student = torch.randn(12, student_width, generator=generator, dtype=torch.float64).requires_grad_()
    teacher = torch.randn(12, teacher_width, generator=generator, dtype=torch.float64)
    ours = rkd_loss(student, teacher, distance_weight=25.0, angle_weight=50.0, squared=squared)
    (ours_grad,) = torch.autograd.grad(ours, student)
    theirs = reference.rkd_loss(student, teacher, squared=squared, distance_weight=25.0, angle_weight=50.0)
    (theirs_grad,) = torch.autograd.grad(theirs, student)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-8, atol=1e-12)


def test_rkd_of_a_single_image_is_zero_not_nan() -> None:
    student = torch.randn(1, 8, requires_grad=True)
    loss = rkd_loss(student, torch.randn(1, 16))
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_the_registry_builds_dkd_and_rkd_by_name_with_validated_parameters() -> None:
    from benchmark.errors import ConfigError

    context = TermContext({"stage1": 4}, {"stage1": 8})
    dkd = build_term(TermSpec(objective="dkd", params={"beta": 2.0}), context)
    rkd = build_term(TermSpec(objective="rkd"), context)
    assert dkd.params.beta == 2.0 and rkd.teacher_features == ("embedding",)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="dkd.*gamma"):
        build_term(TermSpec(objective="dkd", params={"gamma": 1.0}), context)
