"""The distillation-zoo losses against independent NumPy computations written with loops."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

from transferkit.errors import ConfigError
from transferkit.losses import (
    at_loss,
    attention_map,
    cc_loss,
    cc_matrix,
    dist_loss,
    dist_parts,
    dkd_loss,
    dkd_parts,
    hint_loss,
    match_spatial,
    nst_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    soft_target_loss,
    sp_loss,
    standardize_logits,
    standardized_kd_loss,
)

RNG = np.random.default_rng(1234)


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def softmax_row(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(p[k] * math.log(p[k] / q[k]) for k in range(len(p)) if p[k] > 0))


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float(np.dot(v, v)))


# ---------------------------------------------------------------- logit standardisation


@pytest.mark.parametrize("unbiased", [True, False])
def test_standardize_logits_matches_loops(unbiased: bool) -> None:
    z = RNG.normal(size=(4, 5)) * 3 + 1
    expected = np.empty_like(z)
    for i in range(4):
        m = sum(z[i]) / 5
        var = sum((v - m) ** 2 for v in z[i]) / (4 if unbiased else 5)
        expected[i] = (z[i] - m) / (math.sqrt(var) + 1e-7)
    got = standardize_logits(t64(z), unbiased=unbiased).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_standardized_kd_matches_numpy_and_is_shift_and_scale_invariant() -> None:
    s, t = RNG.normal(size=(5, 4)) * 2, RNG.normal(size=(5, 4)) * 5
    temp = 2.0

    def z_score(row: np.ndarray) -> np.ndarray:
        return (row - row.mean()) / (row.std(ddof=1) + 1e-7)

    expected = temp**2 * np.mean(
        [kl(softmax_row(z_score(t[i]) / temp), softmax_row(z_score(s[i]) / temp)) for i in range(5)]
    )
    base = standardized_kd_loss(t64(s), t64(t), temp).item()
    assert base == pytest.approx(expected, rel=1e-10)
    shift = RNG.normal(size=(5, 1)) * 10
    for teacher in (t + shift, t * 3.7, t * 0.2 - 4):
        got = standardized_kd_loss(t64(s), t64(teacher), temp).item()
        assert got == pytest.approx(base, rel=1e-6)
    assert standardized_kd_loss(t64(s + 3), t64(t), temp).item() == pytest.approx(base, rel=1e-9)
    # equal up to shift and scale: zero
    assert standardized_kd_loss(t64(t), t64(2 * t + 1), temp).item() == pytest.approx(0, abs=1e-9)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        standardize_logits(torch.zeros(3, 1))


# ---------------------------------------------------------------- DKD


def np_dkd_parts(s: np.ndarray, t: np.ndarray, y: np.ndarray, temp: float) -> tuple[float, float]:
    n, c = s.shape
    tckd = nckd = 0.0
    for i in range(n):
        ps, pt = softmax_row(s[i] / temp), softmax_row(t[i] / temp)
        tckd += kl(np.array([pt[y[i]], 1 - pt[y[i]]]), np.array([ps[y[i]], 1 - ps[y[i]]]))
        others = [k for k in range(c) if k != y[i]]
        nckd += kl(softmax_row(t[i, others] / temp), softmax_row(s[i, others] / temp))
    return temp**2 * tckd / n, temp**2 * nckd / n


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_dkd_parts_match_numpy(temp: float) -> None:
    s, t = RNG.normal(size=(6, 5)) * 3, RNG.normal(size=(6, 5)) * 3
    y = np.array([0, 4, 2, 2, 1, 3])
    tckd, nckd = dkd_parts(t64(s), t64(t), torch.tensor(y), temp)
    exp_t, exp_n = np_dkd_parts(s, t, y, temp)
    assert tckd.item() == pytest.approx(exp_t, rel=1e-10)
    assert nckd.item() == pytest.approx(exp_n, rel=1e-10)
    # the reference's masking (subtract 1000 from the target's z / T) gives the same NCKD
    onehot = np.eye(5)[y]
    masked_t, masked_s = t / temp - 1000 * onehot, s / temp - 1000 * onehot
    ref = np.mean([kl(softmax_row(masked_t[i]), softmax_row(masked_s[i])) for i in range(6)])
    assert nckd.item() == pytest.approx(temp**2 * ref, rel=1e-9)


def test_dkd_loss_combines_parts_and_decomposes_kd() -> None:
    s, t = RNG.normal(size=(5, 4)) * 2, RNG.normal(size=(5, 4)) * 2
    y = torch.tensor([3, 0, 1, 1, 2], dtype=torch.int32)
    tckd, nckd = dkd_parts(t64(s), t64(t), y, 4.0)
    whole = dkd_loss(t64(s), t64(t), y, alpha=0.7, beta=3.0, temperature=4.0)
    assert whole.item() == pytest.approx(0.7 * tckd.item() + 3.0 * nckd.item(), rel=1e-12)
    assert dkd_loss(t64(s), t64(t), y, 2.0, 0.0).item() == pytest.approx(2 * tckd.item(), rel=1e-12)
    assert dkd_loss(t64(s), t64(t), y, 0.0, 1.0).item() == pytest.approx(nckd.item(), rel=1e-12)
    # per sample, KD = TCKD + (1 - p^t_y) * NCKD (Zhao et al., Eq. 7)
    for i in range(5):
        si, ti, yi = t64(s[i : i + 1]), t64(t[i : i + 1]), y[i : i + 1]
        tc, nc = dkd_parts(si, ti, yi, 2.0)
        pt = softmax_row(t[i] / 2.0)[int(y[i])]
        kd = soft_target_loss(si, ti, 2.0).item()
        assert kd == pytest.approx(tc.item() + (1 - pt) * nc.item(), rel=1e-10)


def test_dkd_standardize_option_and_properties() -> None:
    s, t = RNG.normal(size=(4, 5)), RNG.normal(size=(4, 5)) * 6
    y = torch.tensor([0, 1, 2, 3])
    got = dkd_loss(t64(s), t64(t), y, standardize=True, temperature=2.0)
    ref = dkd_loss(standardize_logits(t64(s)), standardize_logits(t64(t)), y, temperature=2.0)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    assert dkd_loss(t64(t), t64(t), y).item() == pytest.approx(0, abs=1e-12)
    # stable where p_y rounds to 1 (the reference would take log(0) for 1 - p_y)
    big = torch.tensor([[500.0, 0.0, -3.0]], requires_grad=True)
    loss = dkd_loss(big, torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]), temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and big.grad is not None and torch.isfinite(big.grad).all()


def test_dkd_errors() -> None:
    z = torch.zeros(3, 4)
    with pytest.raises(ConfigError, match="differ"):
        dkd_loss(z, torch.zeros(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match=r"in \[0, 4\)"):
        dkd_loss(z, z, torch.tensor([0, 1, 4]))
    with pytest.raises(ConfigError, match="integer class indices"):
        dkd_loss(z, z, torch.zeros(3, 4))
    with pytest.raises(ConfigError, match=r"shape \(3,\)"):
        dkd_loss(z, z, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="at least 2 classes"):
        dkd_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.tensor([0, 0, 0]))
    with pytest.raises(ConfigError, match="temperature"):
        dkd_loss(z, z, torch.tensor([0, 1, 2]), temperature=0)
    with pytest.raises(ConfigError, match="beta"):
        dkd_loss(z, z, torch.tensor([0, 1, 2]), beta=-1)


# ---------------------------------------------------------------- DIST


def np_dist_parts(s: np.ndarray, t: np.ndarray, temp: float) -> tuple[float, float]:
    ps = np.array([softmax_row(r / temp) for r in s])
    pt = np.array([softmax_row(r / temp) for r in t])
    inter = 1 - np.mean([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(len(s))])
    intra = 1 - np.mean([np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(s.shape[1])])
    return temp**2 * inter, temp**2 * intra


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_dist_matches_numpy(temp: float) -> None:
    s, t = RNG.normal(size=(6, 5)) * 2, RNG.normal(size=(6, 5)) * 2
    inter, intra = dist_parts(t64(s), t64(t), temp, eps=0.0)
    exp_inter, exp_intra = np_dist_parts(s, t, temp)
    assert inter.item() == pytest.approx(exp_inter, rel=1e-10)
    assert intra.item() == pytest.approx(exp_intra, rel=1e-10)
    whole = dist_loss(t64(s), t64(t), beta=2.0, gamma=0.5, temperature=temp)
    assert whole.item() == pytest.approx(2 * exp_inter + 0.5 * exp_intra, rel=1e-5)


def test_dist_zero_for_perfectly_correlated_and_errors() -> None:
    t = RNG.normal(size=(5, 4)) * 2
    # adding a constant per row leaves the probabilities unchanged: correlation 1 everywhere
    s = t + RNG.normal(size=(5, 1)) * 5
    assert dist_loss(t64(s), t64(t)).item() == pytest.approx(0, abs=1e-6)
    assert dist_loss(t64(s), t64(t), eps=0.0).item() == pytest.approx(0, abs=1e-12)
    with pytest.raises(ConfigError, match="at least 2 samples"):
        dist_loss(torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(ConfigError, match="differ"):
        dist_loss(torch.zeros(3, 4), torch.zeros(4, 4))
    with pytest.raises(ConfigError, match="gamma"):
        dist_loss(torch.zeros(3, 4), torch.zeros(3, 4), gamma=float("nan"))


# ---------------------------------------------------------------- RKD


def np_distances(e: np.ndarray) -> np.ndarray:
    n = len(e)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                d[i, j] = math.sqrt(sum((e[i] - e[j]) ** 2))
    return d / (d.sum() / (n * (n - 1)))


def np_rkd_distance(s: np.ndarray, t: np.ndarray) -> float:
    ds, dt = np_distances(s), np_distances(t)
    n = len(s)
    return sum(huber(ds[i, j] - dt[i, j]) for i in range(n) for j in range(n)) / n**2


def np_rkd_angle(s: np.ndarray, t: np.ndarray) -> float:
    n = len(s)

    def cos(e: np.ndarray, i: int, j: int, k: int) -> float:
        if i == j or k == j:
            return 0.0
        return float(np.dot(unit(e[i] - e[j]), unit(e[k] - e[j])))

    total = 0.0
    for i in range(n):
        for j in range(n):
            for k in range(n):
                total += huber(cos(s, i, j, k) - cos(t, i, j, k))
    return total / n**3


def test_rkd_losses_match_loops() -> None:
    s = RNG.normal(size=(5, 3))
    t = RNG.normal(size=(5, 2, 2))  # another width, flattened
    t[0] *= 30  # an outlier: some distance differences fall in Huber's linear part
    tf = t.reshape(5, 4)
    d_exp, a_exp = np_rkd_distance(s, tf), np_rkd_angle(s, tf)
    assert np.abs(np_distances(s) - np_distances(tf)).max() > 1
    assert rkd_distance_loss(t64(s), t64(t)).item() == pytest.approx(d_exp, rel=1e-10)
    assert rkd_angle_loss(t64(s), t64(t)).item() == pytest.approx(a_exp, rel=1e-10)
    got = rkd_loss(t64(s), t64(t)).item()
    assert got == pytest.approx(25 * d_exp + 50 * a_exp, rel=1e-10)
    assert rkd_loss(t64(s), t64(t), 1.0, 0.0).item() == pytest.approx(d_exp, rel=1e-10)


def test_rkd_invariances_and_errors() -> None:
    e = RNG.normal(size=(4, 3))
    # distances are scale-normalised and angles are similarity invariant
    moved = 3.0 * e + RNG.normal(size=(1, 3))
    assert rkd_loss(t64(e), t64(moved)).item() == pytest.approx(0, abs=1e-12)
    with pytest.raises(ConfigError, match="at least 2"):
        rkd_distance_loss(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="angle_weight"):
        rkd_loss(torch.zeros(3, 3), torch.zeros(3, 3), angle_weight=-1)


# ---------------------------------------------------------------- SP


def test_sp_loss_matches_loops() -> None:
    fs, ft = RNG.normal(size=(4, 3, 2, 2)), RNG.normal(size=(4, 5, 1, 3))
    a, b = fs.reshape(4, -1), ft.reshape(4, -1)

    def gram_rows(f: np.ndarray) -> np.ndarray:
        g = np.array([[sum(f[i] * f[j]) for j in range(4)] for i in range(4)])
        return np.array([row / math.sqrt(sum(row**2)) for row in g])

    diff = gram_rows(a) - gram_rows(b)
    expected = sum(diff[i, j] ** 2 for i in range(4) for j in range(4)) / 16
    assert sp_loss(t64(fs), t64(ft)).item() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- CC


def test_cc_matrix_is_taylor_of_gaussian_kernel() -> None:
    e = RNG.normal(size=(5, 4))
    gamma = 0.4
    x = np.array([unit(r) for r in e])
    taylor = np.zeros((5, 5))
    exact = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            dot = float(np.dot(x[i], x[j]))
            taylor[i, j] = sum(
                math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * dot**p
                for p in range(3)
            )
            exact[i, j] = math.exp(-gamma * sum((x[i] - x[j]) ** 2))
    np.testing.assert_allclose(cc_matrix(t64(e), gamma, 2).numpy(), taylor, rtol=1e-12)
    np.testing.assert_allclose(cc_matrix(t64(e), gamma, 25).numpy(), exact, rtol=1e-10)


def test_cc_loss_matches_loops_and_errors() -> None:
    s, t = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 3))

    def corr(e: np.ndarray) -> np.ndarray:
        x = [unit(r) for r in e]
        k = [
            [math.exp(-0.8) * (1 + 0.8 * np.dot(a, b) + 0.32 * np.dot(a, b) ** 2) for b in x]
            for a in x
        ]
        return np.array(k)

    diff = corr(s) - corr(t)
    expected = sum(diff[i, j] ** 2 for i in range(6) for j in range(6)) / 36
    assert cc_loss(t64(s), t64(t)).item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ConfigError, match="same embedding width"):
        cc_loss(torch.zeros(4, 3), torch.zeros(4, 5))
    with pytest.raises(ConfigError, match="p_order"):
        cc_loss(torch.zeros(4, 3), torch.zeros(4, 3), p_order=0)
    with pytest.raises(ConfigError, match="gamma"):
        cc_loss(torch.zeros(4, 3), torch.zeros(4, 3), gamma=0)


# ---------------------------------------------------------------- PKT


def test_pkt_loss_matches_loops() -> None:
    s, t = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 6))
    eps = 1e-7

    def cond(e: np.ndarray) -> np.ndarray:
        c = np.array([[(np.dot(unit(a), unit(b)) + 1) / 2 for b in e] for a in e])
        return np.array([row / sum(row) for row in c])

    ps, pt = cond(s), cond(t)
    terms = [
        pt[i, j] * math.log((pt[i, j] + eps) / (ps[i, j] + eps)) for i in range(5) for j in range(5)
    ]
    expected = sum(terms) / 25
    assert pkt_loss(t64(s), t64(t)).item() == pytest.approx(expected, rel=1e-6)
    assert pkt_loss(t64(s), t64(t), eps=0.0).item() == pytest.approx(
        sum(kl(pt[i], ps[i]) for i in range(5)) / 25, rel=1e-10
    )


# ---------------------------------------------------------------- attention transfer


def np_adaptive_pool(f: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    n, c, h, w = f.shape
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
            out[:, :, i, j] = f[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def np_attention(f: np.ndarray, p: float) -> np.ndarray:
    n, c, h, w = f.shape
    q = np.zeros((n, h * w))
    for i in range(n):
        for y in range(h):
            for x in range(w):
                q[i, y * w + x] = sum(abs(f[i, k, y, x]) ** p for k in range(c)) / c
        q[i] /= math.sqrt(sum(q[i] ** 2))
    return q


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_attention_map_matches_loops(p: float) -> None:
    f = RNG.normal(size=(4, 3, 2, 3))
    np.testing.assert_allclose(attention_map(t64(f), p).numpy(), np_attention(f, p), rtol=1e-12)


@pytest.mark.parametrize(
    ("s_shape", "t_shape", "size"),
    [
        ((4, 3, 3, 3), (4, 5, 3, 3), (3, 3)),
        ((4, 3, 5, 5), (4, 5, 3, 3), (3, 3)),  # student pooled, non-divisible windows
        ((4, 3, 2, 3), (4, 4, 4, 2), (2, 2)),  # each pooled along one side
    ],
)
def test_at_loss_matches_loops(s_shape: tuple, t_shape: tuple, size: tuple) -> None:
    fs, ft = RNG.normal(size=s_shape), RNG.normal(size=t_shape)
    a_s = np_attention(np_adaptive_pool(fs, *size), 2.0)
    a_t = np_attention(np_adaptive_pool(ft, *size), 2.0)
    n, k = a_s.shape
    expected = sum((a_s[i, j] - a_t[i, j]) ** 2 for i in range(n) for j in range(k)) / (n * k)
    assert at_loss(t64(fs), t64(ft)).item() == pytest.approx(expected, rel=1e-10)
    ps, pt = match_spatial(t64(fs), t64(ft))
    assert ps.shape[2:] == pt.shape[2:] == size


# ---------------------------------------------------------------- NST


def test_nst_loss_matches_loops() -> None:
    fs, ft = RNG.normal(size=(4, 3, 4, 4)), RNG.normal(size=(4, 5, 2, 2))
    fs_p = np_adaptive_pool(fs, 2, 2)
    total = 0.0
    for i in range(4):
        s = [unit(fs_p[i, c].ravel()) for c in range(3)]
        t = [unit(ft[i, c].ravel()) for c in range(5)]

        def mean_k(a: list, b: list) -> float:
            return sum(float(np.dot(x, y)) ** 2 for x in a for y in b) / (len(a) * len(b))

        total += mean_k(s, s) + mean_k(t, t) - 2 * mean_k(s, t)
    assert nst_loss(t64(fs), t64(ft)).item() == pytest.approx(total / 4, rel=1e-10)


def test_hint_loss_matches_numpy_and_errors() -> None:
    fs, ft = RNG.normal(size=(4, 3, 2, 2)), RNG.normal(size=(4, 3, 2, 2))
    assert hint_loss(t64(fs), t64(ft)).item() == pytest.approx(np.mean((fs - ft) ** 2), rel=1e-12)
    with pytest.raises(ConfigError, match="regress"):
        hint_loss(torch.zeros(4, 3, 2, 2), torch.zeros(4, 5, 2, 2))


# ---------------------------------------------------------------- common properties

LABELS = torch.tensor([0, 2, 1, 3])

# name -> (loss(student, teacher), student shape, teacher shape)
CASES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tuple, tuple]] = {
    "standardized_kd": (standardized_kd_loss, (4, 5), (4, 5)),
    "dkd": (lambda s, t: dkd_loss(s, t, LABELS[: s.shape[0]]), (4, 5), (4, 5)),
    "dist": (dist_loss, (4, 5), (4, 5)),
    "rkd": (rkd_loss, (4, 3), (4, 6)),
    "sp": (sp_loss, (4, 3, 2, 2), (4, 5, 2, 2)),
    "cc": (cc_loss, (4, 3), (4, 3)),
    "pkt": (pkt_loss, (4, 3), (4, 6)),
    "at": (at_loss, (4, 3, 4, 4), (4, 5, 2, 2)),
    "nst": (nst_loss, (4, 3, 2, 2), (4, 5, 2, 2)),
    "hint": (hint_loss, (4, 3, 2, 2), (4, 3, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_for_equal_inputs(name: str) -> None:
    loss, shape, _ = CASES[name]
    x = t64(RNG.normal(size=shape))
    assert loss(x, x.clone()).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_are_finite(name: str) -> None:
    loss, s_shape, t_shape = CASES[name]
    for dtype in (torch.float32, torch.float64):
        s = torch.randn(s_shape, dtype=dtype, requires_grad=True)
        t = torch.randn(t_shape, dtype=dtype)
        value = loss(s, t)
        value.backward()
        assert value.dim() == 0 and torch.isfinite(value)
        assert s.grad is not None and torch.isfinite(s.grad).all()
        assert s.grad.abs().sum() > 0


def test_relational_gradients_finite_with_duplicate_samples() -> None:
    base = torch.randn(3, 4, dtype=torch.float64)
    s = torch.cat([base, base[:1]]).requires_grad_(True)  # rows 0 and 3 coincide
    t = torch.randn(4, 5, dtype=torch.float64)
    for loss in (rkd_loss, sp_loss, pkt_loss):
        s.grad = None
        loss(s, t).backward()
        assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_mismatched_batch_raises(name: str) -> None:
    loss, s_shape, t_shape = CASES[name]
    s = torch.zeros(s_shape)
    t = torch.zeros((s_shape[0] + 1, *t_shape[1:]))
    with pytest.raises(ConfigError, match=re.escape(str(tuple(t.shape)))):
        loss(s, t)


def test_feature_losses_need_maps() -> None:
    with pytest.raises(ConfigError, match=r"N x C x H x W"):
        at_loss(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ConfigError, match=r"N x C x H x W"):
        nst_loss(torch.zeros(4, 3, 2), torch.zeros(4, 3, 2, 2))
    with pytest.raises(ConfigError, match=r"N x D"):
        sp_loss(torch.zeros(4), torch.zeros(4))


def test_half_precision_handles_duplicates_and_dead_channels() -> None:
    # float16 rounds 1e-12 to 0: zero vectors must still normalise to 0, not NaN
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(4, 3, generator=gen).half()
    e[3] = e[0]
    e.requires_grad_(True)
    t = torch.randn(4, 5, generator=gen).half()
    maps = torch.randn(4, 3, 4, 4, generator=gen).half().relu()
    maps[:, 1] = 0
    maps.requires_grad_(True)
    teacher_maps = torch.randn(4, 5, 2, 2, generator=gen).half()
    for x, y, loss in [
        (e, t, rkd_loss),
        (e, t, sp_loss),
        (e, t, pkt_loss),
        (maps, teacher_maps, at_loss),
        (maps, teacher_maps, nst_loss),
    ]:
        x.grad = None
        value = loss(x, y)
        value.backward()
        assert torch.isfinite(value) and x.grad is not None and torch.isfinite(x.grad).all()
