"""Feature normalisation fitted on the training rows, kept with the model and reused for its
predictions: a few field rows are read as the training rows were, not with their own
statistics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from conftest import FAST, TINY, CliRunner
from transferkit.data.inputs import CLASSES_ATTR, NORMALIZATION_ATTR
from transferkit.data.normalize import Normalization, fit
from transferkit.errors import CheckpointError, ConfigError, DataError

RUN = {**FAST, "epochs": 2}


def test_fitted_steps_match_numpy_for_features_and_images() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 50.0, size=(40, 4))
    x[:, 2] = 7.0  # a constant feature keeps std 1: (7 - 7) / 1
    fitted, out = fit("t", ("log", "zscore"), torch.from_numpy(x).float())
    logged = np.log1p(x.astype(np.float32)).astype(np.float64)
    mean, std = logged.mean(0), logged.std(0)  # population std (ddof=0)
    std[std == 0] = 1.0
    assert np.allclose(out.numpy(), (logged - mean) / std, atol=1e-5)
    assert np.allclose(out[:, 2].numpy(), 0.0)
    new = rng.gamma(2.0, 50.0, size=(3, 4))  # later rows: the training statistics, not theirs
    again = fitted.apply("t", torch.from_numpy(new).float()).numpy()
    assert np.allclose(again, (np.log1p(new.astype(np.float32)) - mean) / std, atol=1e-5)
    images = rng.normal(3.0, 2.0, size=(10, 3, 4, 4))
    fitted, out = fit("i", ("zscore",), torch.from_numpy(images).float())
    per_channel = images.transpose(1, 0, 2, 3).reshape(3, -1)
    expected = (images - per_channel.mean(1)[None, :, None, None]) / \
        per_channel.std(1)[None, :, None, None]
    assert np.allclose(out.numpy(), expected, atol=1e-5)
    assert fitted.to_record()["shape"] == [3, 1, 1]
    rows = torch.tensor([[3.0, -1.0], [0.0, 0.0]])
    assert torch.allclose(fit("l", ("l1",), rows)[1], torch.tensor([[0.75, -0.25], [0, 0]]))


def test_a_record_round_trips_and_a_damaged_one_is_refused() -> None:
    fitted, _ = fit("t", ("l1", "zscore"), torch.randn(20, 3))
    again = Normalization.from_record(json.loads(json.dumps(fitted.to_record())), "m.pt")
    assert again.steps == ("l1", "zscore")
    assert fitted.mean is not None and again.mean is not None
    assert torch.equal(again.mean, fitted.mean) and again.std is not None
    record = fitted.to_record()
    for bad, word in ((dict(record, steps=["zscore", "sqrt"]), "steps"),
                      (dict(record, mean=record["mean"][:2]), "mean"),
                      (dict(record, std=[0.0, 1.0, 1.0]), "std must be at least"),
                      (dict(record, std=[1e-320, 1.0, 1.0]), "std must be at least"),
                      (dict(record, std=[float("nan")] * 3), "std"),
                      (dict(record, shape=[-3]), "shape"), ([1, 2], "dict")):
        with pytest.raises(DataError, match=word) as caught:
            Normalization.from_record(bad, "m.pt")
        assert "m.pt" in str(caught.value)
    with pytest.raises(DataError, match="negative"):
        Normalization.from_record({"steps": ["log"]}, "m.pt").apply("few.csv",
                                                                     torch.tensor([[-1.0]]))
    with pytest.raises(DataError, match="3 features"):
        fitted.apply("few.csv", torch.randn(2, 5))


@pytest.fixture
def skewed(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A labelled CSV whose features differ in scale by 1e5, and 4 of its rows alone."""
    rng = np.random.default_rng(3)
    y = np.arange(90) % 3
    x = (rng.normal(size=(90, 4)) + y[:, None]) * np.array([100.0, 1.0, 0.01, 1000.0]) + 50
    full, few = tmp_path / "full.csv", tmp_path / "few.csv"
    names = np.array(["cat", "dog", "eel"])
    with full.open("w") as f:
        f.write("a,b,c,d,label\n")
        f.writelines(",".join(f"{v:.6f}" for v in r) + f",{names[k]}\n"
                     for r, k in zip(x, y, strict=True))
    with few.open("w") as f:
        f.write("a,b,c,d\n")
        f.writelines(",".join(f"{v:.6f}" for v in r) + "\n" for r in x[:4])
    return full, few, np.round(x, 6)


def test_predictions_of_a_few_rows_use_the_training_statistics(
    skewed: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    full, few, x = skewed
    run = tmp_path / "run"
    result = tk.train("mlp", str(full), model_options=TINY, out=run,
                      data_options={"normalize": "zscore", "test": "all"}, **RUN)
    alone = tk.predict(run, str(few))  # no normalize given: the model's own is applied
    within = tk.predict(run, str(full), data_options={"test": None})
    assert alone.predicted.tolist() == within.predicted[:4].tolist()
    assert torch.allclose(alone.probs, within.probs[:4], atol=1e-6)
    model = tk.load_model(run)  # the same rows computed another way: NumPy, all 90 rows' stats
    z = (x[:4] - x.mean(0)) / x.std(0)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(z).float()), dim=1)
    assert torch.allclose(alone.probs, probs, atol=1e-4)
    assert alone.classes == ["cat", "dog", "eel"]
    in_memory = tk.predict(result.model, str(few))  # the API's model carries it too
    assert isinstance(getattr(result.model, NORMALIZATION_ATTR), Normalization)
    assert torch.allclose(in_memory.probs, alone.probs, atol=1e-6)
    same = tk.predict(run, str(few), data_options={"normalize": "zscore"})
    assert torch.equal(same.predicted, alone.predicted)
    with pytest.raises(ConfigError, match="trained on rows normalised by zscore"):
        tk.predict(run, str(few), data_options={"normalize": "log,zscore"})


