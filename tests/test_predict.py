"""Predictions row by row: every row of a file in its order, images by path, class names from
the data or the model, written as a CSV (no label read)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY, CliRunner
from transferkit.errors import ConfigError

RUN = {**FAST, "epochs": 2}


@pytest.fixture
def labelled_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.array(["dog", "cat", "bird"])[np.arange(60) % 3]
    x = (rng.normal(size=(60, 5)) + (np.arange(60) % 3)[:, None]).astype(np.float32)
    path = tmp_path / "animals.npz"
    np.savez(path, x=x, y=y)
    return path


def test_every_row_of_a_file_in_its_order_with_its_class_names(labelled_file: Path,
                                                                tmp_path: Path) -> None:
    run = tmp_path / "run"
    tk.train("mlp", str(labelled_file), model_options=TINY, out=run, **RUN)
    found = tk.predict(run, str(labelled_file))
    with np.load(labelled_file) as arrays:  # the same rows, computed another way
        x = torch.from_numpy(arrays["x"])
    model = tk.load_model(run)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1).numpy()
    assert found.rows == [str(i) for i in range(60)]  # every row, not the 80% train split
    assert found.classes == ["bird", "cat", "dog"]  # sorted labels, as the file was read
    assert found.predicted.tolist() == probs.argmax(1).tolist()
    assert np.allclose(found.confidence.numpy(), probs.max(1), atol=1e-6)
    assert found.labels[:3] == [found.classes[i] for i in probs.argmax(1)[:3]]
    assert sum(found.counts().values()) == 60
    path = found.to_csv(tmp_path / "out" / "p.csv", probs=True)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["row", "class", "confidence", "p_bird", "p_cat", "p_dog"]
    assert len(rows) == 61 and rows[5][0] == "4"
    assert abs(sum(float(v) for v in rows[1][3:]) - 1) < 1e-4


def test_images_are_named_by_path_and_a_lone_folder_gets_the_models_names(
    tmp_path: Path,
) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (4, 4), dtype=np.uint8)).save(
                tmp_path / "src" / cls / f"{i}.png")
    (tmp_path / "field").mkdir()
    for name in ("b.png", "a.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (4, 4), dtype=np.uint8)).save(
            tmp_path / "field" / name)
    run = tmp_path / "run"
    tk.train("mlp", str(tmp_path / "src"), model_options=TINY, data_options={"test": "all"},
             out=run, **RUN)
    found = tk.predict(run, str(tmp_path / "field"))  # no labels: names from model.pt
    assert found.rows == [str(tmp_path / "field" / n) for n in ("a.png", "b.png", "c.png")]
    assert found.classes == ["cat", "dog"] and set(found.labels) <= {"cat", "dog"}
    source = tk.predict(run, str(tmp_path / "src"))
    assert source.rows[0] == str(tmp_path / "src" / "cat" / "0.png") and len(source.rows) == 6


def test_a_pair_predicts_its_target_and_a_dataset_either_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    tk.adapt("mlp", "digits->digits_shifted", model_options=TINY, out=run, **RUN)
    pair = tk.load_data("digits->digits_shifted")
    assert len(tk.predict(run, "digits->digits_shifted").rows) == len(pair.target.train)
    assert len(tk.predict(run, "digits", split="test").rows) == len(pair.source.test)
    with pytest.raises(ConfigError, match="split must be one of train, test"):
        tk.predict(run, "digits", split="val")
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        tk.predict(run, "digits", batch_size=0)
    with pytest.raises(ConfigError, match=r"is a folder; give a \.csv file name"):
        tk.predict(run, "digits").to_csv(tmp_path)


def test_cli_writes_the_csv_and_says_the_class_counts(cli: CliRunner, labelled_file: Path,
                                                      tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, err = cli("train", "--data", labelled_file, "--model-opt", "widths=[16]",
                       "--epochs", "2", *CLI_FAST, "--out", run)
    assert code == 0, err
    out = tmp_path / "predictions.csv"
    code, text, err = cli("predict", run, "--data", labelled_file, "--out", out)
    assert code == 0, err
    assert f"wrote 60 predictions of {labelled_file} to {out}" in text
    assert len(out.read_text().splitlines()) == 61
