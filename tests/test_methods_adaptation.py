"""The adaptation methods on the engine: each loss the engine produces equals the pure loss
applied to features computed by hand, each method trains end to end on a digits pair, and
the methods compose (``cdan+e``, ``mcc+pseudo_label``, ``dann+bsp``) from the API and CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY
from transferkit.config import TrainConfig
from transferkit.data.augment import strong_augment
from transferkit.engine.loop import TrainData, Trainer
from transferkit.errors import ConfigError
from transferkit.losses import (
    afn_loss,
    bnm_loss,
    bsp_loss,
    classifier_discrepancy,
    confident_pseudo_labels,
    coral_loss,
    entropy_weights,
    fixmatch_loss,
    jmmd,
    mcc_loss,
    mdd_loss,
    mk_mmd,
    multilinear_map,
    weighted_domain_loss,
)
from transferkit.methods import Batch, build_methods, method_names
from transferkit.models import build_model

C, D_IN, D = 4, 5, 6


class Net(nn.Module):
    """``head(body(x))``: the feature vector is the head's input, computable by hand."""

    def __init__(self, width: int = D, classes: int = C) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D_IN, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def setup_run(spec: str, options: dict | None = None, width: int = D, classes: int = C,
              epochs: int = 1):
    """A Trainer (so ``setup`` sees shapes, student, head) and one source/target batch."""
    torch.manual_seed(0)
    net = Net(width, classes)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, D_IN, generator=gen)
    xt = torch.randn(16, D_IN, generator=gen) + 0.7
    y = torch.randint(0, classes, (16,), generator=gen)
    methods = build_methods(spec, None, options or {})
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=2, batch_size=16, progress=False,
                      device="cpu")
    run = Trainer(net, methods, TrainData(x, y, classes, xt), cfg)
    return run, net, methods, Batch(x, y, xt)


def by_hand(net: Net, batch: Batch) -> dict[str, torch.Tensor]:
    fs, ft = net.body(batch.x), net.body(batch.x_target)
    return {"fs": fs, "ft": ft, "zs": net.head(fs), "zt": net.head(ft)}


def expected_loss(name: str, m, h: dict[str, torch.Tensor], progress: float) -> torch.Tensor:
    fs, ft, zs, zt = h["fs"], h["ft"], h["zs"], h["zt"]
    if name == "dan":
        return mk_mmd(fs, ft)
    if name == "jan":
        return jmmd([fs, zs.softmax(1)], [ft, zt.softmax(1)], ((0.25, 0.5, 1.0, 2.0, 4.0),
                                                               (1.0,)))
    if name == "coral":
        return coral_loss(fs, ft)
    if name == "afn":
        return 0.05 * (afn_loss(fs) + afn_loss(ft))
    if name == "bsp":
        return 1e-4 * bsp_loss(fs, ft)
    if name == "mcc":
        return mcc_loss(zt, 2.5)
    if name == "bnm":
        return bnm_loss(zt)
    if name == "pseudo_label":
        labels, mask = confident_pseudo_labels(zt, 0.5)
        return (mask * F.cross_entropy(zt, labels, reduction="none")).mean()
    if name in ("cdan", "cdan+e"):
        g = torch.cat([zs, zt]).softmax(1).detach()  # CDAN conditions on fixed predictions
        d = m.discriminator(multilinear_map(torch.cat([fs, ft]), g))
        w = (entropy_weights(g[:16]), entropy_weights(g[16:])) if name == "cdan+e" else (None,
                                                                                        None)
        return weighted_domain_loss(d[:16], d[16:], *w)
    if name == "mdd":
        adv = m.adversary(torch.cat([fs, ft]))
        return mdd_loss(zs, adv[:16], zt, adv[16:], 4.0)
    raise AssertionError(name)


KEYS = {"cdan": "cdan.domain", "cdan+e": "cdan+e.domain"}
SIMPLE = ["dan", "jan", "coral", "afn", "bsp", "mcc", "bnm", "pseudo_label", "cdan", "cdan+e",
          "mdd"]


