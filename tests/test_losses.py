"""Losses checked against NumPy computations written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.errors import ConfigError
from transferkit.losses import (
    REDUCTIONS,
    SCHEMES,
    DomainDiscriminator,
    GradientReversal,
    check_reduction,
    check_scale,
    dann_warmup,
    domain_accuracy,
    domain_adversarial_loss,
    grad_reverse,
    logit_rms,
    sample_weights,
    soft_target_loss,
    weighted_l2,
)

RNG = np.random.default_rng(0)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


# ---------------------------------------------------------------- weighted L2


def test_weighted_l2_default_is_mean_of_squared_norms() -> None:
    s, t = RNG.normal(size=(7, 5)), RNG.normal(size=(7, 5))
    expected = np.mean([np.sum((t[i] - s[i]) ** 2) for i in range(7)])
    assert weighted_l2(t64(s), t64(t)).item() == pytest.approx(expected, rel=1e-12)


def test_weighted_l2_with_weights() -> None:
    s, t = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4))
    w = np.array([0.5, 0.1, 0.0, 0.2, 0.15, 0.05])
    expected = sum(w[i] * sum((t[i, c] - s[i, c]) ** 2 for c in range(4)) for i in range(6))
    assert weighted_l2(t64(s), t64(t), t64(w)).item() == pytest.approx(expected, rel=1e-12)


def test_weighted_l2_gradient_and_errors() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4)
    weighted_l2(s, t).backward()
    assert s.grad is not None
    torch.testing.assert_close(s.grad, 2 * (s.detach() - t) / 3)
    with pytest.raises(ConfigError, match="differ"):
        weighted_l2(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="one per sample"):
        weighted_l2(torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(4))


def test_sample_weights_sum_to_one_without_grad() -> None:
    logits = torch.randn(8, 3, requires_grad=True)
    labels = torch.randint(0, 3, (8,))
    for scheme in SCHEMES:
        w = sample_weights(scheme, logits, labels=labels, class_counts=[10, 20, 30])
        assert w.shape == (8,)
        assert not w.requires_grad
        assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert (w >= 0).all()
    torch.testing.assert_close(sample_weights("uniform", logits), torch.full((8,), 1 / 8))


def test_confidence_weights_follow_teacher_max_probability() -> None:
    z = RNG.normal(size=(5, 4)) * 3
    w = sample_weights("confidence", t64(z)).numpy()
    conf = np_softmax(z).max(axis=1)
    np.testing.assert_allclose(w, conf / conf.sum(), rtol=1e-12)
    assert list(np.argsort(w)) == list(np.argsort(conf))


def test_class_balance_weights_rare_classes_more() -> None:
    counts = torch.tensor([100, 10, 50])
    labels = torch.tensor([0, 1, 2, 1])
    logits = torch.zeros(4, 3)
    w = sample_weights("class_balance", logits, labels=labels, class_counts=counts).numpy()
    raw = np.array([1 / 100, 1 / 10, 1 / 50, 1 / 10])
    np.testing.assert_allclose(w, raw / raw.sum(), rtol=1e-6)
    assert w[1] > w[2] > w[0]
    # without labels the teacher's predicted classes are used
    predicted = torch.eye(3)[[0, 1, 2, 1]] * 5
    w_pred = sample_weights("class_balance", predicted, class_counts=counts).numpy()
    np.testing.assert_allclose(w_pred, w, rtol=1e-6)


def test_sample_weights_errors() -> None:
    with pytest.raises(ConfigError, match="uniform"):
        sample_weights("bogus", torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="class_counts"):
        sample_weights("class_balance", torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="3 classes"):
        sample_weights("class_balance", torch.zeros(2, 3), class_counts=[1, 2])


# ---------------------------------------------------------------- soft targets


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 20.0])
def test_soft_target_loss_matches_numpy(temperature: float) -> None:
    s, t = RNG.normal(size=(6, 10)) * 4, RNG.normal(size=(6, 10)) * 4
    p, q = np_softmax(t / temperature), np_softmax(s / temperature)
    kl = [sum(p[i, c] * math.log(p[i, c] / q[i, c]) for c in range(10)) for i in range(6)]
    expected = temperature**2 * np.mean(kl)
    got = soft_target_loss(t64(s), t64(t), temperature).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_soft_target_loss_zero_for_equal_logits_and_stable() -> None:
    z = torch.randn(4, 5)
    assert soft_target_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    big = torch.tensor([[1000.0, -1000.0, 0.0]])
    assert torch.isfinite(soft_target_loss(big, -big, 1.0))
    masked = torch.tensor([[2.0, float("-inf"), 0.0]])
    s = torch.randn(1, 3, requires_grad=True)
    loss = soft_target_loss(s, masked, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and s.grad is not None and torch.isfinite(s.grad).all()


def test_soft_target_loss_gradient_matches_formula() -> None:
    # d/ds of T^2 * KL(p || softmax(s/T)) is T * (q - p) for one sample.
    temperature = 3.0
    s = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(soft_target_loss(s, t, temperature), s)
    q = torch.softmax(s.detach() / temperature, 1)
    p = torch.softmax(t / temperature, 1)
    torch.testing.assert_close(grad, temperature * (q - p))


def test_soft_target_loss_rejects_bad_temperature() -> None:
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="temperature"):
            soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), bad)


# ---------------------------------------------------------------- gradient reversal


def test_grl_forward_identity_backward_negated() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    for coeff in (0.0, 0.3, 1.0, 2.5):
        layer = GradientReversal(coeff)
        y = layer(x)
        torch.testing.assert_close(y, x)
        (grad,) = torch.autograd.grad(y, x, grad_outputs=upstream)
        torch.testing.assert_close(grad, -coeff * upstream)
    layer.coeff = 0.7
    (grad,) = torch.autograd.grad(layer(x), x, grad_outputs=upstream)
    torch.testing.assert_close(grad, -0.7 * upstream)
    (grad,) = torch.autograd.grad(grad_reverse(x).sum(), x)
    torch.testing.assert_close(grad, -torch.ones_like(x))


def test_dann_warmup_values() -> None:
    assert dann_warmup(0.0) == pytest.approx(0.0)
    assert dann_warmup(1.0) == pytest.approx(2 / (1 + math.exp(-10.0)) - 1)
    assert dann_warmup(0.5) == pytest.approx(2 / (1 + math.exp(-5.0)) - 1)
    assert dann_warmup(0.5, gamma=2.0) == pytest.approx(2 / (1 + math.exp(-1.0)) - 1)
    assert dann_warmup(1.5) == dann_warmup(1.0)
    assert dann_warmup(0.2) < dann_warmup(0.4) < dann_warmup(0.8)


# ---------------------------------------------------------------- domain


@pytest.mark.parametrize("batch_norm", [True, False])
def test_discriminator_output_varies_with_input(batch_norm: bool) -> None:
    torch.manual_seed(0)
    disc = DomainDiscriminator(6, hidden=32, batch_norm=batch_norm)
    x = torch.randn(16, 6)
    for mode in (disc.train, disc.eval):
        mode()
        out = disc(x)
        assert out.shape == (16,)
        assert out.std().item() > 1e-4


def test_domain_loss_matches_numpy() -> None:
    ds, dt = RNG.normal(size=5), RNG.normal(size=3)

    def sig(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    expected = 0.5 * (np.mean(-np.log(sig(ds))) + np.mean(-np.log(1 - sig(dt))))
    got = domain_adversarial_loss(t64(ds), t64(dt)).item()
    assert got == pytest.approx(expected, rel=1e-10)
    # a discriminator that outputs 0 everywhere has loss log 2
    assert domain_adversarial_loss(torch.zeros(4), torch.zeros(2)).item() == pytest.approx(
        math.log(2)
    )


def test_domain_accuracy() -> None:
    src = torch.tensor([1.0, 2.0, -1.0, 3.0])  # 3/4 right
    tgt = torch.tensor([-1.0, 0.5])  # 1/2 right
    assert domain_accuracy(src, tgt) == pytest.approx(0.5 * (0.75 + 0.5))
    assert domain_accuracy(torch.ones(3), torch.ones(9)) == pytest.approx(0.5)


def test_grl_negates_domain_gradient_on_feature_extractor() -> None:
    torch.manual_seed(1)
    extractor = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6))
    disc = DomainDiscriminator(6, hidden=16)
    xs, xt = torch.randn(5, 4), torch.randn(7, 4) + 1.0
    params = list(extractor.parameters())

    def grads(layer: nn.Module) -> list[torch.Tensor]:
        feats = layer(extractor(torch.cat([xs, xt])))
        d = disc(feats)
        return list(torch.autograd.grad(domain_adversarial_loss(d[:5], d[5:]), params))

    plain = grads(nn.Identity())
    coeff = 0.4
    reversed_ = grads(GradientReversal(coeff))
    assert any(g.abs().sum() > 0 for g in plain)
    for g_plain, g_rev in zip(plain, reversed_, strict=True):
        torch.testing.assert_close(g_rev, -coeff * g_plain)


# ---------------------------------------------------------------- weighted L2: reduction, scale


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("scale", [1, 2.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_l2_reduction_and_scale_match_numpy(
    reduction: str, scale: float, weighted: bool
) -> None:
    s, t = RNG.normal(size=(5, 3)) * 4, RNG.normal(size=(5, 3)) * 30
    w = np.array([0.1, 0.4, 0.2, 0.3, 0.0]) if weighted else np.full(5, 1 / 5)
    squared = np.array([sum((t[i, c] - s[i, c]) ** 2 for c in range(3)) for i in range(5)])
    d = squared if reduction == "sum" else squared / 3
    expected = float(np.sum(w * d) / scale)
    student = t64(s).requires_grad_(True)
    got = weighted_l2(student, t64(t), t64(w) if weighted else None, reduction=reduction,
                      scale=scale)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    got.backward()
    per_class = 1 if reduction == "sum" else 3
    grad = 2 * w[:, None] * (s - t) / (per_class * scale)
    np.testing.assert_allclose(student.grad.numpy(), grad, rtol=1e-12)
    if not weighted and reduction == "mean" and scale == 1:  # F.mse_loss
        assert got.item() == pytest.approx(np.mean((t - s) ** 2), rel=1e-12)


def test_logit_rms_and_l2_option_errors() -> None:
    z = RNG.normal(size=(7, 4)) * 12 + 3
    assert logit_rms(t64(z)) == pytest.approx(np.sqrt(np.mean(z**2)), rel=1e-12)
    assert logit_rms(torch.zeros(0, 4)) == 0.0
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ConfigError, match="reduction must be one of sum, mean, got 'median'"):
        weighted_l2(a, b, reduction="median")
    for bad in (0, -1.0, math.nan, math.inf, "auto", "1", True, None):
        with pytest.raises(ConfigError, match="scale must be a finite number > 0, got") as err:
            weighted_l2(a, b, scale=bad)
        assert "\n" not in str(err.value)
    assert check_scale("auto", allow_auto=True) == "auto"
    assert check_scale(3, allow_auto=True) == 3.0
    with pytest.raises(ConfigError, match='> 0 or "auto", got \'big\''):
        check_scale("big", allow_auto=True)
    assert check_reduction("mean") == "mean" and REDUCTIONS == ("sum", "mean")
