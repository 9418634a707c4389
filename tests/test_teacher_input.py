"""``--teacher-input``: a teacher trained elsewhere on other inputs (per-channel mean/std, 3
channels, another size) sees each batch converted to them; the student sees the data as is."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import transferkit as tk
from conftest import FAST, TINY, error_line
from transferkit.data import InputSpec
from transferkit.data.teacher_input import (
    LUMA,
    TeacherInput,
    TeacherInputConverted,
    parse_teacher_input,
)
from transferkit.errors import ConfigError

RUN = {**FAST, "epochs": 2, "steps_per_epoch": 5}
MEAN, STD = [0.2, 0.3, 0.4], [0.5, 0.6, 0.7]


class Recorder(nn.Module):
    """Logits of zeros, keeping the last batch it was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x.new_zeros(x.shape[0], 10) + self.scale


class ForeignTeacher(nn.Module):
    """A digits teacher as another project would ship it: it takes 3 x 8 x 8 inputs
    normalised with ``MEAN``/``STD`` (per channel) and undoes that itself."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = x.reshape(x.shape[0], 3, 8, 8) * self.std + self.mean  # 1 channel: refused
        return self.inner(raw[:, :1])


@pytest.fixture(scope="module")
def digits_teacher() -> nn.Module:
    return tk.train("mlp", "digits", model_options={"widths": [32]}, **RUN).model.eval()


def test_parse_spells_lists_sides_and_range() -> None:
    spec = parse_teacher_input("mean=[0.1307],std=[0.3081],size=28")
    assert spec == TeacherInput(mean=(0.1307,), std=(0.3081,), size=(28, 28))
    both = parse_teacher_input("mean=[0.485, 0.456, 0.406], std=[0.229,0.224,0.225], "
                               "size=[32, 48], channels=3")
    assert both.mean == (0.485, 0.456, 0.406) and both.size == (32, 48) and both.channels == 3
    # range [-1, 1]: raw 0 -> -1 and raw 1 -> 1, i.e. mean 0.5, std 0.5
    assert parse_teacher_input("range=[-1,1]") == TeacherInput(mean=(0.5,), std=(0.5,))
    assert parse_teacher_input({"mean": 0.5, "std": 0.25}) == TeacherInput((0.5,), (0.25,))
    assert parse_teacher_input(spec.to_dict()) == spec  # what config.yaml holds reads back


@pytest.mark.parametrize(("text", "says"), [
    ("mean=[0.1", "unbalanced"),
    ("mean=0.1]", "unbalanced"),
    ("colour=3", "unknown key 'colour'"),
    ("std=0", "std must be positive"),
    ("std=[1,-1]", "std must be positive"),
    ("mean=nan", "not a number"),
    ("mean=[1,2],std=[1,2,3]", "mean has 2 values and std 3"),
    ("size=0", "size must be a whole number"),
    ("size=100000", "size must be a whole number"),
    ("size=[1,2,3]", "size is one side or [height, width]"),
    ("size=2.5", "size must be a whole number"),
    ("channels=3,mean=[1,2]", "channels=3 but mean/std give 2"),
    ("range=[1,0]", "high > low"),
    ("range=[0,1],mean=0", "range or mean/std"),
    ("mean", "is not KEY=VALUE"),
    ("", "nothing given"),
    ("mean=1,mean=2", "given twice"),
])
def test_bad_specs_get_one_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match="--teacher-input") as caught:
        parse_teacher_input(text)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_normalisation_and_channels_match_numpy() -> None:
    """Pairs store [-1, 1] (mean 0.5, std 0.5); the teacher gets (raw - m_c) / s_c on 3
    repeated channels, computed here with NumPy."""
    rng = np.random.default_rng(0)
    stored = rng.uniform(-1, 1, size=(4, 1, 5, 5)).astype(np.float32)
    recorder = Recorder()
    wrapped = TeacherInputConverted(recorder, TeacherInput(tuple(MEAN), tuple(STD), channels=3),
                                    InputSpec(0.5, 0.5), (1, 5, 5))
    wrapped(torch.from_numpy(stored))
    raw = stored * 0.5 + 0.5
    want = (np.repeat(raw, 3, axis=1) - np.array(MEAN).reshape(1, 3, 1, 1)) / np.array(
        STD).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(recorder.seen.numpy(), want, rtol=1e-5, atol=1e-6)


def test_three_channels_to_one_is_the_luma() -> None:
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 1, size=(2, 3, 4, 4)).astype(np.float32)
    recorder = Recorder()
    TeacherInputConverted(recorder, TeacherInput(channels=1), InputSpec(), (3, 4, 4))(
        torch.from_numpy(raw))
    want = np.tensordot(np.array(LUMA), raw, axes=([0], [1]))[:, None]
    np.testing.assert_allclose(recorder.seen.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("side", [16, 5])
def test_resizing_matches_pillow(side: int) -> None:
    """Up (bilinear) and down (antialiased bilinear, as Pillow reduces) against Pillow."""
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 1, size=(8, 8)).astype(np.float32)
    recorder = Recorder()
    TeacherInputConverted(recorder, TeacherInput(size=(side, side)), InputSpec(), (1, 8, 8))(
        torch.from_numpy(raw)[None, None])
    pillow = np.asarray(Image.fromarray(raw, mode="F").resize((side, side), Image.BILINEAR))
    assert recorder.seen.shape == (1, 1, side, side)
    np.testing.assert_allclose(recorder.seen[0, 0].numpy(), pillow, atol=2e-2)


def test_a_foreign_teacher_with_its_own_normalisation_teaches_like_the_original(
    digits_teacher: nn.Module, tmp_path: Path
) -> None:
    """A TorchScript teacher wanting 3 channels and per-channel mean/std: with the
    conversion its logits are the original's, so it teaches the same student."""
    example = torch.zeros(2, 3, 8, 8)
    path = tmp_path / "foreign.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(ForeignTeacher(digits_teacher).eval(), example), path)
    spec = {"mean": MEAN, "std": STD, "channels": 3}
    converted = tk.distill(path, "mlp", "digits", method="kd", student_options=TINY,
                           teacher_input=spec, out=tmp_path / "run", **RUN)
    original = tk.distill(digits_teacher, "mlp", "digits", method="kd", student_options=TINY,
                          **RUN)
    for name, weight in original.model.state_dict().items():
        torch.testing.assert_close(converted.model.state_dict()[name], weight)
    record = (tmp_path / "run" / "config.yaml").read_text()
    assert "teacher_input" in record and "0.7" in record
    # without the conversion the teacher refuses the 1-channel batch in one line
    with pytest.raises(ConfigError, match="--teacher-input") as caught:
        tk.distill(path, "mlp", "digits", method="kd", student_options=TINY, **RUN)
    assert "\n" not in str(caught.value)