@pytest.mark.parametrize("name", SIMPLE)
def test_engine_loss_equals_pure_loss_on_hand_features(name: str) -> None:
    options = {"threshold": 0.5} if name == "pseudo_label" else {}
    run, net, methods, batch = setup_run(f"supervised+{name}", options)
    method = methods[1]
    run.objective.eval()  # no dropout in mdd's adversary; BatchNorm on running statistics
    got = run.objective(batch, 0.4)
    with torch.no_grad():
        want = expected_loss(name, method, by_hand(net, batch), 0.4)
    key = KEYS.get(name, name)
    assert set(got) == {"supervised.ce", key}
    torch.testing.assert_close(got[key].detach(), want, rtol=1e-5, atol=1e-6)
    assert got[key].requires_grad
    run.close()


def test_adversarial_methods_reverse_the_gradient_reaching_the_features() -> None:
    """cdan and mdd: the body's gradient is minus (GRL coefficient) times the plain one."""
    for name in ("cdan", "mdd"):
        run, net, methods, batch = setup_run(name, {"warmup": False, "trade_off": 0.5})
        run.objective.eval()
        key = KEYS.get(name, name)
        w = net.body[0].weight
        got = torch.autograd.grad(run.objective(batch, 0.3)[key], w)[0]
        method = methods[0]
        method.grl.coeff = 1.0
        h = by_hand(net, batch)
        plain = expected_loss(name, method, h, 0.3) * (1.0 if name == "cdan" else 0.5)
        assert plain.requires_grad
        reference = torch.autograd.grad(plain, w)[0]
        # cdan: coefficient = trade_off; mdd: the loss carries trade_off, the GRL grl_max 0.1
        torch.testing.assert_close(got, -0.5 * reference if name == "cdan" else -0.1 * reference,
                                   rtol=1e-4, atol=1e-7)
        run.close()


def test_cdan_randomizes_large_joint_maps_and_keeps_the_map_in_checkpoints() -> None:
    run, _, [small], _ = setup_run("cdan")
    assert small.random_map is None and small.discriminator.net[0].in_features == D * C
    run.close()
    run, _, [large], batch = setup_run("cdan", width=64, classes=80)  # 5120 > 4096
    assert large.random_map is not None and large.discriminator.net[0].in_features == 1024
    assert {"methods.cdan.random_map.r_f", "methods.cdan.random_map.r_g"} <= set(
        run.objective.state_dict())
    assert math.isfinite(float(run.objective(batch, 0.5)["cdan.domain"].detach()))
    run.close()
    with pytest.raises(ConfigError, match="randomized"):
        build_methods("cdan", None, {"randomized": "yes"})


def test_cdan_e_is_one_method_and_composes() -> None:
    assert method_names("cdan+e") == ["cdan+e"]
    assert method_names("cdan+e+kd") == ["cdan+e", "kd"]
    assert method_names("cdan+bsp") == ["cdan", "bsp"]
    [method] = build_methods("cdan+e")
    assert method.entropy and method.name == "cdan+e"


def test_fixmatch_teaches_the_strong_view_with_weak_labels() -> None:
    run, net, [_, method], batch = setup_run("supervised+fixmatch", {"threshold": 0.3})
    torch.manual_seed(5)
    got = run.objective(batch, 0.5)["fixmatch"]
    torch.manual_seed(5)
    with torch.no_grad():
        strong = strong_augment(batch.x_target, 4, 0.5, 0.5)
        want, rate = fixmatch_loss(net(batch.x_target), net(strong), 0.3)
    torch.testing.assert_close(got.detach(), want)
    assert method.metrics()["mask_rate"] == pytest.approx(float(rate))
    assert 0 < float(rate) <= 1
    run.close()
    # warmup=0.4 at progress 0.1: a quarter of the same loss; past 0.4 all of it
    run, net, _, batch = setup_run("supervised+fixmatch", {"threshold": 0.3, "warmup": 0.4})
    for progress, share in ((0.1, 0.25), (0.5, 1.0)):
        torch.manual_seed(5)
        ramped = run.objective(batch, progress)["fixmatch"]
        torch.manual_seed(5)
        with torch.no_grad():
            full, _ = fixmatch_loss(net(batch.x_target),
                                    net(strong_augment(batch.x_target, 4, 0.5, 0.5)), 0.3)
        torch.testing.assert_close(ramped.detach(), share * full)
    run.close()
    with pytest.raises(ConfigError, match="warmup"):
        build_methods("fixmatch", None, {"warmup": 1.5})


