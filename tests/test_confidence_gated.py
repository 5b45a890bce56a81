"""The confidence-gated objective is the seed authors' follow-up formula: wCE + lambda x L_pseudo over the samples whose
CT-teacher max softmax exceeds tau, L_pseudo the CE on the teacher's argmax (hard) or T^2 KL (soft-kl); its values
and gradients equal a per-sample transcription of that formula, and its settings are validated."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.errors import ConfigError
from benchmark.methods.confidence_gated import ConfidenceGatedParams, confidence_gate, confidence_gated_loss
from benchmark.methods.losses import TermContext, TermSpec, build_term
from benchmark.methods.models import ModelOutput
from benchmark.methods.registry import OBJECTIVES


def transcription(student: torch.Tensor, teacher: torch.Tensor, variant: str, tau: float, lam: float,
                  temperature: float) -> torch.Tensor:
    """The formula, one sample at a time: (lambda / B) x sum over samples with max softmax(t_i) > tau of
    -log softmax(s_i)[argmax t_i] (hard) or T^2 sum_c q_c (log q_c - log p_c), q = softmax(t_i / T),
    p = softmax(s_i / T) (soft-kl)."""
    total = student.new_zeros(())
    for s_i, t_i in zip(student, teacher, strict=True):
        confidence = torch.softmax(t_i, dim=0).max()
        if float(confidence) <= tau:
            continue
        if variant == "hard":
            total = total - torch.log_softmax(s_i, dim=0)[int(t_i.argmax())]
        else:
            q = torch.softmax(t_i / temperature, dim=0)
            total = total + temperature**2 * (q * (torch.log(q) - torch.log_softmax(s_i / temperature, dim=0))).sum()
    return lam * total / len(student)


def _params(variant: str = "hard", tau: float = 0.7, lam: float = 1.0, temperature: float = 4.0
            ) -> ConfidenceGatedParams:
    return ConfidenceGatedParams.model_validate({"variant": variant, "tau": tau, "lambda": lam,
                                                 "temperature": temperature})


def test_the_gate_passes_only_samples_whose_teacher_max_softmax_exceeds_tau() -> None:
    p = torch.tensor([0.95, 0.75, 0.70001, 0.65, 0.5, 0.2, 0.05])  # P(class 1); max softmax = max(p, 1 - p)
    logits = torch.stack([torch.log(1 - p), torch.log(p)], dim=1)
    assert confidence_gate(logits, 0.7).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_no_sample_above_the_gate_gives_zero_loss_and_zero_gradient() -> None:
    student = torch.randn(4, 2, requires_grad=True)
    teacher = torch.zeros(4, 2)  # max softmax 0.5 everywhere
    loss = confidence_gated_loss(student, teacher, _params())
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.count_nonzero(student.grad) == 0


@pytest.mark.parametrize("variant", ["hard", "soft-kl"])
def test_a_worked_example_matches_the_formula_by_hand(variant: str) -> None:
    student = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]])
    teacher = torch.tensor([[0.0, 3.0], [0.0, 0.2], [2.0, 0.0]])  # max softmax 0.953, 0.550, 0.881: gate 1, 0, 1
    value = float(confidence_gated_loss(student, teacher, _params(variant, tau=0.7, lam=0.5, temperature=2.0)))
    if variant == "hard":  # pseudo-labels 1 and 0
        expected = 0.5 * (math.log(1 + math.exp(-1.0)) + math.log(2.0)) / 3
    else:
        def kl(s: list[float], t: list[float]) -> float:
            q = [math.exp(x / 2) / sum(math.exp(y / 2) for y in t) for x in t]
            log_p = [x / 2 - math.log(sum(math.exp(y / 2) for y in s)) for x in s]
            return 4 * sum(qc * (math.log(qc) - lp) for qc, lp in zip(q, log_p, strict=True))
        expected = 0.5 * (kl([0.0, 1.0], [0.0, 3.0]) + kl([0.5, 0.5], [2.0, 0.0])) / 3
    assert value == pytest.approx(expected, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 12), variant=st.sampled_from(["hard", "soft-kl"]), tau=st.floats(0.5, 0.95),
       lam=st.floats(0.3, 1.5), temperature=st.floats(0.5, 8.0), seed=st.integers(0, 2**31 - 1))
def test_values_and_gradients_equal_the_transcription(batch: int, variant: str, tau: float, lam: float,
                                                      temperature: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    student = (3 * torch.randn(batch, 2, generator=generator, dtype=torch.float64)).requires_grad_()
    teacher = 3 * torch.randn(batch, 2, generator=generator, dtype=torch.float64)
    params = _params(variant, tau, lam, temperature)
    ours = confidence_gated_loss(student, teacher, params)
    theirs = transcription(student, teacher, variant, tau, lam, temperature)
    (grad_ours,) = torch.autograd.grad(ours, student)
    (grad_theirs,) = torch.autograd.grad(theirs, student) if theirs.requires_grad else (torch.zeros_like(student),)
    torch.testing.assert_close(ours.detach(), theirs.detach())
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_no_gradient_reaches_the_teacher() -> None:
    student = torch.randn(5, 2, requires_grad=True)
    teacher = (4 * torch.randn(5, 2)).requires_grad_()
    confidence_gated_loss(student, teacher, _params("soft-kl", tau=0.5)).backward()
    assert teacher.grad is None


def test_it_is_found_by_name_in_the_objectives_registry_and_reads_the_logits_only() -> None:
    term = build_term(TermSpec(objective="confidence-gated", params={"variant": "soft-kl", "tau": 0.8,
                                                                       "lambda": 0.3, "temperature": 2.0}),
                      TermContext({}, {}))
    assert isinstance(term, OBJECTIVES.get("confidence-gated")) and term.teacher_features == ()
    student, teacher = torch.randn(6, 2), 3 * torch.randn(6, 2)
    value = term(ModelOutput(student, {}), ModelOutput(teacher, {}), torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(value, transcription(student, teacher, "soft-kl", 0.8, 0.3, 2.0))


@pytest.mark.parametrize(("params", "problem"), [
    ({"tau": 0.4}, "tau"), ({"tau": 1.0}, "tau"), ({"lambda": 0.0}, "lambda"), ({"lambda": -1.0}, "lambda"),
    ({"temperature": 0.0}, "temperature"), ({"variant": "soft"}, "variant"), ({"gamma": 1.0}, "gamma")])
def test_settings_out_of_range_are_refused_naming_the_objective_and_the_setting(params: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"objective 'confidence-gated'.*{problem}"):
        build_term(TermSpec(objective="confidence-gated", params=params), TermContext({}, {}))


def test_a_configuration_using_it_passes_the_preflight_and_trains_in_the_engine(tmp_path, engine_factory) -> None:  # noqa: ANN001
    from benchmark.methods.configurations import with_added_configurations
    from benchmark.methods.preflight import check_configuration
    from benchmark.schemas import RegimeName

    declared = tmp_path / "configurations.toml"
    declared.write_text('[[configurations]]\nname = "ct-gated-test"\nrole = "test"\ntier = 1\nmanifest = "paired"\n'
                        'network = "student"\nteacher = { modality = "ct", network = "teacher" }\n'
                        'training = { epochs = 1 }\n'
                        'loss = { kd_alpha = 0.0, terms = [{ objective = "confidence-gated", params = { variant = '
                        '"soft-kl", tau = 0.6, lambda = 0.8 } }] }\n', encoding="utf-8")
    configuration = with_added_configurations(declared)["ct-gated-test"]
    configuration = configuration.with_overrides(configuration.name, {"teacher": {"training": {"epochs": 1}}})
    check_configuration(configuration, 32)
    engine = engine_factory()
    split = next(r for r in engine.prepared.regimes if r.name == RegimeName.PAIRED_FIXED).splits[0]
    fitted = engine.run(configuration, split, split.seed).fitted
    assert fitted.teacher is not None and "confidence-gated" in fitted.fit_log.epoch_terms[0]
