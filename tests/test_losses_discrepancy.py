"""Domain-adaptation discrepancy losses against independent NumPy computations (explicit loops)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from transferkit.errors import ConfigError
from transferkit.losses.discrepancy import (
    afn_loss,
    bnm_loss,
    bsp_loss,
    coral_loss,
    gaussian_kernels,
    jmmd,
    mcc_loss,
    mk_mmd,
)

MULTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def t64(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# --------------------------------------------------------------------------- NumPy references


def np_bandwidth(z: np.ndarray) -> float:
    """Mean ||z_i - z_j||^2 over ordered pairs i != j, by a double loop."""
    n = len(z)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += float(np.sum((z[i] - z[j]) ** 2))
    return total / (n * (n - 1))


def np_k(a: np.ndarray, b: np.ndarray, mults, sigma2: float) -> float:
    d = float(np.sum((a - b) ** 2))
    return sum(math.exp(-d / (m * sigma2)) for m in mults) / len(mults)


def np_joint_mmd(xs: list[np.ndarray], ys: list[np.ndarray], mults: list) -> float:
    """Biased quadratic MMD^2 with the product over layers of averaged Gaussian kernels."""
    sig = [np_bandwidth(np.concatenate([x, y])) for x, y in zip(xs, ys, strict=True)]
    n, m = len(xs[0]), len(ys[0])

    def k(a_list, i, b_list, j):
        out = 1.0
        for layer, (a, b) in enumerate(zip(a_list, b_list, strict=True)):
            out *= np_k(a[i], b[j], mults[layer], sig[layer])
        return out

    kss = sum(k(xs, i, xs, j) for i in range(n) for j in range(n)) / (n * n)
    ktt = sum(k(ys, i, ys, j) for i in range(m) for j in range(m)) / (m * m)
    kst = sum(k(xs, i, ys, j) for i in range(n) for j in range(m)) / (n * m)
    return kss + ktt - 2 * kst


def np_joint_mmd_linear(xs: list[np.ndarray], ys: list[np.ndarray], mults: list) -> float:
    """Gretton 2012 linear-time estimator over quadruples of consecutive rows."""
    sig = [np_bandwidth(np.concatenate([x, y])) for x, y in zip(xs, ys, strict=True)]
    n = len(xs[0])
    hs = []
    for p in range(n // 2):
        i, j = 2 * p, 2 * p + 1

        def k(a_list, a, b_list, b):
            out = 1.0
            for layer in range(len(xs)):
                out *= np_k(a_list[layer][a], b_list[layer][b], mults[layer], sig[layer])
            return out

        hs.append(k(xs, i, xs, j) + k(ys, i, ys, j) - k(xs, i, ys, j) - k(xs, j, ys, i))
    return float(np.mean(hs))


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- kernels and MK-MMD


def test_gaussian_kernels_matches_loops() -> None:
    x, y = rng(1).normal(size=(4, 3)), rng(2).normal(size=(5, 3))
    sig = np_bandwidth(np.concatenate([x, y]))
    got = gaussian_kernels(t64(x), t64(y), MULTS).numpy()
    want = np.array([[np_k(a, b, MULTS, sig) for b in y] for a in x])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # An explicit bandwidth is used as given; averaged kernels are in (0, 1], 1 on the diagonal.
    kxx = gaussian_kernels(t64(x), t64(x), (1.0,), sigma2=2.0).numpy()
    want_xx = np.array([[math.exp(-np.sum((a - b) ** 2) / 2.0) for b in x] for a in x])
    np.testing.assert_allclose(kxx, want_xx, rtol=1e-10)
    np.testing.assert_allclose(np.diag(kxx), 1.0)


@pytest.mark.parametrize("shapes", [((6, 3), (6, 3)), ((5, 4), (7, 4)), ((2, 1), (3, 1))])
def test_mk_mmd_matches_double_loop(shapes) -> None:
    x, y = rng(3).normal(size=shapes[0]), rng(4).normal(size=shapes[1]) + 0.5
    got = mk_mmd(t64(x), t64(y)).item()
    assert got == pytest.approx(np_joint_mmd([x], [y], [MULTS]), rel=1e-10, abs=1e-12)
    got1 = mk_mmd(t64(x), t64(y), kernel_multipliers=[3.0]).item()
    assert got1 == pytest.approx(np_joint_mmd([x], [y], [[3.0]]), rel=1e-10, abs=1e-12)


def test_mk_mmd_linear_matches_pair_loop() -> None:
    x, y = rng(5).normal(size=(8, 3)), rng(6).normal(size=(8, 3)) * 1.5
    got = mk_mmd(t64(x), t64(y), linear=True).item()
    assert got == pytest.approx(np_joint_mmd_linear([x], [y], [MULTS]), rel=1e-10, abs=1e-12)


def test_mk_mmd_properties() -> None:
    x = rng(7).normal(size=(16, 4))
    y = rng(8).normal(size=(16, 4))
    # A batch against itself: exactly the same three blocks, so 0 (up to rounding).
    assert abs(mk_mmd(t64(x), t64(x)).item()) < 1e-12
    assert abs(mk_mmd(t64(x), t64(x), linear=True).item()) < 1e-12
    # Symmetric in the two domains, non-negative, and growing with a shift of the target.
    assert mk_mmd(t64(x), t64(y)).item() == pytest.approx(mk_mmd(t64(y), t64(x)).item())
    values = [mk_mmd(t64(x), t64(y + shift)).item() for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values[0] >= 0
    assert all(a < b for a, b in itertools.pairwise(values)), values
    # float32 agrees with float64.
    got32 = mk_mmd(torch.tensor(x, dtype=torch.float32), torch.tensor(y + 1, dtype=torch.float32))
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(values[2], rel=1e-4)


def test_mk_mmd_linear_estimator_expectation() -> None:
    """Unbiased: ~0 on average for one distribution; near the quadratic one under a shift."""
    g = torch.Generator().manual_seed(0)
    same, shifted, quad = [], [], []
    for _ in range(200):
        x = torch.randn(32, 2, generator=g, dtype=torch.float64)
        y = torch.randn(32, 2, generator=g, dtype=torch.float64)
        same.append(mk_mmd(x, y, linear=True).item())
        shifted.append(mk_mmd(x, y + 1.0, linear=True).item())
        quad.append(mk_mmd(x, y + 1.0).item())
    same_mean, same_se = np.mean(same), np.std(same) / math.sqrt(len(same))
    assert abs(same_mean) < 4 * same_se
    assert min(same) < 0 < max(same)  # individual estimates take both signs
    # The biased quadratic estimate exceeds the unbiased one by O(1/n) on average.
    lin_mean, quad_mean = np.mean(shifted), np.mean(quad)
    assert lin_mean > 10 * same_se
    assert 0.5 * quad_mean < lin_mean < quad_mean


def test_mk_mmd_gradients_with_detached_bandwidth() -> None:
    x = t64(rng(9).normal(size=(6, 3)), grad=True)
    y = t64(rng(10).normal(size=(5, 3)) + 1, grad=True)
    loss = mk_mmd(x, y)
    loss.backward()
    assert x.grad is not None and y.grad is not None
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad.abs().sum() > 0
    # The bandwidth is a constant: same gradient as with sigma^2 passed as a plain number.
    sig = np_bandwidth(np.concatenate([x.detach().numpy(), y.detach().numpy()]))
    x2, y2 = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    z = torch.cat([x2, y2])
    k = gaussian_kernels(z, z, MULTS, sigma2=sig)
    manual = k[:6, :6].mean() + k[6:, 6:].mean() - 2 * k[:6, 6:].mean()
    assert manual.item() == pytest.approx(loss.item(), rel=1e-10)
    manual.backward()
    # (NumPy's comparison: torch.testing's first call costs ~1 s of lazy imports.)
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(y.grad.numpy(), y2.grad.numpy(), rtol=1e-10, atol=1e-14)
    # Identical rows (zero distances, zero bandwidth) stay finite.
    c = torch.ones(4, 3, requires_grad=True)
    out = mk_mmd(c, torch.ones(4, 3))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(c.grad).all()


def test_mk_mmd_half_precision_is_computed_in_float32() -> None:
    x, y = torch.randn(8, 4), torch.randn(8, 4) + 1
    got = mk_mmd(x.half(), y.half())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(mk_mmd(x.half().float(), y.half().float()).item())


# --------------------------------------------------------------------------- JMMD


def test_jmmd_one_layer_equals_mk_mmd() -> None:
    x, y = t64(rng(11).normal(size=(6, 3))), t64(rng(12).normal(size=(8, 3)) + 0.3)
    assert jmmd([x], [y]).item() == pytest.approx(mk_mmd(x, y).item(), rel=1e-12)
    x4, y4 = x[:6], y[:6]
    assert jmmd([x4], [y4], linear=True).item() == pytest.approx(
        mk_mmd(x4, y4, linear=True).item(), rel=1e-12
    )


def test_jmmd_two_layers_matches_loops() -> None:
    r = rng(13)
    f_s, f_t = r.normal(size=(6, 4)), r.normal(size=(6, 4)) + 0.5
    p_s, p_t = np_softmax(r.normal(size=(6, 3))), np_softmax(r.normal(size=(6, 3)) * 2)
    xs, ys = [t64(f_s), t64(p_s)], [t64(f_t), t64(p_t)]
    want = np_joint_mmd([f_s, p_s], [f_t, p_t], [MULTS, MULTS])
    assert jmmd(xs, ys).item() == pytest.approx(want, rel=1e-10)
    per_layer = [(0.5, 1.0, 2.0), (1.0,)]
    want = np_joint_mmd([f_s, p_s], [f_t, p_t], per_layer)
    assert jmmd(xs, ys, kernel_multipliers=per_layer).item() == pytest.approx(want, rel=1e-10)
    want_lin = np_joint_mmd_linear([f_s, p_s], [f_t, p_t], per_layer)
    got_lin = jmmd(xs, ys, kernel_multipliers=per_layer, linear=True).item()
    assert got_lin == pytest.approx(want_lin, rel=1e-10)


def test_jmmd_properties_and_gradients() -> None:
    r = rng(14)
    f_s = t64(r.normal(size=(6, 4)), grad=True)
    f_t = t64(r.normal(size=(7, 4)) + 1)
    # A layer that is the same constant for every sample has kernel 1: the product is unchanged.
    const_s, const_t = torch.full((6, 2), 0.5, dtype=torch.float64), torch.full((7, 2), 0.5,
                                                                                 dtype=torch.float64)
    both = jmmd([f_s, const_s], [f_t, const_t])
    assert both.item() == pytest.approx(mk_mmd(f_s, f_t).item(), rel=1e-12)
    # Identical batches in every layer: 0.
    assert abs(jmmd([f_s, f_s], [f_s, f_s]).item()) < 1e-12
    logits = t64(r.normal(size=(6, 3)), grad=True)
    loss = jmmd([f_s, logits.softmax(1)], [f_t, t64(np_softmax(r.normal(size=(7, 3))))])
    loss.backward()
    assert f_s.grad is not None and logits.grad is not None
    assert torch.isfinite(f_s.grad).all() and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


# --------------------------------------------------------------------------- CORAL


@pytest.mark.parametrize("ns,nt,d", [(5, 5, 3), (4, 9, 2), (2, 3, 5)])
def test_coral_matches_numpy_cov(ns: int, nt: int, d: int) -> None:
    r = rng(15)
    x, y = r.normal(size=(ns, d)), r.normal(size=(nt, d)) * 2
    cs, ct = np.cov(x, rowvar=False, ddof=1), np.cov(y, rowvar=False, ddof=1)
    want = float(np.sum((np.atleast_2d(cs) - np.atleast_2d(ct)) ** 2)) / (4 * d * d)
    assert coral_loss(t64(x), t64(y)).item() == pytest.approx(want, rel=1e-10)


def test_coral_properties() -> None:
    x = t64(rng(16).normal(size=(10, 3)), grad=True)
    # Invariant to a shift (covariances only), 0 against itself, grows with a target scaling.
    assert coral_loss(x, x + 5.0).item() == pytest.approx(0.0, abs=1e-12)
    y = t64(rng(17).normal(size=(12, 3)))
    values = [coral_loss(x, y * s).item() for s in (1.0, 2.0, 3.0)]
    assert values[0] < values[1] < values[2]
    coral_loss(x, y * 2).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- AFN, BSP


def test_afn_value_and_gradient() -> None:
    h = rng(18).normal(size=(5, 3))
    h[2] = 0.0  # a zero row must not give NaN gradients
    x = t64(h, grad=True)
    loss = afn_loss(x, radius_step=0.7)
    assert loss.item() == pytest.approx(0.7**2)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    want = np.zeros_like(h)
    for i in range(len(h)):
        norm = np.linalg.norm(h[i])
        if norm > 0:
            want[i] = -2 * 0.7 * h[i] / norm / len(h)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-10, atol=1e-14)
    # A gradient step enlarges every non-zero norm.
    before = np.linalg.norm(h, axis=1)
    after = np.linalg.norm(h - 0.1 * x.grad.numpy(), axis=1)
    assert np.all(after[before > 0] > before[before > 0])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_bsp_matches_numpy_svd(k: int) -> None:
    r = rng(19)
    x, y = r.normal(size=(6, 4)), r.normal(size=(3, 4)) * 3
    want = sum(float(np.sum(np.linalg.svd(a, compute_uv=False)[:k] ** 2)) for a in (x, y))
    xs = t64(x, grad=True)
    loss = bsp_loss(xs, t64(y), k=k)
    assert loss.item() == pytest.approx(want, rel=1e-10)
    loss.backward()
    assert torch.isfinite(xs.grad).all()
    # k = 1: the largest squared singular value is the top eigenvalue of X^T X.
    if k == 1:
        top = np.linalg.eigvalsh(x.T @ x)[-1]
        assert bsp_loss(t64(x), t64(np.zeros((3, 4))), k=1).item() == pytest.approx(top)


# ---------------------------------------------------------------------------------- MCC, BNM


def np_mcc(z: np.ndarray, temperature: float) -> float:
    p = np_softmax(z / temperature)
    n, c = p.shape
    h = np.array([-sum(p[i, j] * math.log(p[i, j]) for j in range(c)) for i in range(n)])
    w = 1 + np.exp(-h)
    w = n * w / w.sum()
    conf = np.zeros((c, c))
    for i in range(n):
        for a in range(c):
            for b in range(c):
                conf[a, b] += w[i] * p[i, a] * p[i, b]
    for a in range(c):
        conf[a] /= conf[a].sum()
    return float((conf.sum() - np.trace(conf)) / c)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_mcc_matches_numpy(temperature: float) -> None:
    z = rng(21).normal(size=(7, 4)) * 2
    x = t64(z, grad=True)
    loss = mcc_loss(x, temperature=temperature)
    assert loss.item() == pytest.approx(np_mcc(z, temperature), rel=1e-10)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_mcc_limits() -> None:
    # Uniform predictions: every row of C is 1/K, so (K - 1) / K.
    assert mcc_loss(torch.zeros(5, 4)).item() == pytest.approx(3 / 4)
    # Confident, one sample per class: almost no confusion.
    assert mcc_loss(30.0 * torch.eye(4)).item() < 1e-4
    # A class that underflows to probability 0 everywhere does not give NaN.
    z = torch.tensor([[1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0]])
    z[:, 2] = -1000.0
    assert math.isfinite(mcc_loss(z).item())


def test_bnm_matches_numpy_and_limits() -> None:
    z = rng(22).normal(size=(6, 4)) * 2
    x = t64(z, grad=True)
    loss = bnm_loss(x)
    want = -np.linalg.norm(np_softmax(z), "nuc") / 6
    assert loss.item() == pytest.approx(want, rel=1e-10)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # Confident and diverse -> -1; collapsed onto one class -> -1 / sqrt(N) (rank one).
    assert bnm_loss(50.0 * torch.eye(4, dtype=torch.float64)).item() == pytest.approx(-1.0)
    collapsed = torch.zeros(4, 3, dtype=torch.float64)
    collapsed[:, 0] = 50.0
    assert bnm_loss(collapsed).item() == pytest.approx(-0.5)
    # Uniform predictions (rank one, equal singular vector): equal gradients, still finite.
    u = torch.zeros(4, 3, requires_grad=True)
    bnm_loss(u).backward()
    assert torch.isfinite(u.grad).all()


# --------------------------------------------------------------------------- bad input


def f(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: mk_mmd(f(4, 3), f(4, 5)), r"same feature width.*\(4, 3\).*\(4, 5\)"),
        (lambda: mk_mmd(f(1, 3), f(4, 3)), r"at least 2 rows.*\(1, 3\)"),
        (lambda: mk_mmd(f(4, 3, 2), f(4, 3, 2)), r"N x D.*\(4, 3, 2\)"),
        (lambda: mk_mmd(f(4), f(4)), r"N x D.*\(4,\)"),
        (lambda: mk_mmd(f(4, 3), f(6, 3), linear=True), r"same even number.*\(4, 3\).*\(6, 3\)"),
        (lambda: mk_mmd(f(5, 3), f(5, 3), linear=True), r"same even number"),
        (lambda: mk_mmd(f(4, 3), f(4, 3), kernel_multipliers=()), r"non-empty list"),
        (lambda: mk_mmd(f(4, 3), f(4, 3), kernel_multipliers=(1.0, -2.0)), r"multiplier"),
        (lambda: mk_mmd(torch.zeros(4, 3, dtype=torch.long), f(4, 3)), r"floating-point"),
        (lambda: gaussian_kernels(f(2, 3), f(2, 4)), r"same width.*\(2, 3\).*\(2, 4\)"),
        (lambda: jmmd([], []), r"non-empty list"),
        (lambda: jmmd(f(4, 3), f(4, 3)), r"non-empty list"),
        (lambda: jmmd([f(4, 3)], [f(4, 3), f(4, 2)]), r"as many source as target layers"),
        (lambda: jmmd([f(4, 3), f(5, 2)], [f(4, 3), f(4, 2)]),
         r"same number of rows in every source layer.*\(4, 3\), \(5, 2\)"),
        (lambda: jmmd([f(4, 3), f(4, 2)], [f(4, 3), f(4, 5)]),
         r"layer 1.*same feature width.*\(4, 2\).*\(4, 5\)"),
        (lambda: jmmd([f(4, 3), f(4, 2)], [f(4, 3), f(4, 2)], kernel_multipliers=[[1.0]]),
         r"1 per-layer entries for 2 layers"),
        (lambda: jmmd([f(4, 3)], [f(6, 3)], linear=True), r"same even number"),
        (lambda: coral_loss(f(4, 3), f(4, 2)), r"same feature width.*\(4, 3\).*\(4, 2\)"),
        (lambda: coral_loss(f(4, 3), f(1, 3)), r"at least 2 rows in target.*\(1, 3\)"),
        (lambda: afn_loss(f(4)), r"N x D.*\(4,\)"),
        (lambda: afn_loss(f(4, 3), radius_step=-1.0), r"radius_step"),
        (lambda: bsp_loss(f(4, 3), f(4, 2)), r"same feature width"),
        (lambda: bsp_loss(f(4, 3), f(2, 3), k=3), r"k=3 exceeds.*\(2\)"),
        (lambda: bsp_loss(f(4, 3), f(4, 3), k=0), r"positive integer"),
        (lambda: mcc_loss(f(4, 1)), r"at least 2 classes.*\(4, 1\)"),
        (lambda: mcc_loss(f(4, 3), temperature=0.0), r"temperature"),
        (lambda: mcc_loss(f(4, 3, 2)), r"N x C.*\(4, 3, 2\)"),
        (lambda: bnm_loss(f(0, 3)), r"at least 1 rows.*\(0, 3\)"),
    ],
)
def test_bad_input_raises_config_error(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()
