"""A user's own ``nn.Module`` in adaptation: the feature layer is the one that gives the
logits whatever the order of definition, probabilities are refused, a layer never run or run
twice is named, and a GroupNorm network does not crash the CPU build of torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import transferkit as tk
from conftest import FAST, TINY
from transferkit.errors import ConfigError
from transferkit.models.features import default_layer

PAIR = "digits->digits_shifted"
RUN = {**FAST, "epochs": 1, "steps_per_epoch": 3}


class HeadFirst(nn.Module):
    """The classifier defined before the backbone: definition order is not forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(16, 10)
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                                      nn.Linear(32, 16), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))


class UnusedProjection(nn.Module):
    """A projection head defined after the classifier and never called."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.fc = nn.Linear(32, 10)
        self.proj = nn.Linear(32, 128)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))


class Probabilities(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(self.net(x), dim=1)


class SharedBlock(nn.Module):
    """One block applied twice: the input of ``block`` is two different tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.block = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.block(torch.relu(self.block(self.stem(x))))))


def test_the_default_feature_layer_gives_the_logits(capsys) -> None:
    """By definition order the last nn.Linear was backbone.3 (a hidden layer) or an unused
    projection: dan aligned a hidden layer and shot froze it as 'the head', silently."""
    x = torch.zeros(2, 1, 8, 8)
    assert default_layer(HeadFirst()) == "backbone.3"  # the static rule, without rows
    assert default_layer(HeadFirst(), x) == "classifier"
    assert default_layer(UnusedProjection(), x) == "fc"
    scaled = nn.Sequential(Probabilities().net, nn.Identity())  # output is not the Linear's
    assert default_layer(scaled, x) == "0.3"
    result = tk.adapt(HeadFirst(), PAIR, method="dan", **{**RUN, "progress": True})
    assert result.summary["feature_layer"] == "classifier"
    err = capsys.readouterr().err
    assert "features: the input of layer 'classifier' (16 values)" in err
    registered = tk.adapt("mlp", PAIR, method="dan", model_options=TINY, **RUN)
    assert registered.summary["feature_layer"] == "head"


def test_shot_freezes_the_classifier_that_gives_the_logits() -> None:
    source = tk.train(HeadFirst(), "digits", **RUN).model
    before = {k: v.clone() for k, v in source.state_dict().items()}
    tk.adapt(source, PAIR, method="shot", **RUN)
    after = source.state_dict()
    assert torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not torch.equal(before["backbone.3.weight"], after["backbone.3.weight"])


def test_shot_names_a_frozen_backbone() -> None:
    source = tk.train(HeadFirst(), "digits", **RUN).model
    source.backbone.requires_grad_(False)
    with pytest.raises(ConfigError, match=r"shot freezes the classifier \('classifier'\).*none "
                                          "of them is trainable"):
        tk.adapt(source, PAIR, method="shot", **RUN)
    assert all(p.requires_grad for p in source.classifier.parameters())  # given back


def test_probabilities_are_refused_for_the_model_and_the_teacher() -> None:
    with pytest.raises(ConfigError, match=r"the model returns probabilities .* return the "
                                          "logits"):
        tk.adapt(Probabilities(), PAIR, method="pseudo_label", **RUN)
    teacher = Probabilities()
    with pytest.raises(ConfigError, match="the teacher returns probabilities"):
        tk.distill(teacher, "mlp", "digits", method="kd", student_options=TINY, **RUN)
    log_probabilities = nn.Sequential(Probabilities().net, nn.LogSoftmax(1))  # shifted logits
    tk.adapt(log_probabilities, PAIR, method="pseudo_label", **RUN)


def test_a_feature_layer_never_run_or_run_twice_is_named() -> None:
    with pytest.raises(ConfigError, match=r"layer 'proj' of the student network is never run "
                                          r"by its forward.*feature_layer="):
        tk.adapt(UnusedProjection(), PAIR, method="coral", feature_layer="proj", **RUN)
    with pytest.raises(ConfigError, match=r"layer 'block' runs 2 times in one forward"):
        tk.adapt(SharedBlock(), PAIR, method="dan", feature_layer="block", **RUN)
    assert tk.adapt(SharedBlock(), PAIR, method="dan", **RUN).summary["feature_layer"] == "fc"
    with pytest.raises(ConfigError, match="has no layer 'nope'"):  # only the validators read it
        tk.adapt(UnusedProjection(), PAIR, method="mcc", feature_layer="nope", **RUN)


def test_mcd_refuses_a_feature_layer_that_is_not_the_classifier() -> None:
    with pytest.raises(ConfigError, match=r"mcd copies layer 'backbone.3' \(Linear\) as its "
                                          r"second classifier.*gives \(2, 16\)"):
        tk.adapt(HeadFirst(), PAIR, method="mcd", feature_layer="backbone.3", **RUN)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    with pytest.raises(ConfigError, match=r"mcd copies layer '2' \(Conv2d\).*an error"):
        tk.adapt(conv, PAIR, method="mcd", feature_layer="2", **RUN)


def test_adapt_with_kd_takes_the_source_cross_entropy_once() -> None:
    """kd mixes its own label term (1 - alpha); adapt added supervised beside it, so the
    cross-entropy counted 1.1 times against the documented 0.1."""
    teacher = tk.train("mlp", "digits", model_options=TINY, **RUN).model
    result = tk.adapt("mlp", PAIR, method="dann+kd", teacher=teacher, model_options=TINY, **RUN)
    assert result.summary["methods"] == ["dann", "kd"]
    assert not any(key.startswith("supervised") for key in result.history[-1]["train"])
    plain = tk.adapt("mlp", PAIR, method="dann", model_options=TINY, **RUN)
    assert plain.summary["methods"] == ["supervised", "dann"]


GROUPNORM_RUN = """
import torch
from torch import nn
import transferkit as tk
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                    nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
net[0].requires_grad_(False)  # a frozen stem: GroupNorm's input needs no gradient
run = dict(epochs=1, steps_per_epoch=2, batch_size=16, device="cpu", progress=False)
result = tk.adapt(net, "digits->digits_shifted", method="dann", **run)
print(result.summary["memory_format"])
net[0].requires_grad_(True)
tk.adapt(net, "digits->digits_shifted", method="tent", **run)  # tent freezes the convolutions
print("tent ok")
"""


def test_a_groupnorm_network_stays_contiguous_and_does_not_crash(sub_env) -> None:
    """torch 2.13's CPU GroupNorm backward in channels-last, with an input that needs no
    gradient, ended the process with a segmentation fault (exit 139, no message). Run in a
    child process so that a crash fails this test, not the whole suite."""
    done = subprocess.run([sys.executable, "-c", GROUPNORM_RUN], env=sub_env, text=True,
                          capture_output=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "contiguous: model.1 is a GroupNorm" in done.stdout
    assert "tent ok" in done.stdout
