"""CDAN, MDD, MCD and self-training losses, checked against NumPy computations written out by
hand and against properties that a wrong implementation would break."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.errors import ConfigError
from transferkit.losses.adversarial import (
    RandomizedMultilinear,
    classifier_discrepancy,
    entropy_weights,
    mdd_loss,
    multilinear_map,
    weighted_domain_loss,
)
from transferkit.losses.domain import domain_adversarial_loss
from transferkit.losses.selftraining import (
    confident_pseudo_labels,
    entropy,
    fixmatch_loss,
    information_maximization,
    mean_entropy,
    shot_cluster_labels,
)

RNG = np.random.default_rng(0)


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_entropy_rows(p: np.ndarray) -> np.ndarray:
    out = np.zeros(p.shape[0])
    for i, row in enumerate(p):
        for v in row:
            if v > 0:
                out[i] -= v * math.log(v)
    return out


def np_bce(z: float, y: float) -> float:
    s = 1.0 / (1.0 + math.exp(-z))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


# ------------------------------------------------------------------- CDAN conditioning


def test_multilinear_map_is_flattened_outer_product() -> None:
    f = RNG.normal(size=(4, 3))
    g = np_softmax(RNG.normal(size=(4, 5)))
    out = multilinear_map(t64(f), t64(g)).numpy()
    assert out.shape == (4, 15)
    for n in range(4):
        np.testing.assert_allclose(out[n], np.outer(f[n], g[n]).ravel(), rtol=1e-12)
        for i in range(3):
            for k in range(5):
                assert out[n, i * 5 + k] == pytest.approx(f[n, i] * g[n, k], rel=1e-12)
    with pytest.raises(ConfigError, match=r"different batch sizes"):
        multilinear_map(t64(f), t64(g[:3]))
    with pytest.raises(ConfigError, match=r"2-d.*\(4,\)"):
        multilinear_map(t64(f[:, 0]), t64(g))


def test_randomized_multilinear_matches_numpy_and_is_deterministic() -> None:
    f = RNG.normal(size=(5, 3))
    g = np_softmax(RNG.normal(size=(5, 4)))
    m = RandomizedMultilinear(3, 4, output_dim=16, seed=7)
    out = m(t64(f), t64(g))
    assert out.shape == (5, 16) and out.dtype == torch.float64
    r_f, r_g = m.r_f.double().numpy(), m.r_g.double().numpy()
    assert r_f.shape == (3, 16) and r_g.shape == (4, 16)
    ref = np.zeros((5, 16))
    for n in range(5):
        for j in range(16):
            ref[n, j] = (f[n] @ r_f[:, j]) * (g[n] @ r_g[:, j]) / 4.0
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-9)

    same = RandomizedMultilinear(3, 4, output_dim=16, seed=7)
    other = RandomizedMultilinear(3, 4, output_dim=16, seed=8)
    assert torch.equal(same(t64(f), t64(g)), out)
    assert not torch.allclose(other(t64(f), t64(g)), out)
    # Fixed buffers: saved in the state dict, not trainable, restored by load_state_dict.
    assert set(m.state_dict()) == {"r_f", "r_g"}
    assert list(m.parameters()) == []
    other.load_state_dict(m.state_dict())
    assert torch.equal(other(t64(f), t64(g)), out)
    assert "output_dim=16" in repr(m)

    with pytest.raises(ConfigError, match=r"features N x 3 .*\(5, 2\)"):
        m(t64(f[:, :2]), t64(g))
    with pytest.raises(ConfigError, match="output_dim"):
        RandomizedMultilinear(3, 4, output_dim=0)


def test_randomized_multilinear_preserves_inner_products_in_expectation() -> None:
    f = RNG.normal(size=(4, 3))
    g = np_softmax(RNG.normal(size=(4, 2)) * 2)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    exact = multilinear_map(t64(f), t64(g))
    m = RandomizedMultilinear(3, 2, output_dim=100_000, seed=0)
    approx = m(t64(f), t64(g))
    gram_exact = (exact @ exact.T).numpy()
    np.testing.assert_allclose(gram_exact, (f @ f.T) * (g @ g.T), rtol=1e-12)
    # Each entry is a mean of 1e5 terms with variance <= 9: standard error <= 0.01.
    assert np.abs((approx @ approx.T).numpy() - gram_exact).max() < 0.05


def test_entropy_weights_match_numpy_and_favour_confident_rows() -> None:
    z = RNG.normal(size=(6, 4)) * 3
    z[0] = [20.0, 0.0, 0.0, 0.0]  # confident
    z[1] = 0.0  # uniform
    p = np_softmax(z)
    raw = 1.0 + np.exp(-np_entropy_rows(p))
    ref = raw * 6 / raw.sum()
    probs = t64(p).requires_grad_(True)
    w = entropy_weights(probs)
    assert not w.requires_grad
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-10)
    assert w.sum().item() == pytest.approx(6.0, rel=1e-12)
    assert w[0] > w[1] and w[0] == w.max() and w[1] == w.min()
    # Before normalisation: about 2 for one-hot rows, 1 + 1/C for uniform rows.
    assert raw[0] == pytest.approx(2.0, abs=1e-6) and raw[1] == pytest.approx(1.25)
    with pytest.raises(ConfigError, match="apply softmax"):
        entropy_weights(t64(z))
    with pytest.raises(ConfigError, match=r"2-d"):
        entropy_weights(t64(p[0]))


def test_weighted_domain_loss_unweighted_equals_dann_loss() -> None:
    s = t64(RNG.normal(size=7))
    t = t64(RNG.normal(size=(5, 1)))
    expected = domain_adversarial_loss(s, t)
    assert weighted_domain_loss(s, t).item() == pytest.approx(expected.item(), rel=1e-12)
    # Constant weights give the same weighted mean.
    const = weighted_domain_loss(s, t, torch.full((7,), 3.0), torch.full((5,), 0.5))
    assert const.item() == pytest.approx(expected.item(), rel=1e-12)


def test_weighted_domain_loss_matches_numpy() -> None:
    s, t = RNG.normal(size=6), RNG.normal(size=4)
    ws, wt = RNG.uniform(0.1, 2.0, size=6), RNG.uniform(0.1, 2.0, size=4)
    ref_s = sum(w * np_bce(z, 1.0) for z, w in zip(s, ws, strict=True)) / ws.sum()
    ref_t = sum(w * np_bce(z, 0.0) for z, w in zip(t, wt, strict=True)) / wt.sum()
    got = weighted_domain_loss(t64(s), t64(t), t64(ws), t64(wt))
    assert got.item() == pytest.approx(0.5 * (ref_s + ref_t), rel=1e-12)
    # Scaling one domain's weights changes nothing; only the source weighted: mixed case.
    scaled = weighted_domain_loss(t64(s), t64(t), t64(ws * 10), t64(wt))
    assert scaled.item() == pytest.approx(got.item(), rel=1e-12)
    half = weighted_domain_loss(t64(s), t64(t), source_weights=t64(ws))
    ref_t_plain = np.mean([np_bce(z, 0.0) for z in t])
    assert half.item() == pytest.approx(0.5 * (ref_s + ref_t_plain), rel=1e-12)
    # With CDAN+E weights (mean 1) it is the plain mean of w * BCE.
    pe = np_softmax(RNG.normal(size=(6, 3)))
    we = entropy_weights(t64(pe))
    plain = np.mean(we.numpy() * np.array([np_bce(z, 1.0) for z in s]))
    only_s = weighted_domain_loss(t64(s), t64(t), we, None).item()
    assert only_s == pytest.approx(0.5 * (plain + ref_t_plain), rel=1e-12)

    with pytest.raises(ConfigError, match=r"source weights \(5,\).*\(6,\)"):
        weighted_domain_loss(t64(s), t64(t), t64(ws[:5]))
    with pytest.raises(ConfigError, match=">= 0"):
        weighted_domain_loss(t64(s), t64(t), None, t64(-wt))
    with pytest.raises(ConfigError, match="at least one"):
        weighted_domain_loss(t64(s[:0]), t64(t))


# ----------------------------------------------------------------------------------- MDD


def np_mdd(sm, sa, tm, ta, margin):
    ps, pt = np_softmax(sa), np_softmax(ta)
    ce = np.mean([-math.log(ps[i, np.argmax(sm[i])]) for i in range(len(sm))])
    log_loss = np.mean([-math.log(1.0 - pt[j, np.argmax(tm[j])]) for j in range(len(tm))])
    return margin * ce + log_loss


def test_mdd_loss_matches_numpy_and_leaves_main_head_alone() -> None:
    sm, sa = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))
    tm, ta = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    main_s, main_t = t64(sm).requires_grad_(True), t64(tm).requires_grad_(True)
    adv_s, adv_t = t64(sa).requires_grad_(True), t64(ta).requires_grad_(True)
    loss = mdd_loss(main_s, adv_s, main_t, adv_t, margin=3.0)
    assert loss.item() == pytest.approx(np_mdd(sm, sa, tm, ta, 3.0), rel=1e-10)
    assert mdd_loss(t64(sm), t64(sa), t64(tm), t64(ta)).item() == pytest.approx(
        np_mdd(sm, sa, tm, ta, 4.0), rel=1e-10
    )
    loss.backward()
    assert main_s.grad is None and main_t.grad is None  # pseudo labels carry no gradient
    assert adv_s.grad is not None and adv_t.grad is not None


def test_mdd_loss_sign_convention_and_stability() -> None:
    # Main head: source says class 0, target says class 1.
    main_s = t64(np.array([[5.0, 0.0, 0.0]] * 2))
    main_t = t64(np.array([[0.0, 5.0, 0.0]] * 2))
    agree_s, disagree_s = main_s.clone(), t64(np.array([[0.0, 5.0, 0.0]] * 2))
    agree_t, disagree_t = main_t.clone(), t64(np.array([[5.0, 0.0, 0.0]] * 2))
    # The adversary minimises: agreeing on source and disagreeing on target is its optimum.
    best = mdd_loss(main_s, agree_s, main_t, disagree_t)
    worst = mdd_loss(main_s, disagree_s, main_t, agree_t)
    assert best.item() < 0.1 < worst.item()
    # Exact in log-space: an adversary certain of the pseudo label gives a large finite loss
    # (1e4) with a finite gradient, where log(1 - p) would be log(0).
    adv_t = t64(np.array([[0.0, 1e4, 0.0]])).requires_grad_(True)
    loss = mdd_loss(main_s[:1], agree_s[:1], main_t[:1], adv_t)
    source_term = 4.0 * math.log(1 + 2 * math.exp(-5.0))
    assert loss.item() == pytest.approx(source_term + 1e4 - math.log(2), rel=1e-12)
    loss.backward()
    assert torch.isfinite(adv_t.grad).all()
    np.testing.assert_allclose(adv_t.grad.numpy(), [[-0.5, 1.0, -0.5]], atol=1e-12)


def test_mdd_loss_rejects_bad_shapes() -> None:
    a = t64(RNG.normal(size=(4, 3)))
    b = t64(RNG.normal(size=(2, 3)))
    with pytest.raises(ConfigError, match=r"source_main_logits \(4, 3\).*\(2, 3\) differ"):
        mdd_loss(a, b, b, b)
    with pytest.raises(ConfigError, match="different numbers of classes"):
        mdd_loss(a, a, a[:, :2], a[:, :2])
    with pytest.raises(ConfigError, match="margin"):
        mdd_loss(a, a, b, b, margin=0.0)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        mdd_loss(a[:, :1], a[:, :1], b[:, :1], b[:, :1])


def test_classifier_discrepancy() -> None:
    p1, p2 = np_softmax(RNG.normal(size=(5, 3))), np_softmax(RNG.normal(size=(5, 3)))
    ref = sum(abs(p1[i, c] - p2[i, c]) for i in range(5) for c in range(3)) / 15
    assert classifier_discrepancy(t64(p1), t64(p2)).item() == pytest.approx(ref, rel=1e-12)
    assert classifier_discrepancy(t64(p2), t64(p1)).item() == pytest.approx(ref, rel=1e-12)
    assert classifier_discrepancy(t64(p1), t64(p1)).item() == 0.0
    # Two one-hot classifiers that disagree on every row: each row differs by 2 over C = 3.
    eye = np.eye(3)
    assert classifier_discrepancy(t64(eye), t64(eye[[1, 2, 0]])).item() == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match=r"\(5, 3\).*\(4, 3\) differ"):
        classifier_discrepancy(t64(p1), t64(p2[:4]))


# ------------------------------------------------------------------------ self-training


def test_entropy_matches_numpy() -> None:
    z = RNG.normal(size=(5, 4)) * 2
    ref = np_entropy_rows(np_softmax(z))
    np.testing.assert_allclose(entropy(t64(z)).numpy(), ref, rtol=1e-12)
    assert mean_entropy(t64(z)).item() == pytest.approx(ref.mean(), rel=1e-12)
    uniform = entropy(torch.zeros(2, 5, dtype=torch.float64))
    np.testing.assert_allclose(uniform.numpy(), [math.log(5)] * 2, rtol=1e-12)
    # A -inf logit (p = 0) contributes 0 and keeps the gradient finite.
    z_inf = torch.tensor([[0.0, 0.0, -math.inf]], dtype=torch.float64, requires_grad=True)
    h = entropy(z_inf)
    assert h.item() == pytest.approx(math.log(2))
    h.sum().backward()
    assert torch.isfinite(z_inf.grad).all()
    with pytest.raises(ConfigError, match=r"2 classes.*\(3, 1\)"):
        entropy(t64(z[:3, :1]))


def np_im(z: np.ndarray, w: float, eps: float) -> float:
    p = np_softmax(z)
    ent = np_entropy_rows(p).mean()
    p_bar = p.mean(axis=0)
    div = -sum(v * math.log(v + eps) for v in p_bar)
    return ent - w * div


def test_information_maximization() -> None:
    z = RNG.normal(size=(6, 3)) * 2
    got = information_maximization(t64(z), diversity_weight=0.7, eps=1e-5)
    assert got.item() == pytest.approx(np_im(z, 0.7, 1e-5), rel=1e-10)
    assert information_maximization(t64(z)).item() == pytest.approx(np_im(z, 1.0, 1e-5))
    confident_diverse = t64(np.eye(3)[[0, 1, 2, 0, 1, 2]] * 30)
    confident_collapsed = t64(np.eye(3)[[0] * 6] * 30)
    uniform = torch.zeros(6, 3, dtype=torch.float64)
    im = [information_maximization(x).item() for x in (confident_diverse, uniform)]
    assert im[0] == pytest.approx(-math.log(3), abs=1e-4)
    assert im[1] == pytest.approx(0.0, abs=1e-4)
    assert information_maximization(confident_collapsed).item() == pytest.approx(0.0, abs=1e-4)
    assert im[0] < im[1]
    with pytest.raises(ConfigError, match="diversity_weight"):
        information_maximization(t64(z), diversity_weight=-1.0)


def np_pseudo(z: np.ndarray, threshold: float, balance: bool):
    p = np_softmax(z)
    labels = p.argmax(axis=1)
    conf = p.max(axis=1)
    mask = conf >= threshold
    if balance:
        q = mask.sum() / len(z)
        for c in set(labels.tolist()):
            rows = [i for i in range(len(z)) if labels[i] == c]
            k = math.ceil(q * len(rows) - 1e-9)
            rows.sort(key=lambda i: (-conf[i], i))
            for i in rows[:k]:
                mask[i] = True
    return labels, mask


def test_confident_pseudo_labels_threshold() -> None:
    z = RNG.normal(size=(12, 3)) * 2
    for threshold in (0.0, 0.6, 0.9, 1.0):
        labels, mask = confident_pseudo_labels(t64(z), threshold)
        ref_labels, ref_mask = np_pseudo(z, threshold, balance=False)
        assert labels.dtype == torch.int64 and mask.dtype == torch.bool
        np.testing.assert_array_equal(labels.numpy(), ref_labels)
        np.testing.assert_array_equal(mask.numpy(), ref_mask)
    # The threshold is inclusive: p = 0.5 exactly passes 0.5.
    _, mask = confident_pseudo_labels(torch.zeros(1, 2), 0.5)
    assert mask.tolist() == [True]
    z_grad = t64(z).requires_grad_(True)
    labels, _ = confident_pseudo_labels(z_grad, 0.5)
    assert not labels.requires_grad
    with pytest.raises(ConfigError, match="threshold"):
        confident_pseudo_labels(t64(z), 1.5)


def test_confident_pseudo_labels_class_balance() -> None:
    # Class 0: four confident rows; class 1: four rows below the 0.9 threshold.
    z = np.array(
        [[6.0, 0.0]] * 4 + [[0.0, 0.5], [0.0, 1.5], [0.0, 1.0], [0.0, 0.2]], dtype=np.float64
    )
    _, plain = confident_pseudo_labels(t64(z), 0.9)
    assert plain.tolist() == [True] * 4 + [False] * 4
    # The threshold keeps q = 4 / 8; class 1 keeps its ceil(0.5 * 4) = 2 most confident rows.
    labels, balanced = confident_pseudo_labels(t64(z), 0.9, class_balance=True)
    assert balanced.tolist() == [True] * 4 + [False, True, True, False]
    assert labels.tolist() == [0] * 4 + [1] * 4
    # Nothing passes: nothing is kept, balanced or not.
    _, none = confident_pseudo_labels(t64(z), 1.0, class_balance=True)
    assert not none.any()
    # Random cases against the loop reference.
    for seed in range(5):
        zr = np.random.default_rng(seed).normal(size=(15, 4)) * 2
        for threshold in (0.5, 0.8):
            labels, mask = confident_pseudo_labels(t64(zr), threshold, class_balance=True)
            ref_labels, ref_mask = np_pseudo(zr, threshold, balance=True)
            np.testing.assert_array_equal(labels.numpy(), ref_labels)
            np.testing.assert_array_equal(mask.numpy(), ref_mask)
            _, plain = confident_pseudo_labels(t64(zr), threshold)
            assert (mask | ~plain).all()  # balancing only adds rows


def test_fixmatch_loss_matches_numpy() -> None:
    weak = RNG.normal(size=(8, 3)) * 3
    strong = RNG.normal(size=(8, 3))
    pw, ps = np_softmax(weak), np_softmax(strong)
    total, kept = 0.0, 0
    for i in range(8):
        if pw[i].max() >= 0.8:
            total -= math.log(ps[i, pw[i].argmax()])
            kept += 1
    assert 0 < kept < 8  # the mask matters in this case
    weak_t, strong_t = t64(weak).requires_grad_(True), t64(strong).requires_grad_(True)
    loss, rate = fixmatch_loss(weak_t, strong_t, threshold=0.8)
    assert loss.item() == pytest.approx(total / 8, rel=1e-12)  # mean over all rows
    assert rate.item() == pytest.approx(kept / 8) and not rate.requires_grad
    loss.backward()
    assert weak_t.grad is None and strong_t.grad is not None
    masked = [i for i in range(8) if pw[i].max() < 0.8]
    assert torch.all(strong_t.grad[masked] == 0)
    zero, zero_rate = fixmatch_loss(t64(weak), t64(strong), threshold=1.0)
    assert zero.item() == 0.0 and zero_rate.item() == 0.0
    with pytest.raises(ConfigError, match=r"weak_logits \(8, 3\) and strong_logits \(7, 3\)"):
        fixmatch_loss(t64(weak), t64(strong[:7]))


# --------------------------------------------------------------------- SHOT clustering


def np_shot(f: np.ndarray, p: np.ndarray, rounds: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        f = np.hstack([f, np.ones((len(f), 1))])
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
    n, c = p.shape
    allowed = set(p.argmax(axis=1).tolist())
    w = p
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(rounds + 1):
        centroids = {}
        for k in range(c):
            mass = w[:, k].sum()
            if k in allowed and mass > 0:
                centroids[k] = (w[:, k : k + 1] * f).sum(axis=0) / mass
        for i in range(n):
            best, best_d = -1, math.inf
            for k, ck in sorted(centroids.items()):
                if metric == "cosine":
                    d = 1 - f[i] @ ck / (np.linalg.norm(f[i]) * np.linalg.norm(ck))
                else:
                    d = np.linalg.norm(f[i] - ck)
                if d < best_d:
                    best, best_d = k, d
            labels[i] = best
        w = np.eye(c)[labels]
    return labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_shot_cluster_labels_match_numpy(metric: str) -> None:
    rng = np.random.default_rng(3)
    f = rng.normal(size=(20, 4))
    p = np_softmax(rng.normal(size=(20, 3)))
    for rounds in (0, 1, 3):
        got = shot_cluster_labels(t64(f), t64(p), rounds=rounds, metric=metric)
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy(), np_shot(f, p, rounds, metric))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_shot_cluster_labels_recover_separated_clusters(metric: str) -> None:
    rng = np.random.default_rng(1)
    truth = np.array([0] * 15 + [1] * 15)
    means = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    f = means[truth] + rng.normal(scale=0.3, size=(30, 3))
    # Noisy predictions over 3 classes: 30% of rows have the wrong argmax, class 2 is never
    # the argmax (so it is never assigned).
    p_true = rng.uniform(0.5, 0.65, size=30)
    flipped = rng.permutation(30)[:9]
    p_true[flipped] = rng.uniform(0.3, 0.4, size=9)
    p = np.zeros((30, 3))
    p[np.arange(30), truth] = p_true
    p[np.arange(30), 1 - truth] = 1 - p_true - 0.05
    p[:, 2] = 0.05
    assert (p.argmax(axis=1) != truth).sum() == 9
    labels = shot_cluster_labels(t64(f), t64(p), rounds=1, metric=metric)
    np.testing.assert_array_equal(labels.numpy(), truth)
    # float32 input works the same; gradients are not tracked.
    f32 = torch.tensor(f, dtype=torch.float32, requires_grad=True)
    labels32 = shot_cluster_labels(f32, torch.tensor(p, dtype=torch.float32), metric=metric)
    assert torch.equal(labels32, labels) and not labels32.requires_grad


def test_shot_cluster_labels_reject_bad_input() -> None:
    f = t64(RNG.normal(size=(4, 3)))
    p = t64(np_softmax(RNG.normal(size=(4, 2))))
    with pytest.raises(ConfigError, match=r"features \(4, 3\) and probs \(3, 2\)"):
        shot_cluster_labels(f, p[:3])
    with pytest.raises(ConfigError, match="metric"):
        shot_cluster_labels(f, p, metric="manhattan")
    with pytest.raises(ConfigError, match="rounds"):
        shot_cluster_labels(f, p, rounds=-1)
    with pytest.raises(ConfigError, match="non-negative"):
        shot_cluster_labels(f, -p)
