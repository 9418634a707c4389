"""``compile``: the training step through torch.compile, the eager fallback and what it says,
the progress tensor that keeps one graph for the whole run, data placement on a GPU, and the
finiteness check that looks every few steps there.

Most tests trace with ``aot_eager`` (dynamo and AOTAutograd build the same graphs inductor
would compile, without a C++ build); one builds real inductor kernels for a small mlp.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import transferkit as tk
from conftest import CLI_FAST, FAST, HELPERS, TINY
from transferkit.config import TrainConfig
from transferkit.engine import compiled
from transferkit.engine.loop import TrainData, Trainer
from transferkit.engine.placement import placement
from transferkit.errors import NonFiniteLossError
from transferkit.losses import dann_warmup
from transferkit.methods import build_methods
from transferkit.methods.base import capped

STEPS = {**FAST, "epochs": 2}


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")


def losses(result) -> list[dict[str, float]]:
    return [row["train"] for row in result.history]


def close(a: list[dict[str, float]], b: list[dict[str, float]], tol: float) -> bool:
    return all(x.keys() == y.keys() and all(abs(x[k] - y[k]) <= tol * max(1.0, abs(x[k]))
                                            for k in x) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("method", ["dann", "cdan+e", "mdd", "pseudo_label"])
def test_compiled_adaptation_step_equals_eager_with_one_graph(
    digits_pair, traced, method: str
) -> None:
    """The progress changes every step; as a tensor it never forces a recompile."""
    options = {"warmup": 0.5} if method == "pseudo_label" else {}
    runs = {c: tk.adapt("small-cnn", digits_pair, method=method, method_options=options,
                        model_options={"hidden": 8}, compile=c, **STEPS)
            for c in ("off", "on")}
    record = runs["on"].summary["compile"]
    assert record["used"] == "aot_eager" and record["graph_breaks"] == 0, record
    assert record["graphs"] == 1, record  # six steps, six progress values, one graph
    assert runs["off"].summary["compile"]["used"] == "eager"
    assert close(losses(runs["off"]), losses(runs["on"]), 1e-5)


def test_a_multi_phase_method_compiles_one_graph_per_phase(digits_pair, traced) -> None:
    result = tk.adapt("small-cnn", digits_pair, method="mcd", model_options={"hidden": 8},
                      compile="on", **STEPS)
    record = result.summary["compile"]
    assert record["used"] == "aot_eager" and record["graph_breaks"] == 0
    assert record["graphs"] == 3  # source, heads, features
    eager = tk.adapt("small-cnn", digits_pair, method="mcd", model_options={"hidden": 8},
                     **STEPS)
    assert close(losses(eager), losses(result), 1e-5)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="inductor's CPU kernels need a C compiler")
def test_inductor_builds_the_kd_step(digits, trained_run: Path) -> None:
    runs = {c: tk.distill(trained_run, "mlp", digits, method="kd", student_options=TINY,
                          compile=c, **FAST) for c in ("off", "on")}
    record = runs["on"].summary["compile"]
    assert record["used"] == "inductor" and record["graphs"] == 1, record
    assert close(losses(runs["off"]), losses(runs["on"]), 1e-4)


def _refuse(gm, example_inputs):
    raise RuntimeError("no kernel for this operator on this platform")


def test_a_step_that_cannot_compile_runs_eagerly_from_where_it_started(
    digits_pair, monkeypatch, capsys
) -> None:
    """The failed first call ran part of the step (batch-norm statistics, dropout draws):
    the eager redo starts from the state before it, so the run equals an eager one."""
    monkeypatch.setattr(compiled, "BACKEND", _refuse)
    kwargs = {"method": "dann", "model_options": {"hidden": 8}, **STEPS, "progress": True}
    result = tk.adapt("small-cnn", digits_pair, compile="on", **kwargs)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("compile:")]
    assert len(lines) == 1, err
    assert "compilation failed" in lines[0] and "no kernel for this operator" in lines[0]
    assert "Traceback" not in err
    assert result.summary["compile"]["used"] == "eager"
    eager = tk.adapt("small-cnn", digits_pair, **kwargs)
    assert losses(result) == losses(eager)
    for (name, a), b in zip(result.model.state_dict().items(),
                            eager.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


class Broken(nn.Module):
    """A model with a genuine bug in its training branch: it fails compiled and eagerly
    alike, after the shape check (which runs in eval mode) passed."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            raise ValueError("this model's training branch is broken")
        return out


def test_a_genuine_error_is_reported_as_itself_not_as_a_compile_failure(
    digits, traced, capsys
) -> None:
    with pytest.raises(Exception) as caught:
        tk.train(Broken(), digits, compile="on", **{**STEPS, "progress": True})
    assert "compilation failed" not in capsys.readouterr().err
    assert "compilation failed" not in str(caught.value)
    assert "training branch is broken" in str(caught.value), caught.value


