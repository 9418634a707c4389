"""The distillation zoo as methods: dkd, dist, kd+standardize and the layer methods (fitnet, at,
nst, pkt, rkd, sp, cc).

Wiring tests check that the loss the engine produces (hooks, teacher run once, connectors)
equals the pure loss applied to captures computed another way: the stages of the CIFAR
ResNets called one after another by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import transferkit as tk
from conftest import FAST
from transferkit.config import TrainConfig
from transferkit.engine.loop import TrainData, Trainer
from transferkit.errors import ConfigError
from transferkit.losses import (
    at_loss,
    cc_loss,
    dist_loss,
    dkd_loss,
    hint_loss,
    nst_loss,
    pkt_loss,
    rkd_loss,
    sp_loss,
    standardized_kd_loss,
)
from transferkit.methods import Batch, Outputs, Tap, build_methods
from transferkit.models import build_model, mlp

SHAPE = (1, 8, 8)
STAGES = ("stage1", "stage2", "stage3")
ZOO = ["dkd", "dist", "fitnet", "at", "nst", "pkt", "rkd", "sp", "cc"]


def resnets(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(teacher, student): resnet8x4 at widths 0.5 and 0.25 (16..128 and 8..64 channels)."""
    torch.manual_seed(seed)
    return (build_model("resnet8x4", SHAPE, 10, width=0.5),
            build_model("resnet8x4", SHAPE, 10, width=0.25))


def by_hand(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage's map, the feature vector and the logits, calling the modules in turn."""
    f, out = model.features, {}
    h = f.stem(x)
    for name in STAGES:
        h = out[name] = getattr(f, name)(h)
    out["features"] = f.pool(h)
    out["logits"] = model.head(out["features"])
    return out


def trainer(student, methods, x, y, epochs: int = 1) -> Trainer:
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=3, batch_size=16, progress=False,
                      device="cpu")
    return Trainer(student, methods, TrainData(x, y, 10), cfg)


def mean(values) -> torch.Tensor:
    """The layer methods' reduction over (student, teacher) layer pairs: a sum."""
    return sum(values)


# The expected losses from hand-made captures ``s`` / ``t`` (student / teacher), the labels
# and the method (for its connectors), with default weights.
EXPECTED = {
    "dkd": lambda s, t, y, m: {"dkd": dkd_loss(s["logits"], t["logits"], y, 1.0, 8.0, 4.0)},
    "dist": lambda s, t, y, m: {"dist": dist_loss(s["logits"], t["logits"], 2.0, 2.0, 4.0)},
    "kd": lambda s, t, y, m: {
        "kd": 0.9 * standardized_kd_loss(s["logits"], t["logits"], 4.0),
        "kd.ce": 0.1 * F.cross_entropy(s["logits"], y),
    },
    "fitnet": lambda s, t, y, m: {
        "fitnet": 100 * hint_loss(m.regressors[0](s["stage2"]), t["stage2"])},
    "at": lambda s, t, y, m: {"at": 1000 * mean([at_loss(s[k], t[k], 2.0) for k in STAGES])},
    "nst": lambda s, t, y, m: {"nst": 50 * mean([nst_loss(s[k], t[k]) for k in STAGES])},
    "pkt": lambda s, t, y, m: {"pkt": 30000 * pkt_loss(s["features"], t["features"])},
    "rkd": lambda s, t, y, m: {"rkd": rkd_loss(s["features"], t["features"], 25.0, 50.0)},
    "sp": lambda s, t, y, m: {"sp": 3000 * sp_loss(s["stage3"], t["stage3"])},
    "cc": lambda s, t, y, m: {"cc": 0.02 * cc_loss(
        m.embed_s[0](s["features"]), m.embed_t[0](t["features"]), 0.4, 2)},
}
OPTIONS = {"dkd": {"warmup": 0}, "kd": {"standardize": True}}


@pytest.mark.parametrize("name", [*ZOO, "kd"])
def test_engine_loss_equals_pure_loss_on_hand_captures(name: str) -> None:
    teacher, student = resnets()
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    [method] = build_methods(name, teacher, OPTIONS.get(name, {}))
    run = trainer(student, [method], x, y)
    got = run.objective(Batch(x, y), 0.5)
    with torch.no_grad():
        t = by_hand(teacher, x)
    expected = EXPECTED[name](by_hand(student, x), t, y, method)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-6)
        assert got[key].requires_grad
    run.close()


