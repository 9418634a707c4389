"""Source-free adaptation (shot, tent, adabn): a trained source model and unlabelled target
rows only. The source data is never loaded and the target's training labels never read."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import transferkit as tk
from conftest import CLI_FAST, TINY
from transferkit.config import TrainConfig
from transferkit.data import load_pair, pairs
from transferkit.data.base import Split
from transferkit.engine.loop import TrainData, Trainer
from transferkit.errors import ConfigError
from transferkit.losses import information_maximization, shot_cluster_labels
from transferkit.methods import Batch, build_methods
from transferkit.methods.adabn import recompute_batchnorm
from transferkit.models import build_model
from transferkit.models.features import features_and_logits

PAIR = "digits->digits_shifted"
RUN = {"epochs": 2, "steps_per_epoch": 6, "batch_size": 64, "progress": False, "device": "cpu"}
BN_MODEL = {"width": 0.125}


@pytest.fixture(scope="module")
def source_model(tmp_path_factory) -> Path:
    """A resnet8x4 (BatchNorm) trained briefly on the source, saved as a run."""
    out = tmp_path_factory.mktemp("source") / "run"
    tk.train("resnet8x4", "digits", model_options=BN_MODEL, out=out, lr=0.05, **RUN)
    return out


@pytest.mark.parametrize("method", ["shot", "tent", "adabn", "adabn+tent"])
def test_the_source_data_is_never_loaded(source_model, monkeypatch, method: str) -> None:
    real = pairs.load_dataset

    def no_source(name, *args, **kwargs):
        if name == "digits":
            raise AssertionError("the source dataset was loaded")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(pairs, "load_dataset", no_source)
    result = tk.adapt(source_model, PAIR, method=method, **RUN)
    assert set(result.summary["final"]) == {"target_test"}
    assert result.summary["source_free"] is True
    with pytest.raises(AssertionError, match="source dataset was loaded"):  # the trap works
        tk.adapt("mlp", PAIR, method="dann", model_options=TINY, **RUN)


def test_target_training_labels_are_never_read(source_model) -> None:
    target = load_pair(PAIR).target
    scrambled = replace(target, train=Split(target.train.x, torch.zeros_like(target.train.y)))
    a = tk.adapt(source_model, target, method="shot", **RUN)
    b = tk.adapt(source_model, scrambled, method="shot", **RUN)
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in b.history]


def _trainer(model, spec, x):
    methods = build_methods(spec)
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=32, progress=False, device="cpu")
    return Trainer(model, methods, TrainData(x, None, 10), cfg), methods


def test_shot_freezes_the_head_and_trains_on_im_plus_cluster_labels() -> None:
    torch.manual_seed(0)
    model = build_model("resnet8x4", (1, 8, 8), 10, **BN_MODEL)
    x = torch.randn(64, 1, 8, 8)
    run, [shot] = _trainer(model, "shot", x)
    assert not any(p.requires_grad for p in model.head.parameters())
    shot.start_epoch(0)
    features, logits = features_and_logits(model, x, "head", torch.device("cpu"))
    assert torch.equal(shot.labels, shot_cluster_labels(features, logits.softmax(1), 1))
    rows = torch.arange(8, 24)
    run.objective.eval()
    got = run.objective(Batch(x[rows], None, None, rows), 0.5)
    z = model(x[rows])
    torch.testing.assert_close(got["shot.im"], information_maximization(z))
    torch.testing.assert_close(got["shot.ce"], 0.3 * F.cross_entropy(z, shot.labels[rows]))
    head = model.head.weight.clone()
    run.objective.train()
    run.fit()
    assert torch.equal(head, model.head.weight)  # the hypothesis is frozen
    run.close()
    assert all(p.requires_grad for p in model.head.parameters())  # and given back


def test_tent_trains_only_normalisation_affine_parameters() -> None:
    torch.manual_seed(0)
    model = build_model("resnet8x4", (1, 8, 8), 10, **BN_MODEL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run, _ = _trainer(model, "tent", torch.randn(64, 1, 8, 8))
    run.fit()
    run.close()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    norm_names = {n for n, m in model.named_modules()
                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert changed and all(k.rsplit(".", 1)[0] in norm_names for k in changed)
    assert any(k.endswith(".weight") for k in changed)  # affine scale trained, not stats only
    with pytest.raises(ConfigError, match="normalisation"):
        _trainer(build_model("mlp", (1, 8, 8), 10, widths=[8]), "tent", torch.randn(8, 1, 8, 8))


def test_adabn_statistics_are_the_exact_target_averages() -> None:
    torch.manual_seed(0)
    model = build_model("resnet8x4", (1, 8, 8), 10, **BN_MODEL)
    x = torch.randn(300, 1, 8, 8) * 3 + 1
    layers = recompute_batchnorm(model, x, torch.device("cpu"), batch_size=100)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    captured = []
    handle = first.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    model.eval()
    with torch.no_grad():
        model(x)
    handle.remove()
    inputs = captured[0]
    want = inputs.mean((0, 2, 3))
    assert layers == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 1
    torch.testing.assert_close(first.running_mean, want, rtol=1e-4, atol=1e-5)
    assert first.momentum == 0.1  # restored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run, _ = _trainer(model, "adabn", x)
    history = run.fit()
    run.close()
    assert history[0]["train"] == {"loss": 0.0} and run.global_step == 0  # no step taken
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k


def test_source_free_refusals(source_model) -> None:
    with pytest.raises(ConfigError, match=r"trained source model.*--model RUN_DIR"):
        tk.adapt("resnet8x4", PAIR, method="shot", **RUN)
    with pytest.raises(ConfigError, match="source-free run reads no source data"):
        tk.adapt(source_model, PAIR, method="shot", select="source_accuracy", **RUN)
    with pytest.raises(ConfigError, match="run them separately"):
        tk.adapt(source_model, PAIR, method="shot+dann", **RUN)
    for method in ("shot+tent", "tent+shot", "adabn+shot+tent"):  # shot used to train BN only
        with pytest.raises(ConfigError, match="tent trains only the normalisation layers"):
            tk.adapt(source_model, PAIR, method=method, **RUN)
    with pytest.raises(ConfigError, match=r"without a teacher.*--teacher"):
        tk.adapt(source_model, PAIR, method="tent", teacher=source_model, **RUN)
    with pytest.raises(ConfigError, match="no BatchNorm"):
        src = tk.train("mlp", "digits", model_options=TINY, **RUN).model
        tk.adapt(src, PAIR, method="adabn", **RUN)
    with pytest.raises(ConfigError, match="reads no source data, so source_holdout"):
        tk.adapt(source_model, PAIR, method="shot", source_holdout=0.3, **RUN)
    with pytest.raises(ConfigError, match="resume=True continues a run directory"):
        tk.adapt(source_model, PAIR, method="shot", resume=True, **RUN)


def test_adabn_alone_says_which_given_settings_do_nothing(source_model, capsys) -> None:
    """adabn takes no optimizer step: an lr, optimizer or epoch count given to it used to be
    accepted without a word."""
    run = {**RUN, "progress": True}
    tk.adapt(source_model, PAIR, method="adabn", lr=0.5, optimizer="adam", **run)
    err = capsys.readouterr().err
    assert ("epochs, batch_size, steps_per_epoch, lr, optimizer have no effect: adabn takes "
            "no optimizer step") in err
    tk.adapt(source_model, PAIR, method="adabn+tent", lr=0.5, **run)  # tent steps: no note
    tk.adapt(source_model, PAIR, method="adabn", device="cpu", progress=True)  # nothing given
    assert "no effect" not in capsys.readouterr().err


def test_cli_adapts_from_a_saved_model_and_a_target_dataset(cli, source_model, tmp_path) -> None:
    out = tmp_path / "shot"
    cli("adapt", "--model", str(source_model), "--data", "digits_shifted", "--method", "shot",
        "--select", "im", "--epochs", "2", "--out", str(out), *CLI_FAST)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source_free"] and summary["selected"]["epoch"] in (1, 2)
    assert set(summary["choices"]) == {"last", "entropy", "im", "snd", "oracle"}
    assert math.isfinite(summary["final"]["target_test"])


def test_a_csv_target_alone_is_read_by_the_source_models_width_and_class_names(
        tmp_path: Path) -> None:
    """A field CSV of exactly the model's columns has no label column (its last feature was
    read as labels); a labelled one holding only some classes maps them by the model's names
    (sorted alone, 'eel' would have been class 1 instead of the model's 2)."""
    import numpy as np

    rng = np.random.default_rng(2)
    y = np.arange(60) % 3
    x = rng.normal(size=(60, 3)) + y[:, None]
    names = np.array(["cat", "dog", "eel"])
    source = tmp_path / "source.csv"
    source.write_text("a,b,c,label\n" + "".join(
        f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{names[k]}\n" for r, k in zip(x, y, strict=True)))
    run = tmp_path / "run"
    tk.train("mlp", str(source), model_options=TINY, out=run, **RUN)
    field = tmp_path / "field.csv"
    field.write_text("a,b,c\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f}\n" for r in x))
    found = tk.adapt(run, str(field), method="shot", **RUN)
    assert "target_test" not in found.summary["final"]
    partial = tmp_path / "partial.csv"
    keep = y != 1  # cat and eel only
    partial.write_text("a,b,c,label\n" + "".join(
        f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{names[k]}\n"
        for r, k in zip(x[keep], y[keep], strict=True)))
    from transferkit.api import _target_only

    target = _target_only(str(partial), None, {"test": "all"}, None, 3, ["cat", "dog", "eel"])
    assert target.classes == ("cat", "dog", "eel")
    assert set(target.test.y.tolist()) == {0, 2}
