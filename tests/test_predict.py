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
    for part, cls in (("train", "cat"), ("test", "dog")):  # train/ then test/, every image
        (tmp_path / "tt" / part / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "tt" / part / cls /
                                                                "0.png")
    assert tk.predict(run, str(tmp_path / "tt")).rows == [
        str(tmp_path / "tt" / "train" / "cat" / "0.png"),
        str(tmp_path / "tt" / "test" / "dog" / "0.png")]


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


def test_the_files_labels_are_never_read_and_every_row_is_predicted(
    labelled_file: Path, tmp_path: Path
) -> None:
    """The model's class names, whatever the file's labels say (5..7, or other names); a
    file's x_test rows follow its x rows; test= and split= do not apply to a file."""
    run = tmp_path / "run"
    tk.train("mlp", str(labelled_file), model_options=TINY, out=run, **RUN)
    with np.load(labelled_file) as arrays:
        x = arrays["x"]
    odd = tmp_path / "odd.npz"
    np.savez(odd, x=x[:7], y=np.arange(7) + 5, x_test=x[7:10], y_test=np.zeros(3))
    found = tk.predict(run, str(odd))
    assert found.classes == ["bird", "cat", "dog"] and set(found.labels) <= set(found.classes)
    assert found.rows == [*map(str, range(7)), "x_test:0", "x_test:1", "x_test:2"]
    whole = tk.predict(run, str(labelled_file))
    assert found.predicted.tolist() == whole.predicted[:10].tolist()  # the same rows, in order
    with pytest.raises(ConfigError, match="predict reads every row"):
        tk.predict(run, str(labelled_file), data_options={"test": 0.2})
    with pytest.raises(ConfigError, match="split applies to registered datasets"):
        tk.predict(run, str(labelled_file), split="test")
    header = "f0,f1,f2,f3,f4"  # a CSV without a label column: told by the model's width
    lone = tmp_path / "lone.csv"
    lone.write_text(header + "\n" + "\n".join(",".join(f"{v:.5f}" for v in r) for r in x) + "\n")
    assert tk.predict(run, str(lone)).predicted.tolist() == whole.predicted.tolist()
    for bad, words in ((tmp_path / "sub/", "is a folder"), (lone / "x.csv", "is a file")):
        with pytest.raises(ConfigError, match=words):
            found.to_csv(str(bad) + ("/" if words == "is a folder" else ""))


def test_source_free_and_teacher_only_students_keep_the_class_names(
    labelled_file: Path, tmp_path: Path
) -> None:
    with np.load(labelled_file) as arrays:
        pool = tmp_path / "pool.npz"
        np.savez(pool, x=arrays["x"] + 0.5)  # no labels
    tk.train("mlp", str(labelled_file), model_options=TINY, out=tmp_path / "src", **RUN)
    tk.adapt(tmp_path / "src", str(pool), method="shot", out=tmp_path / "shot", **RUN)
    tk.distill(tmp_path / "src", "mlp", str(pool), student_options=TINY,
               out=tmp_path / "student", **RUN)
    for run in ("shot", "student"):
        assert tk.predict(tmp_path / run, str(pool)).classes == ["bird", "cat", "dog"], run


def test_a_field_csv_is_read_by_its_column_names(tmp_path: Path, cli: CliRunner) -> None:
    """The model keeps its training header: a field file with the columns in another order,
    or still holding the training label column, gets the predictions of the training rows
    (the file used to be read by position)."""
    rng = np.random.default_rng(5)
    y = np.arange(45) % 3
    x = rng.normal(size=(45, 3)) + y[:, None] * np.array([1.0, -1.0, 2.0])
    names = np.array(["ant", "bee", "cow"])
    train = tmp_path / "train.csv"
    train.write_text("p,q,r,species\n" + "".join(
        f"{a:.5f},{b:.5f},{c:.5f},{names[k]}\n" for (a, b, c), k in zip(x, y, strict=True)))
    swapped = tmp_path / "field.csv"
    swapped.write_text("r,p,q\n" + "".join(f"{c:.5f},{a:.5f},{b:.5f}\n" for a, b, c in x))
    run = tmp_path / "run"
    tk.train("mlp", str(train), model_options=TINY, out=run, **RUN)
    assert torch.load(run / "model.pt", weights_only=True)["columns"] == {
        "features": ["p", "q", "r"], "label": "species"}
    own = tk.predict(run, str(train))  # its own training file: 'species' left out unread
    field = tk.predict(run, str(swapped))
    assert len(own) == 45 and torch.allclose(own.probs, field.probs, atol=1e-6)
    out = tmp_path / "ts"
    code, _, err = cli("export", run, "--format", "torchscript", "--out", out / "m.ts")
    assert code == 0, err
    assert torch.allclose(tk.predict(out / "m.ts", str(swapped)).probs, own.probs, atol=1e-5)
    (tmp_path / "short.csv").write_text("p,q\n1,2\n")
    code, _, err = cli("predict", run, "--data", tmp_path / "short.csv", "--out",
                       tmp_path / "p.csv")
    assert code == 2 and "lacks the column 'r'" in err and "Traceback" not in err


def test_out_never_overwrites_what_predict_reads(labelled_file: Path, tmp_path: Path,
                                                 cli: CliRunner) -> None:
    run = tmp_path / "run"
    tk.train("mlp", str(labelled_file), model_options=TINY, out=run, **RUN)
    kept = {p: p.read_bytes() for p in (labelled_file, run / "model.pt", run / "summary.json")}
    for model, out in ((run, labelled_file), (run, run / "model.pt"),
                       (run / "model.pt", run / "summary.json")):
        code, _, err = cli("predict", model, "--data", labelled_file, "--out", out)
        assert code == 2 and f"predict --out {out} is the file" in err, err
    assert all(p.read_bytes() == data for p, data in kept.items())
    code, _, err = cli("predict", run, "--data", labelled_file, "--out", run / "p.csv")
    assert code == 0, err  # beside the run's records is a fine place


def test_a_numeric_header_is_known_by_the_models_column_names(tmp_path: Path) -> None:
    """Headers "1,2,3": the first row was read as data (41 predictions for 40 rows) and the
    columns by position."""
    rng = np.random.default_rng(6)
    y = np.arange(40) % 2
    x = rng.normal(size=(40, 3)) + y[:, None]
    (tmp_path / "t.csv").write_text("1,2,3,label\n" + "".join(
        f"{a:.4f},{b:.4f},{c:.4f},{k}\n" for (a, b, c), k in zip(x, y, strict=True)))
    (tmp_path / "p.csv").write_text("3,1,2\n" + "".join(f"{c:.4f},{a:.4f},{b:.4f}\n"
                                                        for a, b, c in x))
    run = tmp_path / "run"
    tk.train("mlp", str(tmp_path / "t.csv"), model_options=TINY, out=run, **RUN)
    own = tk.predict(run, str(tmp_path / "t.csv"))
    field = tk.predict(run, str(tmp_path / "p.csv"))
    assert len(field) == 40 and torch.allclose(field.probs, own.probs, atol=1e-6)
