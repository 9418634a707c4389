"""memory_format: channels-last weights for convolutional networks on the CPU train to the
same numbers as contiguous ones (up to the order of float sums), and the networks leave a
run in the format they came in."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY
from transferkit.engine.memory_format import choose
from transferkit.models import build_model

RUN = {**FAST, "epochs": 2}


def _losses(result) -> list[float]:
    return [row["train"]["loss"] for row in result.history]


def test_channels_last_trains_to_the_same_numbers_as_contiguous(digits_pair) -> None:
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        model = build_model("small-cnn", (1, 8, 8), 10)
        runs[fmt] = tk.adapt(model, digits_pair, method="dann", memory_format=fmt, **RUN)
    a, b = runs["contiguous"], runs["channels_last"]
    assert a.summary["memory_format"] == "contiguous (asked for)"
    assert b.summary["memory_format"] == "channels_last (asked for)"
    assert max(abs(x - y) for x, y in zip(_losses(a), _losses(b), strict=True)) < 1e-4
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                              strict=True):
        assert torch.allclose(wa, wb, atol=1e-4), name


def test_auto_is_channels_last_for_convolutions_on_the_cpu_only() -> None:
    conv = build_model("small-cnn", (1, 8, 8), 10)
    mlp = build_model("mlp", (1, 8, 8), 10, **TINY)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose("auto", conv, cpu)[0] is True
    assert choose("auto", conv, cuda) == (
        False, "contiguous: auto uses channels-last on the CPU only (this run: cuda)")
    assert choose("auto", mlp, cpu) == (False, "contiguous: no 2-d convolution")
    assert choose("channels_last", mlp, cpu)[0] is False  # nothing to convert
    assert choose("contiguous", conv, cpu)[0] is False


def test_strided_1x1_convolutions_with_few_channels_stay_contiguous(digits, capsys) -> None:
    """oneDNN issue 6035: such a layer corrupts the heap or its gradients in channels-last
    (measured: 2 to 7 input channels on this AVX2 CPU), so neither auto nor an explicit
    request converts a network that has one, and the run says which layer."""
    small = build_model("resnet8x4", (1, 8, 8), 10, width=0.0625)  # 4-channel shortcuts
    why = choose("auto", small, torch.device("cpu"))
    assert why[0] is False and "stage2.0.shortcut.0 is a strided 1x1 convolution" in why[1]
    result = tk.train(small, digits, memory_format="channels_last", **{**FAST, "progress": True})
    assert result.summary["memory_format"] == why[1].replace("features.", "model.features.", 1)
    err = capsys.readouterr().err
    assert "memory_format: contiguous: model.features.stage2.0.shortcut.0 is a" in err, err
    wide = build_model("resnet8x4", (1, 8, 8), 10, width=0.5)  # 16 channels and more
    assert choose("auto", wide, torch.device("cpu"))[0] is True


def test_a_users_module_comes_back_in_the_format_it_was_given(digits) -> None:
    given = build_model("small-cnn", (1, 8, 8), 10)
    result = tk.train(given, digits, **FAST)
    assert result.summary["memory_format"].startswith("channels_last")
    convs = [p for p in given.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)
    already = build_model("small-cnn", (1, 8, 8), 10).to(memory_format=torch.channels_last)
    tk.train(already, digits, **FAST)
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in already.parameters() if p.dim() == 4)


def test_the_flag_is_recorded_and_may_change_at_a_resume(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["train", "--data", "digits", "--model", "small-cnn", "--out", str(out),
              *CLI_FAST]
    code, _, err = cli(*common, "--epochs", "1", "--memory-format", "contiguous")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["memory_format"] == "contiguous (asked for)"
    code, _, err = cli(*common, "--epochs", "2", "--resume", "--memory-format", "channels_last")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["memory_format"] == "channels_last (asked for)" and summary["epochs"] == 2