def test_mcd_three_phases_train_what_the_paper_says() -> None:
    run, net, [_, mcd], batch = setup_run("supervised+mcd", {"num_k": 3})
    phases = run.objective.phases()
    assert [(p.name, p.repeat) for p in phases] == [("source", 1), ("heads", 1), ("features", 3)]
    trained = {p.name: {n for n, _ in run.objective.phase_parameters(p)} for p in phases}
    heads = {"model.head.weight", "model.head.bias", "methods.mcd.head2.weight",
             "methods.mcd.head2.bias"}
    body = {"model.body.0.weight", "model.body.0.bias"}
    assert trained == {"source": heads | body, "heads": heads, "features": body}
    h = by_hand(net, batch)
    d = classifier_discrepancy(h["zt"].softmax(1), mcd.head2(h["ft"]).softmax(1))
    source = run.objective(batch, 0.1, "source")
    assert set(source) == {"supervised.ce", "mcd.ce2"}
    torch.testing.assert_close(source["mcd.ce2"], F.cross_entropy(mcd.head2(h["fs"]), batch.y))
    heads_step = run.objective(batch, 0.1, "heads")
    assert set(heads_step) == {"mcd.ce", "mcd.discrepancy"}
    torch.testing.assert_close(heads_step["mcd.discrepancy"], -d)
    torch.testing.assert_close(run.objective(batch, 0.1, "features")["mcd.discrepancy"], d)
    # one step: the features phase leaves both heads alone, the heads phase the body
    before = {k: v.clone() for k, v in run.objective.state_dict().items()}
    run.fit()
    after = run.objective.state_dict()
    assert not torch.equal(before["methods.mcd.head2.weight"], after["methods.mcd.head2.weight"])
    assert not torch.equal(before["model.body.0.weight"], after["model.body.0.weight"])
    assert "mcd.discrepancy" in run.history[-1]
    run.close()


def test_mcd_with_multi_layer_heads_copies_the_whole_head() -> None:
    """MCD's published classifiers have three layers: with lenet's ``head_hidden`` the second
    classifier is a fresh copy of the whole head, and the heads phase trains both."""
    torch.manual_seed(0)
    model = build_model("lenet", (1, 28, 28), C, bottleneck=16, head_hidden=[8])
    x, xt = torch.randn(16, 1, 28, 28), torch.randn(16, 1, 28, 28) + 0.5
    y = torch.randint(0, C, (16,))
    methods = build_methods("supervised+mcd")
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=8, progress=False, device="cpu")
    run = Trainer(model, methods, TrainData(x, y, C, xt), cfg)
    mcd = methods[1]
    shapes = [tuple(t.shape) for t in model.head.state_dict().values()]
    assert [tuple(t.shape) for t in mcd.head2.state_dict().values()] == shapes
    assert not torch.equal(mcd.head2[0].weight, model.head[0].weight)  # fresh, not a copy
    heads = next(p for p in run.objective.phases() if p.name == "heads")
    names = {n for n, _ in run.objective.phase_parameters(heads)}
    assert {"model.head.0.weight", "model.head.3.weight", "methods.mcd.head2.0.weight",
            "methods.mcd.head2.3.weight"} <= names
    assert not any(n.startswith("model.features") for n in names)
    run.fit()
    assert "mcd.discrepancy" in run.history[-1]
    run.close()


