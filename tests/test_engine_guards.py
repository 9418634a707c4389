"""Bad settings the Trainer refuses in one line before any step runs (image augmentation on
feature vectors, one-row batches through BatchNorm, features no trainable parameter feeds),
and jitter's padding in the data's own convention (a raw black pixel, -1 on pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import transferkit as tk
from conftest import FAST, TINY
from transferkit.config import TrainConfig
from transferkit.data import load_dataset, load_pair
from transferkit.data.augment import random_crop_flip, random_translate
from transferkit.data.inputs import InputSpec
from transferkit.engine import loop
from transferkit.engine.loop import TrainData, Trainer
from transferkit.errors import ConfigError
from transferkit.methods import Supervised

PAIR = "digits->digits_shifted"


def refused(match: str, call, *args, **kwargs) -> str:
    """The one-line ConfigError ``call`` raises, checked against ``match``."""
    with pytest.raises(ConfigError, match=match) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def bn_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 10))


# ---------------------------------------------------------------- 1: augmentation needs images
@pytest.mark.parametrize("setting", [{"jitter": 2}, {"augment": "flip"}, {"augment": "cifar"}])
def test_image_augmentation_on_feature_vectors_is_refused(tmp_path: Path, setting: dict) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "a.npz"
    np.savez(path, x=rng.random((60, 5), dtype=np.float32), y=np.arange(60) % 3)
    name = next(iter(setting))
    message = refused(rf"{name}=.*image inputs \(N x C x H x W\).*N x 5", tk.train, "mlp",
                      str(path), model_options=TINY, **setting, **FAST)
    assert "jitter=0, augment='none'" in message


def test_the_trainer_refuses_augmentation_before_building_anything() -> None:
    x = torch.randn(40, 5)
    data = TrainData(x, torch.arange(40) % 2, 2)
    config = TrainConfig(progress=False, device="cpu", jitter=1, augment="flip")
    refused(r"jitter=1 and augment='flip' \(image augmentation\) need image inputs", Trainer,
            nn.Linear(5, 2), [Supervised()], data, config)


# ---------------------------------------------------------------- 2: padding in the data's scale
def test_augment_functions_pad_with_fill_and_default_to_zero() -> None:
    x = torch.ones(64, 1, 6, 6)
    torch.manual_seed(0)
    default = random_translate(x, 2)
    assert set(default.unique().tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    black = random_translate(x, 2, fill=-1.0)
    assert torch.equal(black == -1, default == 0)  # the same shifts, another border value
    torch.manual_seed(0)
    crops = random_crop_flip(x, 2)
    assert set(crops.unique().tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    assert torch.equal(random_crop_flip(x, 2, fill=-1.0) == -1, crops == 0)


class Recorder(nn.Module):
    """A linear model that keeps the inputs of its training forwards."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.head = nn.Linear(int(np.prod(shape)), 10)
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.head(x.flatten(1))


def jittered(spec: InputSpec, **settings) -> Tensor:
    """What the model sees from white images (raw 1) with ``settings``, in ``spec``'s scale."""
    white = spec.range[1]
    x = torch.full((64, *spec.shape), white)
    model = Recorder(spec.shape)
    config = TrainConfig(progress=False, device="cpu", epochs=1, steps_per_epoch=2,
                         batch_size=32, **settings)
    trainer = Trainer(model, [Supervised()], TrainData(x, torch.arange(64) % 10, 10,
                                                       inputs=spec), config)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return torch.cat(model.seen)


@pytest.mark.parametrize("settings", [{"jitter": 2}, {"augment": "cifar"}])
def test_jitter_pads_pairs_in_minus_one_to_one_with_their_black(settings: dict) -> None:
    spec = load_pair(PAIR).source.inputs
    assert spec is not None and spec.range == (-1.0, 1.0)
    seen = jittered(spec, **settings)
    assert set(seen.unique().tolist()) == {-1.0, 1.0}  # the border is the background, not grey


def test_jitter_pads_zero_to_one_data_with_zero() -> None:
    spec = load_dataset("digits").inputs
    assert spec is not None and spec.range == (0.0, 1.0)
    assert set(jittered(spec, jitter=2).unique().tolist()) == {0.0, 1.0}


def test_unknown_convention_keeps_zero_padding() -> None:
    assert TrainData(torch.zeros(2, 1, 4, 4), None, 2).black == 0.0
    assert TrainData(torch.zeros(2, 3), None, 2, inputs=InputSpec(0.1307, 0.3081)).black == (
        pytest.approx(-0.1307 / 0.3081))


# ---------------------------------------------------------------- 3: one-row batches and BatchNorm
def test_batch_of_one_through_batchnorm_is_refused_before_a_step() -> None:
    model = bn_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    refused(r"batch_size=1 gives training batches of one row, and BatchNorm layer '2'.*"
            r"batch_size >= 2", tk.train, model, "digits", **{**FAST, "batch_size": 1})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step, no statistics


@pytest.mark.parametrize("method", ["shot", "tent"])
def test_source_free_batch_of_one_is_refused(method: str) -> None:
    source = tk.train(bn_mlp(), PAIR, **FAST).model
    refused(r"batch_size=1 .*BatchNorm layer '2'", tk.adapt, source, PAIR, method=method,
            **{**FAST, "batch_size": 1})
    assert all(p.requires_grad for p in source.parameters())  # nothing left frozen