def test_kd_weights_replace_alpha_as_in_the_kd_ls_recipe() -> None:
    """``9 * T^2 KL + 0.1 * CE`` (the paper's KD+LS weights); no labels: ``9 * T^2 KL``."""
    teacher, student = resnets()
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    options = {"standardize": True, "temperature": 2.0, "kd_weight": 9.0, "ce_weight": 0.1}
    [method] = build_methods("kd", teacher, options)
    run = trainer(student, [method], x, y)
    s, t = by_hand(student, x)["logits"], by_hand(teacher, x)["logits"].detach()
    # the soft term by hand: z-score each row, divide by T, then T^2 * KL(p_t || p_s)
    z = lambda v: (v - v.mean(1, keepdim=True)) / v.std(1, keepdim=True)  # noqa: E731
    log_ps, log_pt = F.log_softmax(z(s) / 2, 1), F.log_softmax(z(t) / 2, 1)
    soft = 4 * (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()
    got = run.objective(Batch(x, y), 0.5)
    torch.testing.assert_close(got["kd"], 9 * soft, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["kd.ce"], 0.1 * F.cross_entropy(s, y), rtol=1e-6, atol=1e-7)
    assert set(run.objective(Batch(x, None), 0.5)) == {"kd"}
    torch.testing.assert_close(run.objective(Batch(x, None), 0.5)["kd"], 9 * soft,
                               rtol=1e-5, atol=1e-6)
    run.close()
    with pytest.raises(ConfigError, match="kd_weight"):
        build_methods("kd", teacher, {"kd_weight": -1})
    [plain] = build_methods("kd", teacher, {"alpha": 1.0})
    assert plain.hard_weight == 0.0 and plain.soft_weight == 1.0


def test_fitnet_layers_route_and_pool_the_larger_map(digits) -> None:
    teacher, student = resnets()
    options = {"fitnet.student_layers": ["stage2"], "fitnet.teacher_layers": ["stage3"]}
    [method] = build_methods("fitnet", teacher, options)
    assert (method.student_layers, method.teacher_layers) == (("stage2",), ("stage3",))
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    run = trainer(student, [method], x, y)
    got = run.objective(Batch(x, y), 0.0)["fitnet"]
    s = by_hand(student, x)["stage2"]  # 16 x 4 x 4 -> pooled to the teacher's 2 x 2
    with torch.no_grad():
        t = by_hand(teacher, x)["stage3"]
    regressed = method.regressors[0](F.adaptive_avg_pool2d(s, (2, 2)))
    torch.testing.assert_close(got, 100 * hint_loss(regressed, t), rtol=1e-6, atol=1e-6)
    run.close()
    result = tk.distill(teacher, "resnet8x4", digits, method="fitnet", method_options=options,
                        student_options={"width": 0.25}, **FAST)
    assert math.isfinite(result.history[0]["train"]["fitnet"])


@pytest.mark.parametrize("name", ZOO)
def test_method_trains_end_to_end(digits, name: str) -> None:
    teacher, _ = resnets()
    result = tk.distill(teacher, "resnet8x4", digits, method=name,
                        student_options={"width": 0.25}, **FAST)
    row = result.history[0]
    train = row["train"]
    assert all(math.isfinite(v) for v in train.values())
    assert "supervised.ce" in train
    assert {k for k in train if k not in ("loss", "supervised.ce")} == {name}
    for key in {"dkd": ["tckd", "nckd"], "dist": ["inter", "intra"]}.get(name, []):
        assert math.isfinite(row[f"{name}.{key}"])


@pytest.mark.parametrize("name", ["dkd", "dist"])
def test_cached_teacher_gives_the_same_run(digits, name: str) -> None:
    teacher, _ = resnets()
    runs = [tk.distill(teacher, "resnet8x4", digits, method=name, cache_teacher=cache,
                       student_options={"width": 0.25}, **FAST).history[0]["train"]
            for cache in (False, True)]
    assert runs[1] == pytest.approx(runs[0], rel=1e-5, abs=1e-7)


def test_composition_runs_the_teacher_once_per_step(digits) -> None:
    teacher, student = resnets()
    result = tk.distill(teacher, "resnet8x4", digits, method="kd+fitnet",
                        student_options={"width": 0.25}, **FAST)
    assert {"kd", "kd.ce", "fitnet"} <= set(result.history[0]["train"])
    assert "supervised.ce" not in result.history[0]["train"]  # kd brings its own hard term

    calls: list[int] = []
    hook = teacher.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    x, y = digits.train.x[:256], digits.train.y[:256]
    run = trainer(student, build_methods("kd+fitnet+at", teacher), x, y)
    # The Trainer probed the tap shapes with one teacher forward (2 rows) while it was built;
    # fit() without evaluation splits runs only the 3 training steps, so every teacher call
    # counted from here on belongs to a step.
    assert calls == [2]
    calls.clear()
    run.fit()
    run.close()
    hook.remove()
    assert calls == [16, 16, 16]


def test_layer_options_are_checked(digits) -> None:
    teacher, student = resnets()
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    mismatched = build_methods("at", teacher, {"at.student_layers": ["stage1", "stage2"],
                                               "at.teacher_layers": ["stage3"]})
    with pytest.raises(ConfigError, match=r"2 student layers \(stage1, stage2\) but 1 teacher "
                       r"layers \(stage3\)"):
        trainer(student, mismatched, x, y)
    wrong = build_methods("sp", teacher, {"student_layers": ["stage9"]})
    with pytest.raises(ConfigError, match=r"no layer 'stage9'; valid layers: features\.stage1"):
        trainer(student, wrong, x, y)
    with pytest.raises(ConfigError, match="student_layers must be a list of layer names"):
        build_methods("sp", teacher, {"student_layers": [3]})
    flat = mlp(SHAPE, 10, widths=[16])
    with pytest.raises(ConfigError, match="feature maps") as info:
        tk.distill(flat, "mlp", digits, method="at", student_options={"widths": [8]}, **FAST)
    assert "\n" not in str(info.value)


def test_dkd_warms_up_over_epochs() -> None:
    teacher, student = resnets()
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    [method] = build_methods("dkd", teacher, {"warmup": 2})
    run = trainer(student, [method], x, y, epochs=4)
    with torch.no_grad():
        full = dkd_loss(by_hand(student, x)["logits"], by_hand(teacher, x)["logits"], y)
    # progress 0.25 of 4 epochs = 1 epoch done: half of the 2-epoch warm-up
    for progress, factor in [(0.0, 0.0), (0.125, 0.25), (0.25, 0.5), (0.5, 1.0), (0.9, 1.0)]:
        got = run.objective(Batch(x, y), progress)["dkd"]
        torch.testing.assert_close(got, factor * full, rtol=1e-6, atol=1e-7)
    tckd, nckd = method.metrics()["tckd"], method.metrics()["nckd"]
    assert full.item() == pytest.approx(tckd + 8 * nckd, rel=1e-5)
    run.close()
    with pytest.raises(ConfigError, match="inputs must be 'source'"):
        build_methods("dkd", teacher, {"inputs": "target"})


def test_kd_standardize_is_invariant_to_teacher_shift_and_scale() -> None:
    teacher, _ = resnets()
    [method] = build_methods("kd", teacher, {"standardize": True, "temperature": 2.0})
    torch.manual_seed(1)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))

    def losses(teacher_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        out = Outputs(s, taps={Tap("teacher", "logits"): teacher_logits})
        return method.losses(Batch(torch.zeros(8, *SHAPE), y), out, 0.0)

    base = losses(t)
    torch.testing.assert_close(base["kd"], 0.9 * standardized_kd_loss(s, t, 2.0))
    torch.testing.assert_close(base["ce"], 0.1 * F.cross_entropy(s, y))  # on raw logits
    for moved in (t + 7.0, 3 * t, 3 * t - 2.0):
        torch.testing.assert_close(losses(moved)["kd"], base["kd"], rtol=1e-5, atol=1e-6)
    plain = build_methods("kd", teacher, {"temperature": 2.0})[0]
    out = Outputs(s, taps={Tap("teacher", "logits"): 3 * t})
    assert not torch.allclose(plain.losses(Batch(s, y), out, 0.0)["kd"], base["kd"])
    with pytest.raises(ConfigError, match="standardize must be true or false"):
        build_methods("kd", teacher, {"standardize": "yes"})
