"""The student leaves as a deployable file: ONNX and TorchScript, fp32 and int8, checked
against PyTorch, with size and latency; the files carry the input convention back in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import transferkit as tk
from conftest import FAST
from transferkit.errors import ConfigError

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnx", reason="the onnx extra is not installed")
RUN = {**FAST, "epochs": 2, "steps_per_epoch": 8}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    tk.train("mlp", "digits", model_options={"widths": [32]}, out=out, **RUN)
    return out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_and_reads_back(run: Path, fmt: str) -> None:
    report = tk.export(run, fmt, rows=200)
    assert report["rows_checked"] == 200 and report["data"] == "digits"
    assert report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0
    assert report["accuracy"] == report["pytorch_accuracy"]
    assert Path(report["file"]).stat().st_size == report["bytes"] > 0
    for batch in ("batch_1", "batch_256"):
        timing = report["latency"][batch]
        assert 0 < timing["median_ms"] <= timing["p95_ms"]
    saved = json.loads(Path(report["file"] + ".json").read_text())
    assert saved["max_abs_diff"] == report["max_abs_diff"]
    # the file is a model again, with its input convention, for evaluate or as a teacher
    model = tk.load_model(report["file"])
    assert model.transferkit_inputs is not None and model.transferkit_inputs.shape == (1, 8, 8)
    ours = tk.evaluate(run, "digits")["test"]["accuracy"]
    assert tk.evaluate(report["file"], "digits")["test"]["accuracy"] == ours


def test_int8_is_smaller_and_close(run: Path) -> None:
    fp32 = tk.export(run, "onnx", rows=200)
    int8 = tk.export(run, "onnx", quantize="int8", rows=200)
    assert int8["file"].endswith("model.int8.onnx") and int8["bytes"] < fp32["bytes"]
    assert int8["top1_agreement"] >= 0.8 and int8["quantize"] == "int8"


def test_an_exported_pair_model_keeps_its_scale(tmp_path: Path) -> None:
    """Trained on a pair in [-1, 1]; the ONNX file, evaluated on [0, 1] digits, converts."""
    out = tmp_path / "adapted"
    tk.adapt("mlp", "digits->digits_shifted", method="dann", model_options={"widths": [16]},
             out=out, **RUN)
    report = tk.export(out, "onnx", rows=100)
    assert report["data"] == "digits->digits_shifted"  # its target test split
    assert tk.evaluate(report["file"], "digits")["test"]["accuracy"] == tk.evaluate(
        out, "digits")["test"]["accuracy"]


def test_export_refusals_and_cli(cli, run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format"):
        tk.export(run, "tflite")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.pt").write_bytes((run / "model.pt").read_bytes())
    with pytest.raises(ConfigError, match="does not record its data"):
        tk.export(lone, "onnx")
    code, out, err = cli("export", str(run), "--format", "torchscript", "--rows", "50",
                         "--out", str(tmp_path / "student.ts"))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'student.ts'} (torchscript, none)")
    assert "top-1 agreement 100.00%" in lines[1] and "batch 256" in lines[2]


def test_torchscript_latency_runs_on_the_threads_asked(run: Path, monkeypatch) -> None:
    """``threads`` reached onnxruntime only: TorchScript was timed on all of torch's threads."""
    import torch

    from transferkit import deploy

    seen, timed = [], deploy._latency

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return timed(*args, **kwargs)

    monkeypatch.setattr(deploy, "_latency", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tk.export(run, "torchscript", rows=20, threads=1)
        assert seen == [1, 1] and torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)


def test_export_never_overwrites_what_it_reads(cli, run: Path, tmp_path: Path) -> None:
    """--out onto the run's model.pt, or re-exporting an exported file (whose default --out is
    itself), used to destroy it; both are refused and the file is left as it was."""
    saved = (run / "model.pt").read_bytes()
    code, _, err = cli("export", str(run), "--out", str(run / "model.pt"))
    assert code == 2 and "would overwrite the run's own model.pt" in err, err
    assert (run / "model.pt").read_bytes() == saved
    exported = Path(tk.export(run, "onnx", rows=20, out=tmp_path / "m.onnx")["file"])
    before = exported.read_bytes()
    code, _, err = cli("export", str(exported), "--rows", "10")
    assert code == 2 and "already an exported network" in err, err
    assert exported.read_bytes() == before
    code, _, err = cli("export", str(run), "--out", str(tmp_path / "m.ts"))  # onnx in a .ts
    assert code == 2 and "named *.onnx" in err, err


@pytest.mark.parametrize(("flag", "value"), [("--threads", "0"), ("--threads", "-1"),
                                             ("--rows", "0"), ("--rows", "-1")])
def test_export_counts_must_be_positive(cli, run: Path, flag: str, value: str) -> None:
    code, _, err = cli("export", str(run), flag, value)
    assert code == 2 and f"export {flag} must be a whole number >= 1" in err, err


def test_export_refuses_data_of_another_class_count(run: Path, tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    two = tmp_path / "two.npz"  # 8x8 8-bit images like digits, but 2 classes
    np.savez(two, x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 2)
    with pytest.raises(ConfigError, match="outputs 10 classes but the data has 2"):
        tk.export(run, "onnx", data=str(two), rows=10, out=tmp_path / "x.onnx")


def test_export_of_a_run_on_a_relative_data_path_from_elsewhere(tmp_path: Path,
                                                                monkeypatch) -> None:
    import numpy as np

    (tmp_path / "here" / "data").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "here" / "data" / "f.npz", x=rng.random((60, 8), dtype=np.float32),
             y=np.arange(60) % 3)
    monkeypatch.chdir(tmp_path / "here")
    tk.train("mlp", "data/f.npz", model_options={"widths": [8]}, out=tmp_path / "run", **FAST)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(tk.TransferkitError, match=r"data/f.npz.*give --data"):
        tk.export(tmp_path / "run", "onnx", rows=5)