class ItemBranch(nn.Module):
    """A model whose forward reads a tensor's value: dynamo must break the graph there."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out * 2 if out.sum().item() > 1e9 else out


def test_graph_breaks_are_counted_and_named_once(digits, traced, capsys) -> None:
    result = tk.train(ItemBranch(), digits, compile="on", **{**STEPS, "progress": True})
    record = result.summary["compile"]
    assert record["used"] == "aot_eager" and record["graph_breaks"] >= 1
    assert any("item" in reason.lower() for reason in record["graph_break_reasons"]), record
    err = capsys.readouterr().err
    assert err.count("graph break(s); those parts run eagerly") == 1, err
    torch.manual_seed(0)
    eager = tk.train(ItemBranch(), digits, **STEPS)
    torch.manual_seed(0)
    again = tk.train(ItemBranch(), digits, compile="on", **STEPS)
    assert close(losses(eager), losses(again), 1e-5)


def test_graphs_without_cuda_compile_without_them_and_say_so(digits, traced, capsys) -> None:
    result = tk.train("mlp", digits, model_options=TINY, compile="graphs",
                      **{**FAST, "progress": True})
    record = result.summary["compile"]
    assert record["used"] == "aot_eager" and "CUDA graphs need a CUDA device" in record["reason"]
    assert "compile: CUDA graphs need a CUDA device (this run is on cpu)" in capsys.readouterr().err


def test_cuda_graphs_only_for_one_phase_steps_in_one_process(monkeypatch) -> None:
    """Decided when the step is built (nothing runs on the device here)."""
    monkeypatch.setattr(compiled, "BACKEND", "inductor")
    cuda, step = torch.device("cuda"), nn.Linear(2, 2)
    built = compiled.CompiledStep.build("graphs", step, cuda, show=False)
    assert built.used == "inductor+cudagraphs"
    built = compiled.CompiledStep.build("graphs", step, cuda, show=False, phases=3)
    assert built.used == "inductor" and "one-phase step (this one has 3)" in built.reason
    built = compiled.CompiledStep.build("graphs", step, cuda, show=False, processes=2)
    assert built.used == "inductor" and "several processes" in built.reason
    assert compiled.CompiledStep.build("off", step, cuda, show=False).used == "eager"


def test_compile_flag_spellings_and_resume(cli, traced, tmp_path: Path) -> None:
    base = ["train", "--data", "digits", "--model", "mlp", "--model-opt", "widths=[16]",
            "--epochs", "1", *CLI_FAST]
    out = tmp_path / "run"
    code, _, err = cli(*base, "--compile", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compile"]["requested"] == "on" and summary["compile"]["used"] == "aot_eager"
    # where the step runs may change at a resume, as the device and the precision may
    code, _, err = cli(*[a if a != "1" else "2" for a in base], "--compile", "off", "--out", out,
                       "--resume")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["compile"]["used"] == "eager"
    code, _, err = cli(*base, "--compile", "max-autotune")
    assert code == 2 and "max-autotune" in err
    assert TrainConfig(compile=True).compile == "on" and TrainConfig(compile="OFF").compile == "off"


def test_progress_schedules_give_the_same_values_for_a_float_and_a_tensor() -> None:
    for p in (0.0, 0.013, 0.25, 0.5, 0.999, 1.0, 1.7, -0.2):
        t = torch.tensor(p, dtype=torch.float64)
        assert math.isclose(float(dann_warmup(t, 10.0)), dann_warmup(p, 10.0), abs_tol=1e-12)
        assert float(capped(t * 3.0)) == capped(p * 3.0)
    # by hand: lambda(0.5) = 2 / (1 + e^-5) - 1
    assert math.isclose(dann_warmup(0.5), 2 / (1 + math.exp(-5)) - 1)


def test_the_gradient_reversal_takes_a_tensor_coefficient() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    layer = tk.losses.GradientReversal()
    layer.coeff = torch.tensor(0.25)
    (layer(x) * torch.arange(3.0)).sum().backward()
    assert torch.equal(x.grad, -0.25 * torch.arange(3.0).expand(4, 3))


# ---------------------------------------------------------------- data placement

def test_placement_keeps_data_where_it_is_unless_a_gpu_has_room() -> None:
    x = torch.zeros(1000, 256)  # 1,024,000 bytes
    y = torch.zeros(1000, dtype=torch.long)  # 8,000 bytes
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    moved, why = placement([x, y, None], cpu, "auto", 0.25)
    assert not moved and "on the CPU" in why
    moved, why = placement([x, y, None], gpu, "auto", 0.25, free=8 * 2**20)
    assert moved and "moved to cuda:0 once" in why
    moved, why = placement([x, y, None], gpu, "auto", 0.25, free=2**20)
    assert not moved and "exceed 25% of cuda:0's free memory (1.0 MiB)" in why
    moved, why = placement([x, y, None], gpu, "off", 0.25, free=2**30)
    assert not moved and "data_on_device=off" in why


def test_summary_records_where_the_batches_come_from(digits) -> None:
    result = tk.train("mlp", digits, model_options=TINY, **FAST)
    assert result.summary["data_placement"].startswith("on the CPU")


# ---------------------------------------------------------------- the finiteness check

def test_a_check_every_few_steps_names_the_window(digits, helpers_dir) -> None:
    """On a GPU the loss is read back every few steps; the error names the window."""
    model = __import__(HELPERS).nan_after(digits.input_shape, 10, calls=8)  # epoch 3, step 2
    config = TrainConfig(**{**FAST, "epochs": 5})
    trainer = Trainer(model, build_methods("supervised"),
                      TrainData(digits.train.x, digits.train.y, 10), config)
    trainer.finite_every = 2
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, steps 1-2 \(checked every 2 "
                       r"steps on cpu; at step 2: supervised.ce=nan\)"):
        trainer.fit()
    trainer.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_data_stays_there_and_the_step_replays_as_a_graph(digits_pair) -> None:
    result = tk.adapt("small-cnn", digits_pair, method="dann", model_options={"hidden": 8},
                      compile="graphs", **{**STEPS, "device": "cuda"})
    assert result.summary["compile"]["used"] == "inductor+cudagraphs"
    assert "moved to cuda" in result.summary["data_placement"]
    eager = tk.adapt("small-cnn", digits_pair, method="dann", model_options={"hidden": 8},
                     **{**STEPS, "device": "cuda"})
    assert close(losses(eager), losses(result), 1e-3)