def test_target_batch_of_one_is_refused_and_named() -> None:
    refused(r"target_batch_size=1 gives .*BatchNorm layer '2'.*target_batch_size >= 2",
            tk.adapt, bn_mlp(), PAIR, method="coral", target_batch_size=1, **FAST)


def test_a_discriminator_built_in_setup_is_checked_too() -> None:
    refused(r"batch_size=1 .*BatchNorm layer 'methods\.dann\.discriminator\.net\.1'",
            tk.adapt, "mlp", PAIR, method="dann", model_options=TINY,
            **{**FAST, "batch_size": 1})


def test_every_process_needs_two_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop.distributed, "world_size", lambda: 2)
    refused(r"batch_size=3 over 2 processes gives .*batch_size >= 4", tk.train, bn_mlp(),
            "digits", **{**FAST, "batch_size": 3})


def test_a_batch_smaller_than_the_process_count_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A process given no row per step averaged an empty batch (no BatchNorm needed)."""
    monkeypatch.setattr(loop.distributed, "world_size", lambda: 4)
    refused(r"batch_size=3 over 4 processes leaves some processes without a row.*at least 4",
            tk.train, "mlp", "digits", model_options=TINY, **{**FAST, "batch_size": 3})
    refused(r"target_batch_size=2 over 4 processes", tk.adapt, "mlp", PAIR, method="coral",
            model_options=TINY, target_batch_size=2, **FAST)


class EvalBatchNorm(nn.Module):
    """BatchNorm kept in eval mode during training (its statistics frozen)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = bn_mlp()

    def train(self, mode: bool = True) -> EvalBatchNorm:
        super().train(mode)
        self.net[2].eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@pytest.mark.parametrize("model", [
    lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(256, 10)),  # 8 x 8 values per channel
    EvalBatchNorm,
])
def test_batch_of_one_that_batchnorm_can_take_still_trains(model) -> None:
    result = tk.train(model(), "digits", **{**FAST, "batch_size": 1})
    assert result.summary["steps"] == FAST["steps_per_epoch"]


def test_adabn_trains_nothing_so_any_batch_size_goes() -> None:
    source = tk.train(bn_mlp(), PAIR, **FAST).model
    result = tk.adapt(source, PAIR, method="adabn", **{**FAST, "batch_size": 1})
    assert result.summary["steps"] == 0


# ---------------------------------------------------------------- 4: features nothing trains
@pytest.mark.parametrize("method", ["coral", "dann"])
@pytest.mark.parametrize("layer", [None, "0"])
def test_features_no_trainable_parameter_feeds_are_refused(method: str, layer: str | None) -> None:
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    refused(rf"the loss of {method} reads the features at the input of layer "
            rf"'{layer or '1'}', and no trainable parameter feeds them.*feature_layer",
            tk.adapt, base, PAIR, method=method, trade_off=1.0, feature_layer=layer, **FAST)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in base.modules())


def test_features_below_frozen_layers_are_refused() -> None:
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    base[1].requires_grad_(False)
    refused(r"layer '3'", tk.adapt, base, PAIR, method="coral", **FAST)


def test_features_after_a_trainable_layer_adapt() -> None:
    frozen_input = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    frozen_input[3].requires_grad_(False)  # a frozen head: the layers below still train
    weights = {}
    for trade_off in (0.0, 1.0):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        result = tk.adapt(model, PAIR, method="coral", trade_off=trade_off, **FAST)
        weights[trade_off] = result.model[1].weight.detach().clone()
    assert not torch.equal(weights[0.0], weights[1.0])  # the coral loss moved the features
    tk.adapt(frozen_input, PAIR, method="coral", **FAST)


def test_shot_reads_features_only_to_cluster() -> None:
    """SHOT with a trainable head trains it on raw-input features: not refused."""
    source = tk.train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), PAIR, **FAST).model
    result = tk.adapt(source, PAIR, method="shot", freeze_head=False, **FAST)
    assert result.summary["steps"] == FAST["steps_per_epoch"]


def test_the_verbs_give_the_trainer_their_data_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    """train, adapt and distill pass the data's InputSpec, so jitter pads a [-1, 1] pair with
    -1 through the public API too, not only a Trainer built by hand."""
    from transferkit.engine import loop

    fills: list[float] = []
    real = loop.random_translate

    def spy(x: torch.Tensor, pixels: int, fill: float = 0.0) -> torch.Tensor:
        fills.append(fill)
        return real(x, pixels, fill)

    monkeypatch.setattr(loop, "random_translate", spy)
    run = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 8, "progress": False,
           "device": "cpu", "jitter": 1}
    tk.train("small-cnn", PAIR, **run)
    tk.adapt("small-cnn", PAIR, method="dann", **run)
    teacher = tk.train("small-cnn", "digits", **run).model
    tk.distill(teacher, "small-cnn", "digits", **run)
    assert fills[:2] == [-1.0, -1.0] and fills[2:] == [0.0, 0.0], fills