ALL = [*SIMPLE, "fixmatch", "mcd", "dann+bsp", "mcc+pseudo_label"]


@pytest.mark.parametrize("spec", ALL)
def test_method_trains_end_to_end_on_a_pair(digits_pair, spec: str) -> None:
    result = tk.adapt("mlp", digits_pair, method=spec, model_options=TINY, **FAST)
    train = result.history[-1]["train"]
    assert all(math.isfinite(v) for v in train.values())
    assert "supervised.ce" in train
    for name in method_names(spec):
        assert any(k == name or k.startswith(name + ".") for k in train), (name, train)
    assert 0.0 <= result.summary["final"]["target_test"] <= 1.0


def test_cli_composes_adaptation_methods(cli, tmp_path) -> None:
    out = tmp_path / "run"
    cli("adapt", "--data", "digits->digits_shifted", "--model", "mlp", "--model-opt",
        "widths=[16]", "--method", "cdan+e+mcc", "--opt", "mcc.temperature=2",
        "--epochs", "1", "--out", str(out), *CLI_FAST)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"supervised.ce", "cdan+e.domain", "mcc"} <= set(row["train"])


def test_adaptation_methods_refuse_what_they_cannot_use(digits) -> None:
    with pytest.raises(ConfigError, match="target"):
        tk.train("mlp", digits, method="supervised+mcc", model_options=TINY, **FAST)
    for bad in ({"num_k": 0}, {"num_k": 1.5}):
        with pytest.raises(ConfigError, match="num_k"):
            build_methods("mcd", None, bad)
    with pytest.raises(ConfigError, match="threshold"):
        build_methods("pseudo_label", None, {"threshold": 1.5})
    with pytest.raises(ConfigError, match="k must"):
        build_methods("bsp", None, {"k": 0})
    x = torch.randn(8, 3, 5)  # sequences: no strong view defined for them
    with pytest.raises(ConfigError, match="strong view"):
        Trainer(nn.Sequential(nn.Flatten(), nn.Linear(15, 4)), build_methods("fixmatch"),
                TrainData(x, torch.zeros(8, dtype=torch.long), 4, x),
                TrainConfig(epochs=1, batch_size=4, progress=False, device="cpu"))


def test_strong_augment_changes_images_and_vectors_reproducibly() -> None:
    x = torch.randn(8, 1, 10, 10)
    torch.manual_seed(3)
    a = strong_augment(x)
    torch.manual_seed(3)
    assert torch.equal(a, strong_augment(x))
    assert a.shape == x.shape and not torch.allclose(a, x)
    # cutout: each image has a square of pixels equal to its (pre-shift) mean
    flat = strong_augment(torch.ones(4, 1, 9, 9), shift=0, cutout=0.4, jitter=0.0)
    assert torch.equal(flat, torch.ones(4, 1, 9, 9))  # constant images stay constant
    # the square's side is v * 20 with v ~ U(0, 0.5) per image: up to 10 x 10 pixels, varying
    noise = torch.randn(64, 1, 20, 20)
    cut = strong_augment(noise, shift=0, cutout=0.5, jitter=0.0)
    covered = (cut == noise.mean((1, 2, 3), keepdim=True)).flatten(1).sum(1)
    assert int(covered.max()) <= 100 and len(set(covered.tolist())) >= 5, covered
    v = torch.randn(6, 20)
    out = strong_augment(v, cutout=0.5, jitter=0.0)
    dropped = (out == v.mean(1, keepdim=True)).float().mean()
    assert 0.2 < float(dropped) < 0.8
    for bad in ({"cutout": 1.0}, {"jitter": -0.1}, {"shift": -1}):
        with pytest.raises(ValueError):
            strong_augment(x, **bad)
    with pytest.raises(ValueError, match="N x D"):
        strong_augment(torch.randn(3))