def test_exported_files_carry_the_class_names_and_the_normalisation(
    skewed: tuple[Path, Path, np.ndarray], tmp_path: Path, cli: CliRunner
) -> None:
    full, few, _ = skewed
    run = tmp_path / "run"
    tk.train("mlp", str(full), model_options=TINY, out=run,
             data_options={"normalize": "zscore"}, **RUN)
    expected = tk.predict(run, str(few))
    formats = ["torchscript"]
    try:
        import onnxruntime

        formats.append("onnx")
    except ImportError:
        pass
    for fmt in formats:
        out = tmp_path / f"model.{fmt}"
        code, text, err = cli("export", str(run), "--format", fmt, "--out", str(out))
        assert code == 0, err
        loaded = tk.load_model(out)
        assert getattr(loaded, CLASSES_ATTR) == ["cat", "dog", "eel"]
        assert getattr(loaded, NORMALIZATION_ATTR) is None  # in the graph: applied once
        csv_out = tmp_path / f"{fmt}.csv"
        code, _, err = cli("predict", str(out), "--data", str(few), "--out", str(csv_out))
        assert code == 0, err
        rows = list(csv.reader(csv_out.open()))[1:]
        assert [r[1] for r in rows] == expected.labels
        assert np.allclose([float(r[2]) for r in rows], expected.confidence.numpy(), atol=1e-5)
        assert ("inputs: raw rows: the graph applies zscore with the training rows' "
                "statistics") in text
    exported = tmp_path / "model.torchscript"  # its graph takes raw rows: never normalised twice
    with pytest.raises(DataError, match="normalises raw rows in its graph"):
        tk.evaluate(exported, str(full), data_options={"normalize": "zscore"})
    assert tk.evaluate(exported, str(full))["test"]["accuracy"] == tk.evaluate(
        run, str(full))["test"]["accuracy"]
    code, _, err = cli("export", str(run), "--normalize", "l1", "--out", str(tmp_path / "x.ts"),
                       "--format", "torchscript")
    assert code == 2 and "which the exported graph applies itself" in err
    if "onnx" in formats:  # a deployer's runtime alone, on the raw field rows: the same answer
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
        raw = np.loadtxt(few, delimiter=",", skiprows=1, dtype=np.float32)
        logits = session.run(None, {"input": raw})[0]
        assert np.allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(),
                           expected.probs.numpy(), atol=1e-5)


def test_a_crafted_normalisation_in_a_model_file_is_one_line(
    skewed: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    full, _, _ = skewed
    run = tmp_path / "run"
    tk.train("mlp", str(full), model_options=TINY, out=run,
             data_options={"normalize": "zscore"}, **RUN)
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["normalize"]["steps"] == ["zscore"] and len(saved["normalize"]["mean"]) == 4
    good = dict(saved)
    for key, value, word in (
            ("normalize", {**saved["normalize"], "std": [1.0, -2.0, 1.0, 1.0]}, "normalisation"),
            ("normalize", {**saved["normalize"], "shape": [4, 1], "mean": [0.0] * 4,
                           "std": [1.0] * 4}, "normalisation"),
            ("classes", [{"a": 1}, {"b": 2}, {"c": 3}], "class"),
            ("classes", ["cat", "cat", "eel"], "class"), ("classes", ["cat"], "class")):
        torch.save({**good, key: value}, run / "model.pt")
        with pytest.raises(CheckpointError, match=rf"model\.pt: its {word} record is damaged"):
            tk.load_model(run)


def test_a_model_trained_without_normalize_records_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    y = np.arange(60) % 3
    path = tmp_path / "small.npz"
    np.savez(path, x=(rng.normal(size=(60, 4)) + y[:, None]).astype(np.float32), y=y)
    run = tmp_path / "run"
    tk.train("mlp", str(path), model_options=TINY, out=run, **RUN)
    assert "normalize" not in torch.load(run / "model.pt", weights_only=True)
    assert getattr(tk.load_model(run), NORMALIZATION_ATTR) is None
    found = tk.predict(run, str(path), data_options={"normalize": "zscore"})  # the user's
    assert len(found) == 60


def test_evaluate_reads_files_as_the_model_was_trained(
    skewed: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    """No --normalize: the model's steps, each file with its own training rows' statistics
    (the training file is read exactly as in training); other steps given: said."""
    full, _, _ = skewed
    run = tmp_path / "run"
    tk.train("mlp", str(full), model_options=TINY, out=run,
             data_options={"normalize": "zscore"}, **RUN)
    alike = tk.evaluate(run, str(full))
    assert any("read with the model's normalisation (zscore, its training rows'" in n
               for n in alike.notes)
    assert alike["test"]["accuracy"] == tk.load_run(run).summary["final"]["test"]
    shifted = tmp_path / "shifted.csv"  # other rows: scored as predict reads them
    lines = full.read_text().splitlines()
    shifted.write_text("\n".join([lines[0], *(",".join(
        [*(f"{2 * float(v) + 5:.6f}" for v in line.split(",")[:-1]), line.split(",")[-1]])
        for line in lines[1:])]) + "\n")
    scored = tk.evaluate(run, str(shifted), data_options={"test": "all"})
    labels = [line.split(",")[-1] for line in lines[1:]]
    predicted = tk.predict(run, str(shifted)).labels
    agree = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
    assert scored["test"]["accuracy"] == pytest.approx(agree)
    other = tk.evaluate(run, str(full), data_options={"normalize": "l1"})
    assert any("trained on rows normalised by zscore, but " in n and "is read normalised by l1"
               in n for n in other.notes)
