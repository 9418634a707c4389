"""Teachers from other toolchains: a TorchScript file and an ONNX file (run by onnxruntime),
each written here from a small PyTorch teacher, teach the same student as the original."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import transferkit as tk
from conftest import FAST, TINY
from transferkit.errors import CheckpointError, ConfigError

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
RUN = {**FAST, "epochs": 2, "steps_per_epoch": 5}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("teachers")
    teacher = tk.train("mlp", "digits", model_options={"widths": [32]}, **RUN).model.eval()
    example = torch.zeros(2, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(teacher, example), root / "teacher_script.pt")
        torch.onnx.export(teacher, (example,), root / "teacher.onnx", dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return {"module": teacher, "torchscript": root / "teacher_script.pt",
            "onnx": root / "teacher.onnx"}


def student_weights(teacher) -> dict[str, torch.Tensor]:
    return tk.distill(teacher, "mlp", "digits", method="kd", student_options=TINY,
                      **RUN).model.state_dict()


def test_foreign_teachers_teach_the_same_student(teachers) -> None:
    original = student_weights(teachers["module"])
    scripted = student_weights(teachers["torchscript"])
    onnx = student_weights(teachers["onnx"])
    for key, value in original.items():
        torch.testing.assert_close(scripted[key], value, rtol=0, atol=1e-6)
        torch.testing.assert_close(onnx[key], value, rtol=1e-4, atol=1e-5)


def test_an_onnx_model_evaluates_like_the_original(teachers) -> None:
    ours = tk.evaluate(teachers["module"], "digits")["test"]["accuracy"]
    assert tk.evaluate(teachers["onnx"], "digits")["test"]["accuracy"] == ours
    assert tk.evaluate(teachers["torchscript"], "digits")["test"]["accuracy"] == ours


def test_feature_methods_need_a_pytorch_teacher(teachers, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gives only its logits"):
        tk.distill(teachers["onnx"], "mlp", "digits", method="pkt", student_options=TINY, **RUN)
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        tk.distill(bad, "mlp", "digits", method="kd", student_options=TINY, **RUN)


def test_cli_distils_from_an_onnx_file(cli, teachers, tmp_path: Path) -> None:
    code, _, err = cli("distill", "--data", "digits", "--teacher", str(teachers["onnx"]),
                         "--model", "mlp", "--model-opt", "widths=[16]", "--method", "kd",
                         "--epochs", "1", "--steps-per-epoch", "3", "--device", "cpu",
                         "--no-progress", "--out", str(tmp_path / "run"))
    assert code == 0, err
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "OnnxModel" in config and "teacher.onnx" in config