def test_adda_trains_source_then_a_target_encoder_against_a_frozen_source_copy(
        digits_pair) -> None:
    torch.manual_seed(0)
    run, net, [adda], batch = setup_run("adda", {"source_epochs": 1}, epochs=2)
    assert [p.name for p in run.objective.phases()] == ["discriminator", "encoder"]
    adda.start_epoch(0)
    stage1 = run.objective(batch, 0.1, "encoder")
    assert set(stage1) == {"adda.ce"}  # adapt adds no supervised term beside it
    torch.testing.assert_close(stage1["adda.ce"], F.cross_entropy(net(batch.x), batch.y))
    with torch.no_grad():
        net.body[0].weight.add_(0.5)  # "stage 1 training"
    adda.start_epoch(1)
    assert torch.equal(adda.source_encoder.body[0].weight, net.body[0].weight)
    assert not any(p.requires_grad for p in adda.source_encoder.parameters())
    run.objective.eval()
    h = by_hand(net, batch)
    d = adda.discriminator
    want_d = (F.binary_cross_entropy_with_logits(d(h["fs"]), torch.ones(16))
              + F.binary_cross_entropy_with_logits(d(h["ft"]), torch.zeros(16))) / 2
    got = run.objective(batch, 0.6, "discriminator")
    torch.testing.assert_close(got["adda.discriminator"], want_d)
    enc = run.objective(batch, 0.6, "encoder")["adda.encoder"]
    torch.testing.assert_close(enc, F.binary_cross_entropy_with_logits(d(h["ft"]),
                                                                       torch.ones(16)))
    head_grad = torch.autograd.grad(enc, net.head.weight, allow_unused=True)[0]
    assert head_grad is None  # the classifier is not trained in stage 2
    run.close()
    result = tk.adapt("mlp", digits_pair, method="adda", model_options=TINY,
                      **{**FAST, "epochs": 2})
    assert [row["adda.stage"] for row in result.history] == [1.0, 2.0]
    assert "supervised.ce" not in result.history[0]["train"]
    assert {"adda.ce", "adda.idle"} <= set(result.history[0]["train"])
    assert {"adda.discriminator", "adda.encoder"} <= set(result.history[1]["train"])
    with pytest.raises(ConfigError, match="source_epochs"):
        tk.adapt("mlp", digits_pair, method="adda", method_options={"source_epochs": 2},
                 model_options=TINY, **{**FAST, "epochs": 2})


@pytest.mark.parametrize("spec", ["adda", "mcd", "shot"])
def test_multi_stage_methods_resume_to_the_same_numbers(tmp_path, monkeypatch, spec) -> None:
    """Killed after epoch 2's checkpoint (adda: its first adaptation epoch; shot: labels
    recomputed at the next epoch), resumed: the same weights as an uninterrupted run."""
    from transferkit.engine import loop

    settings = {**FAST, "epochs": 3, "steps_per_epoch": 4}
    if spec == "shot":
        source = tk.train("resnet8x4", "digits", model_options={"width": 0.125}, **settings)
        start, options, data = source.model, {}, "digits->digits_shifted"

        def run(out, resume=False):
            import copy

            return tk.adapt(copy.deepcopy(start), data, method="shot", out=out, resume=resume,
                            **settings)
    else:
        options = {"source_epochs": 1} if spec == "adda" else {}

        def run(out, resume=False):
            return tk.adapt("mlp", "digits->digits_shifted", method=spec, model_options=TINY,
                            method_options=options, out=out, resume=resume, **settings)

    whole = run(tmp_path / "whole")
    real = loop.save_torch

    def killed(obj, path):
        real(obj, path)
        if obj.get("epoch") == 2 and path.name == loop.CHECKPOINT:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_torch", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(loop, "save_torch", real)
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed.summary["resumed"] is True
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.summary["final"] == whole.summary["final"]
