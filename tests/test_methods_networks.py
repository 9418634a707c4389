"""Methods that bring networks of their own: DML's trained peers and an ensemble of teachers.

Losses are checked against NumPy on fixed float64 batches; the engine side (peers trained,
evaluated, saved and resumed; each teacher run once per step and given back) on the bundled
digits with a tiny mlp.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import transferkit as tk
from conftest import FAST, TINY
from transferkit.config import TrainConfig
from transferkit.data import Dataset
from transferkit.engine.checkpoint import load_torch
from transferkit.engine.loop import TrainData, Trainer
from transferkit.errors import ConfigError
from transferkit.methods import METHODS, Batch, Outputs, Tap, build_method, build_methods
from transferkit.methods.dml import DeepMutualLearning
from transferkit.methods.ensemble import EnsembleDistillation
from transferkit.models import build_model

RNG = np.random.default_rng(11)
N, D, C = 6, 4, 3
Y = np.array([0, 2, 1, 1, 0, 2])
CONFIG = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=32, progress=False, device="cpu")
NOISY = {**FAST, "epochs": 2, "steps_per_epoch": 4, "jitter": 1}  # dropout + shifts: RNG


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_kl(log_p: np.ndarray, student: np.ndarray, temperature: float) -> float:
    """``T^2 * mean_i KL(p_i || softmax(s_i/T))`` from the targets' log-probabilities."""
    log_q = np_log_softmax(student / temperature)
    return temperature**2 * float((np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean())


def np_ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(-np_log_softmax(z)[np.arange(len(y)), y].mean())


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def linear(w: np.ndarray, b: np.ndarray) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(t(w))
        layer.bias.copy_(t(b))
    return layer


def weights_of(net: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return net.weight.detach().numpy().copy(), net.bias.detach().numpy().copy()


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.fixture(scope="module")
def digits_data(digits: Dataset) -> TrainData:
    return TrainData(digits.train.x, digits.train.y, digits.num_classes)


def tiny_mlp(dropout: float = 0.0) -> nn.Module:
    return build_model("mlp", (1, 8, 8), 10, widths=[16], dropout=dropout)


def sizes_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(x.shape == y.shape for x, y in zip(a.parameters(), b.parameters(), strict=True))


# ================================================================ dml


def dml_numpy(logits: list[np.ndarray], y: np.ndarray, temperature: float, weight: float,
              ce: bool = True) -> dict[str, float]:
    names = ["student"] + [f"peer{k}" for k in range(1, len(logits))]
    terms = {}
    for k, (name, z) in enumerate(zip(names, logits, strict=True)):
        if ce:
            terms[f"{name}.ce"] = np_ce(z, y)
        others = [np_kl(np_log_softmax(o / temperature), z, temperature)
                  for j, o in enumerate(logits) if j != k]
        terms[f"{name}.mutual"] = weight * sum(others) / len(others)
    return terms


@pytest.mark.parametrize(("peers", "temperature", "weight", "ce"),
                         [(1, 1.0, 1.0, True), (2, 3.0, 0.5, True), (2, 2.0, 1.0, False)])
def test_dml_losses_match_numpy(peers: int, temperature: float, weight: float, ce: bool) -> None:
    x = RNG.normal(size=(N, D))
    student = linear(RNG.normal(size=(C, D)), RNG.normal(size=C))
    torch.manual_seed(0)
    method = build_method("dml", peers=peers, temperature=temperature, weight=weight, ce=ce)
    assert isinstance(method, DeepMutualLearning)
    nets = method.networks(student)
    assert list(nets) == [f"peer{k}" for k in range(1, peers + 1)]
    assert method.networks(student) == nets  # built once
    z = [x @ w.T + b for w, b in [weights_of(student), *map(weights_of, nets.values())]]
    expected = dml_numpy(z, Y, temperature, weight, ce)

    # On its own the method runs the peers; in the engine it reads their captured logits.
    alone = method.losses(Batch(t(x), t(Y)), Outputs(student(t(x))), progress=0.0)
    taps = {Tap(name, "logits"): t(zk) for name, zk in zip(nets, z[1:], strict=True)}
    engine = method.losses(Batch(t(x), t(Y)), Outputs(t(z[0]), taps=taps), progress=0.0)
    for losses in (alone, engine):
        assert set(losses) == set(expected)
        for key, value in expected.items():
            assert losses[key].item() == pytest.approx(value, rel=1e-10, abs=1e-12), key


def test_dml_detaches_the_other_networks_predictions() -> None:
    x = t(RNG.normal(size=(N, D)))
    student = linear(RNG.normal(size=(C, D)), RNG.normal(size=C))
    method = build_method("dml", peers=2)
    peer1, peer2 = method.networks(student).values()
    losses = method.losses(Batch(x, t(Y)), Outputs(student(x)), progress=0.0)
    peer_params = [*peer1.parameters(), *peer2.parameters()]
    grads = torch.autograd.grad(losses["student.mutual"], peer_params, allow_unused=True)
    assert all(g is None for g in grads)  # the peers are targets of the student's term
    grads = torch.autograd.grad(losses["peer1.mutual"], [*peer1.parameters()])
    assert all(g.abs().sum() > 0 for g in grads)


def test_dml_options_are_checked() -> None:
    for bad in ({"peers": 0}, {"peers": 1.5}, {"peers": True}, {"temperature": 0},
                {"weight": -1}, {"ce": "yes"}):
        with pytest.raises(ConfigError):
            build_method("dml", **bad)
    assert build_method("dml").needs == {"labels"}
    assert build_method("dml", ce=False).needs == frozenset()
    assert "dml" in METHODS and "Zhang" in METHODS.describe()["dml"]
    with pytest.raises(ConfigError, match="networks"):
        build_method("dml").losses(Batch(t(RNG.normal(size=(N, D)))),
                                   Outputs(t(RNG.normal(size=(N, C)))), progress=0.0)


def test_dml_peers_are_fresh_copies_reproduced_by_the_seed() -> None:
    def peers(seed: int) -> list[nn.Module]:
        torch.manual_seed(seed)
        return list(build_method("dml", peers=2).networks(student).values())

    student = tiny_mlp(0.1)
    first, again, other = peers(3), peers(3), peers(4)
    for a, b in zip(first, again, strict=True):
        assert type(a) is type(student) and sizes_equal(a, student)
        for pa, pb, ps in zip(a.parameters(), b.parameters(), student.parameters(), strict=True):
            assert torch.equal(pa, pb)
            assert not torch.equal(pa, ps) and pa is not ps
    assert not torch.equal(next(first[0].parameters()), next(first[1].parameters()))
    assert not torch.equal(next(first[0].parameters()), next(other[0].parameters()))


def test_dml_trains_evaluates_and_saves_every_peer(
    digits: Dataset, digits_data: TrainData, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = tiny_mlp()
    method = build_method("dml", peers=2)
    trainer = Trainer(model, [method], digits_data, CONFIG, {"test": digits.test}, tmp_path)
    assert list(trainer.networks) == ["student", "peer1", "peer2"]
    peers = {name: net for name, net in trainer.networks.items() if name != "student"}
    before = {name: [p.detach().clone() for p in net.parameters()]
              for name, net in peers.items()}

    # Every network gets gradients from the one backward pass of the step.
    idx = torch.arange(32)
    losses = trainer.objective(Batch(digits_data.x[idx], digits_data.y[idx], index=idx), 0.0)
    assert sorted(losses) == sorted(f"dml.{n}.{k}" for n in trainer.networks
                                    for k in ("ce", "mutual"))
    sum(losses.values()).backward()
    for name, net in trainer.networks.items():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), name

    history = trainer.fit()
    trainer.close()
    for name, net in peers.items():  # the optimizer holds the peers: they changed
        assert all(not torch.equal(a, b) for a, b in zip(before[name], net.parameters(),
                                                         strict=True)), name
    row = history[-1]
    assert set(row["peers"]) == {"peer1", "peer2"}
    for name in row["peers"]:
        assert 0.0 <= row["peers"][name]["test"]["accuracy"] <= 1.0
    saved = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert saved["peers"] == row["peers"]
    state = load_torch(tmp_path / "checkpoint.pt")["objective"]
    for name, net in peers.items():
        for key, value in net.state_dict().items():
            assert torch.equal(state[f"methods.dml.peer_nets.{name}.{key}"], value), key


def test_dml_runs_under_train_and_resumes_to_the_same_numbers(
    digits: Dataset, tmp_path: Path
) -> None:
    options = {"widths": [16], "dropout": 0.3}
    result = tk.train("mlp", "digits", method="dml", model_options=TINY, **FAST)
    assert set(result.history[-1]["peers"]) == {"peer1"}
    assert "dml.student.ce" in result.history[-1]["train"]

    whole = tk.train("mlp", digits, method="dml", model_options=options,
                     out=tmp_path / "whole", **NOISY)
    cut = tmp_path / "cut"
    tk.train("mlp", digits, method="dml", model_options=options, out=cut,
             **{**NOISY, "epochs": 1})
    resumed = tk.train("mlp", digits, method="dml", model_options=options, out=cut,
                       resume=True, **NOISY)
    assert resumed.summary["resumed"] is True
    assert without_time(resumed.history) == without_time(whole.history)
    ends = [load_torch(run / "checkpoint.pt")["objective"] for run in (tmp_path / "whole", cut)]
    assert any(k.startswith("methods.dml.peer_nets.peer1.") for k in ends[0])
    for key, value in ends[0].items():
        assert torch.equal(value, ends[1][key]), key


# ================================================================ ensemble


def teachers_and_batch(count: int) -> tuple[list[nn.Linear], list[np.ndarray], np.ndarray,
                                             np.ndarray]:
    nets, logits = [], []
    x = RNG.normal(size=(N, D))
    for _ in range(count):
        w, b = RNG.normal(size=(C, D)) * 2.0, RNG.normal(size=C)
        nets.append(linear(w, b))
        logits.append(x @ w.T + b)
    return nets, logits, x, RNG.normal(size=(N, C)) * 1.5


@pytest.mark.parametrize("average", ["probs", "logits"])
@pytest.mark.parametrize(("alpha", "temperature", "labelled"),
                         [(0.9, 4.0, True), (0.3, 1.5, True), (0.9, 2.0, False)])
def test_ensemble_of_one_teacher_is_kd(
    average: str, alpha: float, temperature: float, labelled: bool
) -> None:
    (teacher,), _, x, s = teachers_and_batch(1)
    options = {"temperature": temperature, "alpha": alpha}
    kd = build_method("kd", teacher=teacher, **options)
    ensemble = build_method("ensemble", teacher=teacher, average=average, **options)
    assert ensemble.teachers() == {"teacher1": teacher}
    batch = Batch(t(x), t(Y) if labelled else None)
    want = kd.losses(batch, Outputs(t(s)), progress=0.0)
    got = ensemble.losses(batch, Outputs(t(s)), progress=0.0)
    assert set(got) == ({"ensemble", "ce"} if labelled else {"ensemble"})
    assert set(want) == ({"kd", "ce"} if labelled else {"kd"})
    assert got["ensemble"].item() == pytest.approx(want["kd"].item(), rel=1e-10, abs=1e-12)
    if labelled:
        assert got["ce"].item() == pytest.approx(want["ce"].item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("weights", [None, [1.0, 3.0], [2, 0, 1]])
@pytest.mark.parametrize("average", ["probs", "logits"])
def test_ensemble_matches_numpy(weights: list[float] | None, average: str) -> None:
    count = 3 if weights is None or len(weights) == 3 else 2
    nets, logits, x, s = teachers_and_batch(count)
    alpha, temperature = 0.7, 3.0
    method = build_method("ensemble", teacher=nets, weights=weights, alpha=alpha,
                          temperature=temperature, average=average)
    w = np.full(count, 1.0 / count) if weights is None else np.array(weights) / sum(weights)
    assert method.weights == pytest.approx(list(w), abs=1e-15)
    if average == "probs":
        probs = sum(wi * np.exp(np_log_softmax(z / temperature))
                    for wi, z in zip(w, logits, strict=True))
        log_p = np.log(probs)
    else:
        log_p = np_log_softmax(sum(wi * z for wi, z in zip(w, logits, strict=True)) / temperature)
    soft = np_kl(log_p, s, temperature)
    want = {"ensemble": alpha * soft, "ce": (1 - alpha) * np_ce(s, Y)}

    alone = method.losses(Batch(t(x), t(Y)), Outputs(t(s)), progress=0.0)
    taps = {Tap(f"teacher{k}", "logits"): t(z) for k, z in enumerate(logits, start=1)}
    engine = method.losses(Batch(t(x), t(Y)), Outputs(t(s), taps=taps), progress=0.0)
    for losses in (alone, engine):
        assert set(losses) == set(want)
        for key, value in want.items():
            assert losses[key].item() == pytest.approx(value, rel=1e-10), key


def test_ensemble_weights_are_normalised_and_bad_ones_refused() -> None:
    nets, _, x, s = teachers_and_batch(2)
    even = build_method("ensemble", teacher=nets)
    doubled = build_method("ensemble", teacher=nets, weights=[2.0, 2.0])
    assert even.weights == doubled.weights == [0.5, 0.5]
    batch, out = Batch(t(x), t(Y)), Outputs(t(s))
    assert torch.equal(even.losses(batch, out, 0.0)["ensemble"],
                       doubled.losses(batch, out, 0.0)["ensemble"])
    assert build_method("ensemble", teacher=nets, weights=[1, 4]).weights == [0.2, 0.8]
    for bad in ([1.0], [1.0, 2.0, 3.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")],
                [True, 1.0], "1,2", 3.0):
        with pytest.raises(ConfigError, match="weights must be 2 ") as caught:
            build_method("ensemble", teacher=nets, weights=bad)
        assert "\n" not in str(caught.value)
    for bad_options in ({"average": "median"}, {"alpha": 1.5}, {"temperature": 0}):
        with pytest.raises(ConfigError):
            build_method("ensemble", teacher=nets, **bad_options)
    with pytest.raises(ConfigError, match=r"torch\.nn\.Module"):
        EnsembleDistillation([nets[0], "teacher"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="needs teachers"):
        build_method("ensemble")
    assert "You et al" in METHODS.describe()["ensemble"]
    # Options reach it through a method list like any other method's.
    (built,) = build_methods("ensemble", nets, {"weights": [3, 1], "temperature": 2})
    assert built.weights == [0.75, 0.25] and built.temperature == 2.0


def test_each_teacher_runs_once_a_step_and_is_given_back(
    digits: Dataset, digits_data: TrainData
) -> None:
    torch.manual_seed(0)
    first, second, student = tiny_mlp(0.2), tiny_mlp(0.2), tiny_mlp()
    first.train()  # a teacher in train mode, with a submodule in eval mode
    first.features[3].eval()
    second.eval()
    frozen_param = next(second.parameters())
    frozen_param.requires_grad_(False)
    modes = {net: [m.training for m in net.modules()] for net in (first, second)}
    flags = {net: [p.requires_grad for p in net.parameters()] for net in (first, second)}
    method = build_method("ensemble", teacher=[first, second])
    trainer = Trainer(student, [method], digits_data, CONFIG, {"test": digits.test})
    for net in (first, second):  # frozen while training
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
    assert set(trainer.networks) == {"student"}  # teachers are never evaluated

    # The hooks go on after the Trainer is built, so the probe of the tap shapes (one forward
    # of every network on two rows, in __init__) is not counted; the epoch's evaluation runs
    # only trainer.networks (the student), so what is counted is the training steps alone.
    seen: dict[str, list[int]] = {"teacher1": [], "teacher2": []}
    handles = [net.register_forward_hook(lambda _m, args, _o, role=role: seen[role].append(
        args[0].shape[0])) for role, net in method.teachers().items()]
    history = trainer.fit()
    for handle in handles:
        handle.remove()
    trainer.close()
    assert seen == {"teacher1": [32, 32, 32], "teacher2": [32, 32, 32]}
    assert "eval" in history[-1] and set(history[-1]["train"]) == {"ensemble", "ensemble.ce",
                                                                   "loss"}
    for net in (first, second):  # given back as they came
        assert [m.training for m in net.modules()] == modes[net]
        assert [p.requires_grad for p in net.parameters()] == flags[net]
    assert not frozen_param.requires_grad


def test_ensemble_in_the_engine_equals_the_method_on_its_own(digits_data: TrainData) -> None:
    torch.manual_seed(1)
    teachers, student = [tiny_mlp(), tiny_mlp()], tiny_mlp()
    method = build_method("ensemble", teacher=teachers, weights=[1, 2])
    trainer = Trainer(student, [method], digits_data, CONFIG)
    idx = torch.arange(16)
    batch = Batch(digits_data.x[idx], digits_data.y[idx], index=idx)
    trainer.objective.eval()
    with torch.no_grad():
        engine = trainer.objective(batch, 0.0)
        alone = method.losses(batch, Outputs(student(batch.x)), 0.0)
    trainer.close()
    assert engine.keys() == {"ensemble", "ensemble.ce"}
    assert torch.equal(engine["ensemble"], alone["ensemble"])
    assert torch.equal(engine["ensemble.ce"], alone["ce"])
