"""VID, CRD, ReviewKD and DeepInversion building blocks, checked against NumPy by hand."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.errors import ConfigError
from transferkit.losses.crd import ContrastMemory, CRDLoss, Embed, nce_loss
from transferkit.losses.inversion import (
    NO_BN_WARNING,
    BNStatisticsHook,
    attach_bn_hooks,
    synthesize,
    total_variation,
)
from transferkit.losses.reviewkd import ABF, ReviewFusion, hcl_loss
from transferkit.losses.vid import VIDRegressor, vid_loss

RNG = np.random.default_rng(0)


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def np_normalize(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- CRD


def np_nce(x: np.ndarray, n_data: int, eps: float = 1e-7) -> float:
    m = x.shape[1] - 1
    pn = 1.0 / n_data
    loss = 0.0
    for row in x:
        loss -= math.log(row[0] / (row[0] + m * pn + eps))
        for v in row[1:]:
            loss -= math.log(m * pn / (v + m * pn + eps))
    return loss / x.shape[0]


def test_nce_loss_matches_numpy() -> None:
    x = RNG.uniform(1e-4, 2e-2, size=(5, 9))
    assert nce_loss(t64(x), n_data=50).item() == pytest.approx(np_nce(x, 50), rel=1e-10)
    # The reference's N x (K+1) x 1 layout gives the same value.
    assert nce_loss(t64(x)[:, :, None], 50).item() == pytest.approx(np_nce(x, 50), rel=1e-10)
    with pytest.raises(ConfigError, match="N x"):
        nce_loss(t64(x[:, :1]), 50)
    with pytest.raises(ConfigError, match="n_data"):
        nce_loss(t64(x), 0)


def test_embed_projects_and_normalises() -> None:
    embed = Embed(12, feat_dim=5).double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    out = embed(x)
    w, b = embed.linear.weight.detach().numpy(), embed.linear.bias.detach().numpy()
    want = np_normalize(x.reshape(4, -1).numpy() @ w.T + b)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12)
    with pytest.raises(ConfigError, match="dim_in"):
        embed(torch.randn(4, 7, dtype=torch.float64))


def test_memory_init_and_update_match_numpy() -> None:
    torch.manual_seed(0)
    mem = ContrastMemory(feat_dim=6, n_data=10, k=4, momentum=0.3).double()
    stdv = 1 / math.sqrt(6 / 3)
    assert mem.memory_s.abs().max() <= stdv and mem.memory_t.abs().max() <= stdv
    bank_s, bank_t = mem.memory_s.numpy().copy(), mem.memory_t.numpy().copy()
    index = torch.tensor([3, 7, 3, 0])  # 3 repeats: the last row wins
    v_s, v_t = RNG.normal(size=(4, 6)), RNG.normal(size=(4, 6))
    mem.update(index, t64(v_s), t64(v_t))
    for bank, new, v in ((bank_s, mem.memory_s, v_s), (bank_t, mem.memory_t, v_t)):
        want = bank.copy()
        for row, i in ((1, 7), (2, 3), (3, 0)):
            want[i] = np_normalize((0.3 * bank[i] + 0.7 * v[row])[None])[0]
        np.testing.assert_allclose(new.numpy(), want, rtol=1e-12)
    with pytest.raises(ConfigError, match="outside"):
        mem.update(torch.tensor([10]), t64(v_s[:1]), t64(v_t[:1]))
    with pytest.raises(ConfigError, match="embeddings"):
        mem.update(torch.tensor([1, 2]), t64(v_s[:1]), t64(v_t[:1]))


def test_memory_scores_and_fixed_normaliser() -> None:
    torch.manual_seed(1)
    n_data, temp = 20, 0.5
    mem = ContrastMemory(feat_dim=4, n_data=n_data, k=3, temperature=temp).double()
    assert mem.z_s.item() < 0 and mem.z_t.item() < 0  # not yet set
    index = torch.tensor([2, 5])
    idx = torch.tensor([[2, 0, 9, 2], [5, 19, 1, 1]])
    v_s, v_t = np_normalize(RNG.normal(size=(2, 4))), np_normalize(RNG.normal(size=(2, 4)))
    out_s, out_t = mem(t64(v_s), t64(v_t), index, idx)
    bank_s, bank_t = mem.memory_s.numpy(), mem.memory_t.numpy()
    raw_t = np.exp(np.einsum("ijd,id->ij", bank_s[idx.numpy()], v_t) / temp)
    raw_s = np.exp(np.einsum("ijd,id->ij", bank_t[idx.numpy()], v_s) / temp)
    z_s, z_t = raw_s.mean() * n_data, raw_t.mean() * n_data
    assert mem.z_s.item() == pytest.approx(z_s, rel=1e-12)
    assert mem.z_t.item() == pytest.approx(z_t, rel=1e-12)
    np.testing.assert_allclose(out_s.numpy(), raw_s / z_s, rtol=1e-12)
    np.testing.assert_allclose(out_t.numpy(), raw_t / z_t, rtol=1e-12)
    # Later calls keep Z, also after the banks change; a state dict carries it.
    mem.update(index, t64(v_s), t64(v_t))
    out_s2, _ = mem(t64(-v_s), t64(v_t), index, idx)
    assert mem.z_s.item() == pytest.approx(z_s, rel=1e-12)
    raw_s2 = np.exp(np.einsum("ijd,id->ij", mem.memory_t.numpy()[idx.numpy()], -v_s) / temp)
    np.testing.assert_allclose(out_s2.numpy(), raw_s2 / z_s, rtol=1e-12)
    assert {"memory_s", "memory_t", "z_s", "z_t"} <= set(mem.state_dict())
    with pytest.raises(ConfigError, match="contrast_idx"):
        mem(t64(v_s), t64(v_t), index, idx[:, :1])


def test_negatives_reproducible_and_k_clamped() -> None:
    mem = ContrastMemory(feat_dim=4, n_data=10)
    assert mem.requested_k == 16384 and mem.k == 9
    index = torch.tensor([0, 4, 9])
    torch.manual_seed(5)
    a = mem.contrast_index(index)
    torch.manual_seed(5)
    b = mem.contrast_index(index)
    c = mem.contrast_index(index, torch.Generator().manual_seed(7))
    d = mem.contrast_index(index, torch.Generator().manual_seed(7))
    assert a.shape == (3, 10) and a.dtype == torch.long
    assert torch.equal(a, b) and torch.equal(c, d)
    assert torch.equal(a[:, 0], index) and int(a.min()) >= 0 and int(a.max()) < 10
    excl = ContrastMemory(feat_dim=4, n_data=10, exclude_positive=True)
    many = torch.arange(10).repeat(50)
    draws = excl.contrast_index(many, torch.Generator().manual_seed(0))
    assert not (draws[:, 1:] == many[:, None]).any()
    assert torch.equal(torch.unique(draws[:, 1:]), torch.arange(10))  # yet all rows drawn
    assert (mem.contrast_index(many)[:, 1:] == many[:, None]).any()  # the reference may
    with pytest.raises(ConfigError, match="n_data"):
        ContrastMemory(feat_dim=4, n_data=1)
    with pytest.raises(ConfigError, match="outside"):
        mem.contrast_index(torch.tensor([10]))


def test_crd_loss_end_to_end_decreases() -> None:
    torch.manual_seed(0)
    n_data = 32
    crd = CRDLoss(student_dim=20, teacher_dim=24, n_data=n_data, feat_dim=16, k=8,
                  temperature=0.1)
    fs, ft = torch.randn(n_data, 20), torch.randn(n_data, 2, 3, 4)
    index = torch.arange(n_data)
    fixed = crd.contrast_index(index, torch.Generator().manual_seed(0))

    def held_out() -> float:
        with torch.no_grad():
            return float(crd(fs, ft, index, fixed, update_memory=False))

    loss0 = crd(fs, ft, index, update_memory=False)  # sets Z
    assert loss0.ndim == 0 and torch.isfinite(loss0)
    before = held_out()
    opt = torch.optim.Adam(crd.parameters(), lr=0.02)
    for _ in range(15):
        loss = crd(fs, ft, index)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < before
    loss, v_s, v_t = crd(fs, ft, index, return_embeddings=True, update_memory=False)
    assert v_s.shape == v_t.shape == (n_data, 16) and not v_s.requires_grad
    with pytest.raises(ConfigError, match="batch"):
        crd(fs[:3], ft, index)


# ----------------------------------------------------------------------------- VID


def test_vid_loss_matches_numpy() -> None:
    mean, target = RNG.normal(size=(2, 3, 4, 5)), RNG.normal(size=(2, 3, 4, 5))
    var = np.array([0.5, 2.0, 5.0])
    v = var[None, :, None, None]
    want = np.mean(0.5 * (np.log(v) + (target - mean) ** 2 / v))
    assert vid_loss(t64(mean), t64(target), t64(var)).item() == pytest.approx(want, rel=1e-12)
    with pytest.raises(ConfigError, match="per channel"):
        vid_loss(t64(mean), t64(target), t64(var[:2]))


def test_vid_regressor_variance_and_nll() -> None:
    torch.manual_seed(0)
    vid = VIDRegressor(4, 3).double()
    assert vid.regressor[0].out_channels == 3  # hidden width defaults to the teacher's
    np.testing.assert_allclose(vid.variance.detach().numpy(), 5.0, rtol=1e-6)
    assert VIDRegressor(4, 3, init_var=0.01).variance.detach().numpy() == pytest.approx(0.01)
    with torch.no_grad():
        vid.alpha.copy_(torch.tensor([0.0, 1.0, -2.0]))
    var = np.log1p(np.exp([0.0, 1.0, -2.0])) + 1e-5
    fs = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    ft = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    mu = vid.predict_mean(fs).detach().numpy()
    v = var[None, :, None, None]
    want = np.mean(0.5 * (np.log(v) + (ft.numpy() - mu) ** 2 / v))
    assert vid(fs, ft).item() == pytest.approx(want, rel=1e-12)
    # A larger student map is pooled to the teacher's size; flat features are 1 x 1 maps.
    big = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    pooled = nn.functional.adaptive_avg_pool2d(big, 3)
    assert vid(big, ft).item() == pytest.approx(vid(pooled, ft).item(), rel=1e-12)
    flat = vid(torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64))
    assert flat.ndim == 0 and torch.isfinite(flat)
    with pytest.raises(ConfigError, match="channels"):
        vid(fs, torch.randn(2, 5, 3, 3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="init_var"):
        VIDRegressor(4, 3, init_var=0.0)


# ----------------------------------------------------------------------------- ReviewKD


def test_review_fusion_shapes() -> None:
    torch.manual_seed(0)
    fusion = ReviewFusion([8, 16, 32], [16, 32, 64])
    feats = [torch.randn(2, c, s, s) for c, s in ((8, 8), (16, 4), (32, 2))]
    outs = fusion(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert fusion.abfs[2].att_conv is None and fusion.abfs[0].att_conv is not None
    assert fusion.abfs[0].mid_channels == 32  # min(512, deepest student channels)
    resized = ReviewFusion([8, 16, 32], [16, 32, 64], mid_channels=6,
                           teacher_sizes=[16, (8, 8), 4])
    assert [tuple(o.shape[-2:]) for o in resized(feats)] == [(16, 16), (8, 8), (4, 4)]
    abf = ABF(8, 6, 16, fuse=True)
    out, fused = abf(feats[0], torch.randn(2, 6, 4, 4))
    assert out.shape == (2, 16, 8, 8) and fused.shape == (2, 6, 8, 8)
    with pytest.raises(ConfigError, match="residual"):
        abf(feats[0])
    with pytest.raises(ConfigError, match="levels"):
        fusion(feats[:2])
    with pytest.raises(ConfigError, match="teacher channel"):
        ReviewFusion([8, 16], [16])


def test_abf_fusion_arithmetic() -> None:
    torch.manual_seed(0)
    abf = ABF(3, 2, 4, fuse=True).double().eval()
    x, res = torch.randn(1, 3, 4, 4, dtype=torch.float64), torch.randn(1, 2, 2, 2,
                                                                       dtype=torch.float64)
    _, fused = abf(x, res)
    with torch.no_grad():
        y = abf.conv1(x)
        up = res.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest, x2
        att = torch.sigmoid(abf.att_conv[0](torch.cat([y, up], 1)))
        want = y * att[:, :1] + up * att[:, 1:]
    torch.testing.assert_close(fused, want)


def np_pool(a: np.ndarray, size: int) -> np.ndarray:
    n, c, h, w = a.shape
    return a.reshape(n, c, size, h // size, size, w // size).mean(axis=(3, 5))


def test_hcl_loss_matches_numpy() -> None:
    fs = [RNG.normal(size=s) for s in ((2, 3, 8, 8), (2, 5, 4, 4), (2, 2, 1, 1))]
    ft = [RNG.normal(size=a.shape) for a in fs]

    def level(a: np.ndarray, b: np.ndarray, weights: dict[int, float]) -> float:
        loss = np.mean((a - b) ** 2)
        for size, w in weights.items():
            loss += w * np.mean((np_pool(a, size) - np_pool(b, size)) ** 2)
        return loss / (1 + sum(weights.values()))

    want = (
        level(fs[0], ft[0], {4: 0.5, 2: 0.25, 1: 0.125})
        + level(fs[1], ft[1], {2: 0.5, 1: 0.25})
        + level(fs[2], ft[2], {})
    )
    got = hcl_loss([t64(a) for a in fs], [t64(b) for b in ft])
    assert got.item() == pytest.approx(want, rel=1e-12)
    # A larger teacher map is pooled to the student's size first.
    big = RNG.normal(size=(2, 5, 8, 8))
    got = hcl_loss([t64(fs[1])], [t64(big)])
    assert got.item() == pytest.approx(level(fs[1], np_pool(big, 4), {2: 0.5, 1: 0.25}))
    with pytest.raises(ConfigError, match="same N and C"):
        hcl_loss([t64(fs[0])], [t64(ft[1])])


# ----------------------------------------------------------------------------- DeepInversion


def test_bn_hook_matches_direct_computation() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).double()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([1.5, 0.25, 3.0]))
    model = nn.Sequential(nn.Conv2d(2, 3, 1), bn, nn.ReLU(), nn.BatchNorm2d(3)).double().eval()
    hooks = attach_bn_hooks(model)
    assert len(hooks) == 2 and isinstance(hooks[0], BNStatisticsHook)
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    model(x)
    a = model[0](x).detach().numpy()
    mean, var = a.mean(axis=(0, 2, 3)), a.var(axis=(0, 2, 3))
    want = np.linalg.norm(mean - [0.5, -1.0, 2.0]) + np.linalg.norm(var - [1.5, 0.25, 3.0])
    assert hooks[0].loss is not None
    assert hooks[0].loss.item() == pytest.approx(want, rel=1e-12)
    assert hooks.loss(first_multiplier=10.0).item() == pytest.approx(
        10 * want + hooks[1].loss.item(), rel=1e-12
    )
    hooks.remove()
    hooks.clear()
    model(x)
    assert hooks[0].loss is None and hooks.loss().item() == 0.0
    with pytest.raises(ConfigError, match="running statistics"):
        BNStatisticsHook(nn.BatchNorm2d(3, track_running_stats=False))


def test_total_variation_matches_numpy() -> None:
    x = RNG.normal(size=(2, 3, 5, 6))
    d = [
        x[..., :, 1:] - x[..., :, :-1],
        x[..., 1:, :] - x[..., :-1, :],
        x[..., 1:, :-1] - x[..., :-1, 1:],
        x[..., 1:, 1:] - x[..., :-1, :-1],
    ]
    assert total_variation(t64(x)).item() == pytest.approx(
        sum(np.mean(e**2) for e in d), rel=1e-12
    )
    assert total_variation(t64(x), p=1).item() == pytest.approx(
        sum(np.mean(np.abs(e)) for e in d), rel=1e-12
    )
    assert total_variation(t64(x), diagonals=False).item() == pytest.approx(
        sum(np.mean(e**2) for e in d[:2]), rel=1e-12
    )
    assert total_variation(torch.ones(2, 3, 4, 4)).item() == 0.0
    with pytest.raises(ConfigError, match="p must"):
        total_variation(t64(x), p=3)


def tiny_teacher(batch_norm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)]
    model = nn.Sequential(*layers)
    with torch.no_grad():  # running statistics that are not the defaults
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8) * 2 + 0.5)
    return model


def test_synthesize_fools_teacher_and_leaves_it_unchanged() -> None:
    teacher = tiny_teacher()
    teacher.train()
    teacher[0].weight.requires_grad_(False)  # a frozen part keeps its flag
    before = copy.deepcopy(teacher.state_dict())
    flags = [p.requires_grad for p in teacher.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, y = synthesize(teacher, 32, (3, 8, 8), 4, steps=20, lr=0.1, bn_weight=1.0,
                          tv_weight=1e-3, l2_weight=1e-4, jitter=1, flip=True,
                          input_range=(-3.0, 3.0), seed=0)
    assert x.shape == (32, 3, 8, 8) and not x.requires_grad and float(x.abs().max()) <= 3.0
    assert torch.equal(torch.bincount(y, minlength=4), torch.full((4,), 8))  # balanced
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in teacher.parameters()] == flags
    assert teacher.training and all(p.grad is None for p in teacher.parameters())
    teacher.eval()
    with torch.no_grad():
        acc = (teacher(x).argmax(1) == y).float().mean().item()
        noise = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        acc0 = (teacher(noise).argmax(1) == y).float().mean().item()
    assert acc > max(0.5, acc0)  # chance is 0.25
    with attach_bn_hooks(teacher) as hooks, torch.no_grad():  # BN statistics moved closer
        teacher(noise)
        bn_noise = hooks.loss().item()
        teacher(x)
        assert hooks.loss().item() < bn_noise
    # Same seed, same result; given labels are kept.
    x2, _ = synthesize(teacher, 32, (3, 8, 8), 4, steps=20, lr=0.1, bn_weight=1.0,
                       tv_weight=1e-3, l2_weight=1e-4, jitter=1, flip=True,
                       input_range=(-3.0, 3.0), seed=0)
    assert torch.equal(x, x2)
    labels = torch.tensor([3, 3, 1, 0])
    _, y3 = synthesize(teacher, 4, (3, 8, 8), 4, steps=1, labels=labels, seed=1)
    assert torch.equal(y3, labels)


def test_synthesize_teacher_without_bn_and_bad_options() -> None:
    teacher = tiny_teacher(batch_norm=False)
    with pytest.warns(UserWarning, match="no BatchNorm"):
        x, y = synthesize(teacher, 8, (3, 8, 8), 4, steps=3, seed=0)
    assert x.shape == (8, 3, 8, 8) and torch.isfinite(x).all() and y.shape == (8,)
    assert "BN term is 0" in NO_BN_WARNING
    with pytest.raises(ConfigError, match="num_classes"):
        synthesize(teacher, 8, (3, 8, 8), 5, steps=1, bn_weight=0.0)
    with pytest.raises(ConfigError, match="labels"):
        synthesize(teacher, 8, (3, 8, 8), 4, steps=1, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="spatial"):
        synthesize(nn.Linear(5, 4), 8, (5,), 4, steps=1, jitter=2)
    with pytest.raises(ConfigError, match="input_range"):
        synthesize(teacher, 8, (3, 8, 8), 4, steps=1, input_range=(1.0, 0.0))
    flat_x, _ = synthesize(nn.Linear(5, 4), 8, (5,), 4, steps=2, tv_weight=0.0, bn_weight=0.0)
    assert flat_x.shape == (8, 5)