def test_teacher_and_student_may_see_different_sizes(
    digits_teacher: nn.Module, tmp_path: Path
) -> None:
    """A teacher trained on 16 x 16: bilinear up and antialiased down again is close to the
    identity, so the teacher keeps most of its accuracy while the student sees 8 x 8."""

    class Big(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = digits_teacher

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] != 16:
                raise ValueError(f"expected 16 x 16 inputs, got {tuple(x.shape)}")
            return self.inner(F.interpolate(x, size=(8, 8), mode="bilinear", antialias=True,
                                            align_corners=False))

    direct = tk.evaluate(digits_teacher, "digits")["test"]["accuracy"]
    result = tk.distill(Big(), "mlp", "digits", method="kd", student_options=TINY,
                        teacher_input="size=16", **RUN)
    assert result.summary["teacher_accuracy"]["test"] > direct - 0.1
    assert tuple(result.model.transferkit_inputs.shape) == (1, 8, 8)  # the student: 8 x 8


def test_an_onnx_teacher_with_fixed_dimensions_is_checked_before_training(
    digits_teacher: nn.Module, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    path = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ForeignTeacher(digits_teacher).eval(), (torch.zeros(2, 3, 8, 8),),
                          path, dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    with pytest.raises(ConfigError, match=r"expects inputs 3x8x8 but data 'digits' gives 1x8x8"):
        tk.distill(path, "mlp", "digits", method="kd", student_options=TINY, **RUN)
    with pytest.raises(ConfigError, match=r"expects inputs 3x8x8 but --teacher-input"):
        tk.distill(path, "mlp", "digits", method="kd", student_options=TINY,
                   teacher_input="size=10,channels=3", **RUN)
    result = tk.distill(path, "mlp", "digits", method="kd", student_options=TINY,
                        teacher_input={"mean": MEAN, "std": STD, "channels": 3}, **RUN)
    direct = tk.evaluate(digits_teacher, "digits")["test"]["accuracy"]
    assert result.summary["teacher_accuracy"]["test"] == pytest.approx(direct, abs=1e-3)


def test_size_and_channels_apply_to_images_only() -> None:
    with pytest.raises(ConfigError, match="apply to images"):
        TeacherInputConverted(Recorder(), TeacherInput(size=(4, 4)), None, (64,))
    with pytest.raises(ConfigError, match="only 1 -> 3"):
        TeacherInputConverted(Recorder(), TeacherInput(channels=2), None, (1, 8, 8))
    per_feature = TeacherInputConverted(Recorder(), TeacherInput(mean=(0.0, 1.0)), None, (2,))
    per_feature.model.seen = None
    per_feature(torch.ones(3, 2))
    assert per_feature.model.seen.tolist() == [[1.0, 0.0]] * 3


def test_adapt_without_a_teacher_refuses_a_teacher_input() -> None:
    with pytest.raises(ConfigError, match="no teacher"):
        tk.adapt("mlp", "digits->digits_shifted", method="dann", teacher_input="size=8", **FAST)


def test_cli_records_the_conversion_and_a_resume_must_match(
    cli, digits_teacher: nn.Module, tmp_path: Path
) -> None:
    path = tmp_path / "foreign.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(ForeignTeacher(digits_teacher).eval(),
                                       torch.zeros(2, 3, 8, 8)), path)
    spec = "mean=[0.2,0.3,0.4],std=[0.5,0.6,0.7],channels=3"
    base = ["distill", "--data", "digits", "--teacher", str(path), "--student", "mlp",
            "--model-opt", "widths=[16]", "--device", "cpu", "--no-progress",
            "--steps-per-epoch", "3", "--out", str(tmp_path / "run")]
    code, _, err = cli(*base, "--epochs", "1", "--teacher-input", spec)
    assert code == 0, err
    code, _, err = cli(*base, "--epochs", "2", "--resume")  # the recorded conversion is kept
    assert code == 0, err
    code, _, err = cli(*base, "--epochs", "3", "--resume", "--teacher-input",
                       spec.replace("0.7", "0.8"))
    assert code == 2 and "teacher_input" in error_line(err)
    code, _, err = cli(*base, "--epochs", "1", "--teacher-input", "size=[8")
    assert code == 2 and "unbalanced" in error_line(err)
