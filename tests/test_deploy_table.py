"""benchmarks/deploy_table.py on tiny digits runs: every model in every format and precision
gets a row with accuracy, size and latency, and int8 shrinks a model made of Linear layers."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest

import transferkit as tk
from conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
ONNX = (importlib.util.find_spec("onnxruntime") is not None
        and importlib.util.find_spec("onnx") is not None)
FIELDS = {"group", "model", "role", "method", "format", "precision", "accuracy", "parameters",
          "bytes", "b1_median_ms", "b1_p95_ms", "b256_per_image_ms", "ratio_b1", "ratio_b256"}


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> Path:
    """A teacher, the student alone and a kd student, laid out as ``transferkit demo``'s."""
    root = tmp_path_factory.mktemp("demo")
    tk.train("small-cnn", "digits", out=root / "teacher", **FAST)
    student = {"widths": [256]}  # enough weights for int8 to beat the files' fixed overhead
    tk.train("mlp", "digits", model_options=student, out=root / "student-alone", **FAST)
    tk.distill(root / "teacher", "mlp", "digits", method="kd", student_options=student,
               out=root / "student-kd", **FAST)
    return root


@pytest.mark.parametrize("fmt", [
    pytest.param("onnx", marks=pytest.mark.skipif(not ONNX, reason="onnxruntime missing")),
    "torchscript",
])
def test_deploy_table_rows(demo_runs: Path, tmp_path: Path, monkeypatch, fmt: str) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("deploy_table")
    out = tmp_path / "deploy_table.json"
    bench.main(["--demo-runs", str(demo_runs), "--distill-runs", str(tmp_path / "none"),
                "--run-dir", str(tmp_path / "deploy"), "--formats", fmt, "--rounds", "2",
                "--calls", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert len(rows) == 3 * 2  # 3 models x fp32/int8
    assert {r["role"] for r in rows} == {"teacher", "student alone", "distilled"}
    for row in rows:
        assert not FIELDS - row.keys(), FIELDS - row.keys()
        assert 0 <= row["accuracy"] <= 1 and row["test_rows"] == 450
        assert 0 < row["b1_median_ms"] <= row["b1_p95_ms"] and row["b256_per_image_ms"] > 0
        assert Path(row["file"]).stat().st_size == row["bytes"]
    teacher = next(r for r in rows if r["role"] == "teacher" and r["precision"] == "fp32")
    assert teacher["ratio_b1"] == teacher["ratio_b256"] == 1.0
    alone = {r["precision"]: r for r in rows if r["role"] == "student alone"}
    assert alone["int8"]["bytes"] < alone["fp32"]["bytes"]
    assert result["groups"]["distill_table"]["absent"].endswith("digits rows only")
    assert result["missing_runs"] == [str(demo_runs / "student-l2")]
    assert len(result["machine"]["load_average_start"]) == 3
    assert result["command"].startswith("python benchmarks/")
