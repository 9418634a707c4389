"""Your own data from the command line and the API: files as ``--data``, pairs of files,
``--data-opt`` / ``--normalize``, what the run records, resume and evaluate on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY
from transferkit.errors import CheckpointError, ConfigError


def blobs(n: int = 120, d: int = 6, shift: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, d)) + 3.0 * np.eye(3, d)[y] + shift
    return x.astype(np.float32), y + 1  # labels 1..3, as MATLAB files often have


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    from scipy.io import savemat

    xs, ys = blobs()
    xt, yt = blobs(shift=1.5, seed=1)
    np.savez(tmp_path / "a.npz", x=xs, y=ys)
    savemat(tmp_path / "b.mat", {"fts": xt.astype(np.float64), "labels": yt[:, None]})
    return {"a": str(tmp_path / "a.npz"), "b": str(tmp_path / "b.mat")}


def test_api_trains_and_adapts_on_files(files, tmp_path: Path) -> None:
    data = tk.load_data(files["a"], normalize="zscore")
    assert data.classes == (1, 2, 3) and data.input_shape == (6,)
    run = tk.train("mlp", files["a"], data_options={"normalize": "zscore"}, model_options=TINY,
                   out=tmp_path / "t", **FAST)
    record = yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    assert record["data"] == files["a"] and record["data_options"] == {"normalize": "zscore"}
    assert len(record["data_sha256"][files["a"]]) == 64
    assert 0.0 <= run.summary["final"]["test"] <= 1.0
    pair = f"{files['a']}->{files['b']}"
    adapted = tk.adapt("mlp", pair, method="dann", model_options=TINY,
                       data_options={"test": "all", "normalize": "zscore"}, **FAST)
    assert set(adapted.summary["final"]) == {"source_test", "target_test"}
    with pytest.raises(ConfigError, match="registered name"):
        tk.train("mlp", "digits", data_options={"normalize": "zscore"}, **FAST)


def test_cli_pair_of_files_resumes_and_evaluates(cli, files, tmp_path: Path) -> None:
    out = tmp_path / "run"
    pair = f"{files['a']}->{files['b']}"
    code, cli_out, err = cli("adapt", "--data", pair, "--model", "mlp", "--model-opt",
                             "widths=[16]", "--method", "dann", "--normalize", "zscore",
                             "--data-opt", "test=all", "--epochs", "1", "--out", str(out),
                             *CLI_FAST)
    assert code == 0, err
    assert "test=all: these are scored on the training rows" in cli_out
    # --resume needs only --out: the files and how to read them come from config.yaml
    code, _, err = cli("adapt", "--out", str(out), "--resume", "--epochs", "2")
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    code, text, err = cli("evaluate", str(out), "--data", pair, "--normalize", "zscore",
                          "--data-opt", "test=all", "--json")
    assert code == 0, err
    assert json.loads(text)["target_test"]["n"] == 120  # test=all: every target row


def test_a_changed_data_file_is_refused_at_resume(files, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tk.train("mlp", files["a"], model_options=TINY, out=out, **FAST)
    x, y = blobs(seed=5)
    np.savez(files["a"], x=x, y=y)
    with pytest.raises(CheckpointError, match="data_sha256"):
        tk.train("mlp", files["a"], model_options=TINY, out=out, resume=True,
                 **{**FAST, "epochs": 2})


def test_cli_refuses_bad_data_in_one_line(cli, files, tmp_path: Path) -> None:
    code, _, err = cli("train", "--data", str(tmp_path / "missing.npz"), *CLI_FAST)
    assert code == 2 and "missing.npz does not exist" in err
    code, _, err = cli("train", "--data", files["a"], "--data-opt", "colour=red", *CLI_FAST)
    assert code == 2 and "unknown data option 'colour'" in err
    code, _, err = cli("train", "--data", "digits", "--normalize", "zscore", *CLI_FAST)
    assert code == 2 and "registered name" in err
    np.savez(tmp_path / "c.npz", x=np.zeros((10, 4), np.float32), y=np.arange(10) % 2)
    code, _, err = cli("adapt", "--data", f"{files['a']}->{tmp_path / 'c.npz'}",
                       "--data-opt", "test=all", *CLI_FAST)
    assert code == 2 and "source features 6 vs target" in err
    for message in (err,):
        assert "Traceback" not in message and message.count("\n") == 1
