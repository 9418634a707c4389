"""VID, CRD and ReviewKD: their engine losses against the building blocks applied to captures
taken here with our own hooks, end-to-end runs, and CRD's memory bank (update, clamp, resume).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import transferkit as tk
from transferkit.config import TrainConfig
from transferkit.data import load_dataset
from transferkit.engine.checkpoint import load_torch
from transferkit.engine.loop import TrainData, Trainer
from transferkit.errors import ConfigError
from transferkit.losses.reviewkd import hcl_loss
from transferkit.methods import METHODS, Batch, Method, build_method
from transferkit.models import build_model

STAGES = ["features.stage1", "features.stage2", "features.stage3"]
RUN = {"student_options": {"width": 0.25}, "steps_per_epoch": 3, "batch_size": 32,
       "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    split = load_dataset("digits").train
    return split.x, split.y


def networks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = build_model("resnet8x4", (1, 8, 8), 10, width=0.5)
    student = build_model("resnet8x4", (1, 8, 8), 10, width=0.25)
    return teacher, student


def trainer_for(method: Method, student: nn.Module, data, epochs: int = 1) -> Trainer:
    x, y = data
    config = TrainConfig(epochs=epochs, steps_per_epoch=2, batch_size=16, progress=False,
                         device="cpu")
    trainer = Trainer(student, [method], TrainData(x, y, 10), config)
    trainer.objective.train()
    return trainer


def capture(net: nn.Module, layers: list[str], x: Tensor) -> list[Tensor]:
    """The outputs of ``layers`` of ``net`` on ``x``, by our own forward hooks."""
    found: dict[str, Tensor] = {}
    modules = dict(net.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _a, out, name=name: found.__setitem__(name, out)
        )
        for name in layers
    ]
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
    return [found[name] for name in layers]


def batch_of(data, rows: Tensor) -> Batch:
    x, y = data
    return Batch(x[rows], y[rows], index=rows)


ROWS = torch.arange(5, 21)


# ---- wiring: engine loss == building block on independent captures ------------------------
def vid_expected(method, student, teacher, batch) -> Tensor:
    s = capture(student, STAGES, batch.x)
    with torch.no_grad():
        t = capture(teacher, STAGES, batch.x)
    pairs = [reg(fs, ft) for reg, fs, ft in zip(method.regressors, s, t, strict=True)]
    return method.weight * sum(pairs)


def reviewkd_expected(method, student, teacher, batch) -> Tensor:
    layers = [*STAGES, "features"]
    s = capture(student, layers, batch.x)
    with torch.no_grad():
        t = capture(teacher, layers, batch.x)
    s[-1], t[-1] = s[-1][:, :, None, None], t[-1][:, :, None, None]
    return method.weight * hcl_loss(method.fusion(s), t)


def crd_expected(method, student, teacher, batch) -> Tensor:
    (fs,) = capture(student, ["features"], batch.x)
    with torch.no_grad():
        (ft,) = capture(teacher, ["features"], batch.x)
    torch.manual_seed(3)  # the same negatives as the engine's step
    return method.weight * method.crd(fs, ft, batch.index, update_memory=False)


EXPECTED: dict[str, Callable] = {
    "vid": vid_expected,
    "reviewkd": reviewkd_expected,
    "crd": crd_expected,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_engine_loss_is_the_building_block_on_the_captures(name: str, data) -> None:
    teacher, student = networks()
    method = build_method(name, teacher)
    trainer = trainer_for(method, student, data)
    batch = batch_of(data, ROWS)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    torch.manual_seed(3)
    losses = trainer.objective(batch, 0.5)
    assert list(losses) == [name]
    losses[name].backward()  # gradients reach the student and the connectors
    assert student.features.stage1[0].conv1.weight.grad is not None
    assert all(p.grad is not None for p in method.parameters())
    method.load_state_dict(before)  # CRD: the banks and Z as the engine's step found them
    expected = EXPECTED[name](method, student, method.teacher, batch)
    assert losses[name].item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-6)
    assert math.isfinite(losses[name].item()) and losses[name].item() != 0.0


def test_default_pairs(data) -> None:
    teacher, student = networks()
    pairs = {}
    for name in EXPECTED:
        method = build_method(name, teacher)
        trainer_for(method, student, data).close()
        pairs[name] = [(s.layer, t.layer) for s, t in method.pairs]
    assert pairs["vid"] == [(s, s) for s in STAGES]
    assert pairs["reviewkd"] == [(s, s) for s in [*STAGES, "features"]]
    assert pairs["crd"] == [("features", "features")]
    described = METHODS.describe()
    for name, who in (("vid", "Ahn et al"), ("crd", "Tian et al"), ("reviewkd", "Chen et al")):
        assert who in described[name]
        assert build_method(name, teacher).needs == {"teacher"}  # no labels, no target data


def test_reviewkd_warmup_is_a_linear_ramp_in_epochs(data) -> None:
    teacher, student = networks()
    method = build_method("reviewkd", teacher, warmup=2)
    trainer = trainer_for(method, student, data, epochs=4)
    batch = batch_of(data, ROWS)
    full = trainer.objective(batch, 0.75)["reviewkd"].item()  # epoch 3 of 4: past the warmup
    half = trainer.objective(batch, 0.25)["reviewkd"].item()  # epoch 1 of a 2-epoch warmup
    assert half == pytest.approx(0.5 * full, rel=1e-6)
    assert trainer.objective(batch, 0.0)["reviewkd"].item() == 0.0
    assert method.ramp(0.1) == pytest.approx(0.2)


# ---- CRD's memory ------------------------------------------------------------------------
def test_crd_step_updates_the_batch_rows_only(data) -> None:
    teacher, student = networks()
    method = build_method("crd", teacher)
    trainer = trainer_for(method, student, data)
    memory = method.crd.memory
    old_s, old_t = memory.memory_s.clone(), memory.memory_t.clone()
    batch = batch_of(data, ROWS)
    trainer.objective(batch, 0.0)
    (fs,) = capture(student, ["features"], batch.x)
    with torch.no_grad():
        (ft,) = capture(method.teacher, ["features"], batch.x)
        v_s, v_t = method.crd.embed_s(fs), method.crd.embed_t(ft)
    others = torch.ones(len(old_s), dtype=torch.bool)
    others[ROWS] = False
    for new, old, v in ((memory.memory_s, old_s, v_s), (memory.memory_t, old_t, v_t)):
        assert torch.equal(new[others], old[others])
        expected = F.normalize(0.5 * old[ROWS] + 0.5 * v, dim=1)
        assert torch.allclose(new[ROWS], expected, atol=1e-6)
        assert not torch.allclose(new[ROWS], old[ROWS])
    assert memory.z_s.item() > 0 and memory.z_t.item() > 0


def test_crd_clamps_nce_k_to_the_dataset(data) -> None:
    teacher, student = networks()
    method = build_method("crd", teacher)
    trainer_for(method, student, data).close()
    memory = method.crd.memory
    assert memory.requested_k == 16384
    assert memory.k == len(data[0]) - 1
    assert memory.memory_s.shape == (len(data[0]), 128)
    small = build_method("crd", teacher, nce_k=50, feat_dim=16)
    trainer_for(small, student, data).close()
    assert small.crd.memory.k == 50 and small.crd.memory.memory_t.shape[1] == 16


def test_crd_errors(data) -> None:
    teacher, student = networks()
    method = build_method("crd", teacher)
    trainer = trainer_for(method, student, data)
    x, y = data
    with pytest.raises(ConfigError, match=r"Batch\.index"):
        trainer.objective(Batch(x[ROWS], y[ROWS]), 0.0)
    with pytest.raises(ConfigError, match="nce_m"):
        build_method("crd", teacher, nce_m=1.0)
    two = build_method("crd", teacher, student_layers=["stage2", "stage3"],
                       teacher_layers=["stage2", "stage3"])
    with pytest.raises(ConfigError, match="one student layer"):
        trainer_for(two, student, data)


# ---- end to end --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vid", "reviewkd", "crd", "kd+crd"])
def test_method_trains_end_to_end(method: str) -> None:
    teacher, _ = networks()
    result = tk.distill(teacher, "resnet8x4", "digits", method=method, epochs=1, **RUN)
    train = result.history[-1]["train"]
    assert all(math.isfinite(v) for v in train.values())
    names = method.split("+")
    assert all(k == "loss" or k.split(".")[0] in [*names, "supervised"] for k in train)
    assert all(name in train for name in names)
    assert ("supervised.ce" in train) == ("kd" not in names)


def test_crd_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    teacher, _ = networks()
    first = tk.distill(teacher, "resnet8x4", "digits", method="crd", epochs=1,
                       out=tmp_path / "parts", **RUN)
    assert len(first.history) == 1
    parts = tk.distill(teacher, "resnet8x4", "digits", method="crd", epochs=2,
                       out=tmp_path / "parts", resume=True, **RUN)
    whole = tk.distill(teacher, "resnet8x4", "digits", method="crd", epochs=2,
                       out=tmp_path / "whole", **RUN)
    assert len(parts.history) == len(whole.history) == 2
    for a, b in zip(parts.history, whole.history, strict=True):
        assert a["train"].keys() == b["train"].keys()
        for key in a["train"]:
            assert a["train"][key] == pytest.approx(b["train"][key], rel=1e-6, abs=1e-6)
        assert a["eval"]["test"]["loss"] == pytest.approx(b["eval"]["test"]["loss"], rel=1e-6)
    saved = [load_torch(tmp_path / run / "checkpoint.pt")["objective"]
             for run in ("parts", "whole")]
    banks = [k for k in saved[0] if k.startswith("methods.crd.") and "memory." in k]
    assert {k.rsplit(".", 1)[-1] for k in banks} == {"memory_s", "memory_t", "z_s", "z_t"}
    for key in banks:
        assert torch.allclose(saved[0][key], saved[1][key], atol=1e-6), key
