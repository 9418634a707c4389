"""A trained model meets data as it recorded it: a teacher's class names must be the data's,
its CSV columns are put in its order, its normalisation steps must match; a RunResult is
accepted wherever a model is; a saved teacher teaches as the same module does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from conftest import FAST, TINY
from transferkit.errors import CheckpointError, ConfigError

RUN = {**FAST, "model_options": TINY, "epochs": 2, "steps_per_epoch": 4, "batch_size": 16,
       "optimizer": "adam", "lr": 0.05}
DISTIL = {**{k: v for k, v in RUN.items() if k != "model_options"}, "student_options": TINY}


def write_csv(path: Path, columns: list[str], labels: list[str], seed: int,
              scale: float = 1.0) -> Path:
    """Rows of len(columns) features; class k is shifted along the column named f{k}."""
    rng = np.random.default_rng(seed)
    names = sorted(set(labels))
    lines = [",".join([*columns, "label"])]
    for i in range(60):
        label = labels[i % len(labels)]
        values = {f"f{j}": rng.normal() for j in range(4)}
        values[f"f{names.index(label)}"] += 4
        lines.append(",".join([*(f"{scale * values[c]:.4f}" for c in columns), label]))
    path.write_text("\n".join(lines) + "\n")
    return path


COLUMNS = ["f0", "f1", "f2", "f3"]


def test_a_teacher_of_other_class_names_is_refused(tmp_path: Path) -> None:
    """cat, dog vs dog, fox: the teacher's output 1 (dog) was read as the data's fox."""
    write_csv(tmp_path / "catdog.csv", COLUMNS, ["cat", "dog"], 0)
    teacher = tk.train("mlp", str(tmp_path / "catdog.csv"), out=tmp_path / "t", **RUN)
    write_csv(tmp_path / "dogfox.csv", COLUMNS, ["dog", "fox"], 1)
    with pytest.raises(ConfigError, match=r"the teacher's outputs are the classes cat, dog .* "
                                          r"other names: dog, fox"):
        tk.distill(tmp_path / "t", "mlp", str(tmp_path / "dogfox.csv"), method="kd", **DISTIL)
    with pytest.raises(ConfigError, match=r"the model .*'s outputs are the classes cat, dog"):
        tk.evaluate(tmp_path / "t", f"{tmp_path / 'dogfox.csv'}->{tmp_path / 'dogfox.csv'}")
    same = tk.distill(teacher, "mlp", str(tmp_path / "catdog.csv"), method="kd", **DISTIL)
    assert same.summary["teacher_accuracy"]["test"] > 0.9


def test_a_teacher_trained_on_other_column_order_is_fed_its_order(tmp_path: Path,
                                                                  capsys) -> None:
    """Trained on f3,f1,f0,f2, given f0..f3: it was read by position (about chance)."""
    shuffled = ["f3", "f1", "f0", "f2"]
    write_csv(tmp_path / "train.csv", shuffled, ["a", "b", "c"], 0)
    tk.train("mlp", str(tmp_path / "train.csv"), out=tmp_path / "t", **RUN)
    source = write_csv(tmp_path / "source.csv", COLUMNS, ["a", "b", "c"], 1)
    target = write_csv(tmp_path / "target.csv", COLUMNS, ["a", "b", "c"], 2)
    labels = [line.rsplit(",", 1)[1] for line in target.read_text().splitlines()[1:]]
    predicted = tk.predict(tmp_path / "t", str(target)).labels  # matched by name
    agree = np.mean([p == t for p, t in zip(predicted, labels, strict=True)])
    assert agree > 0.9
    scores = tk.evaluate(tmp_path / "t", str(target), data_options={"test": "all"})
    assert scores["test"]["accuracy"] == pytest.approx(agree)
    assert any("columns reordered to the model" in n for n in scores.notes)
    capsys.readouterr()
    run = tk.distill(tmp_path / "t", "mlp", f"{source}->{target}", method="kd",
                     **{**DISTIL, "progress": True})
    assert run.summary["teacher_accuracy"]["target_test"] > 0.9
    assert "columns reordered to the teacher's training order" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"the model was trained on .* columns in another order"):
        tk.adapt(tmp_path / "t", f"{source}->{target}", method="dann",
                 **{k: v for k, v in DISTIL.items() if k != "student_options"})


def test_a_teacher_of_other_normalisation_is_refused(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "source.csv", COLUMNS, ["a", "b"], 0, scale=1000)
    target = write_csv(tmp_path / "target.csv", COLUMNS, ["a", "b"], 1, scale=1000)
    pair = f"{source}->{target}"
    tk.adapt("mlp", pair, method="dann", data_options={"normalize": "zscore"},
             out=tmp_path / "t", **RUN)
    with pytest.raises(ConfigError, match=r"the teacher was trained on rows normalised by "
                                          r"zscore, but .* is read without normalisation"):
        tk.distill(tmp_path / "t", "mlp", pair, method="kd", **DISTIL)
    kept = tk.distill(tmp_path / "t", "mlp", pair, method="kd",
                      data_options={"normalize": "zscore"}, **DISTIL)
    assert kept.summary["teacher_accuracy"]["target_test"] > 0.9


def test_a_run_result_is_a_model_and_a_saved_teacher_teaches_as_its_module(
        tmp_path: Path) -> None:
    teacher = tk.train("mlp", "digits", out=tmp_path / "t", **RUN)
    pair = "digits->digits_shifted"
    by_result = tk.distill(teacher, "mlp", pair, method="kd", **DISTIL)
    by_path = tk.distill(tmp_path / "t", "mlp", pair, method="kd", **DISTIL)
    by_module = tk.distill(tk.load_model(tmp_path / "t"), "mlp", pair, method="kd", **DISTIL)
    weights = [r.model.state_dict() for r in (by_result, by_path, by_module)]
    for other in weights[1:]:  # loading the path drew the global RNG: another student
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
    assert tk.evaluate(teacher, "digits")["test"]["accuracy"] == pytest.approx(
        teacher.summary["final"]["test"])


def test_layer_methods_without_labels_need_a_method_on_the_outputs(tmp_path: Path) -> None:
    teacher = tk.train("mlp", "digits", **RUN).model
    with pytest.raises(ConfigError, match=r"fitnet compares intermediate layers only.*kd\+fitnet"):
        tk.distill(teacher, "mlp", "digits->digits_shifted", method="fitnet", **DISTIL)


def test_evaluate_refuses_outputs_that_are_not_finite(tmp_path: Path) -> None:
    result = tk.train("mlp", "digits", out=tmp_path / "t", **RUN)
    with torch.no_grad():
        next(result.model.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match=r"outputs are not finite .* its weights hold NaN"):
        tk.evaluate(result.model, "digits->digits_shifted", validators=True)


def test_validators_on_rows_the_model_trained_on_are_said(tmp_path: Path) -> None:
    tk.train("mlp", "digits", out=tmp_path / "t", **RUN)
    scores = tk.evaluate(tmp_path / "t", "digits->digits_shifted", validators=True)
    assert any("source rows that this model trained on (its train run held none out)" in n
               for n in scores.notes)
    adapted = tk.adapt(tmp_path / "t", "digits->digits_shifted", method="dann",
                       **{k: v for k, v in RUN.items() if k != "model_options"})
    assert "rows it has seen" in adapted.summary["validation_note"]


def test_a_teacher_of_another_image_size_names_teacher_input(tmp_path: Path) -> None:
    tk.train("mlp", "digits", out=tmp_path / "t", **RUN)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", x=rng.random((40, 1, 16, 16), dtype=np.float32),
             y=np.arange(40) % 10)
    with pytest.raises(ConfigError, match=r"--teacher-input size=8,channels=1"):
        tk.distill(tmp_path / "t", "mlp", str(tmp_path / "big.npz"), method="kd", **DISTIL)


def test_distilling_on_an_adapted_teachers_target_says_it_reads_its_labels(
        tmp_path: Path) -> None:
    tk.train("mlp", "digits", out=tmp_path / "source", **RUN)
    settings = {k: v for k, v in RUN.items() if k != "model_options"}
    tk.adapt(tmp_path / "source", "digits_shifted", method="shot", out=tmp_path / "shot",
             **settings)
    student = tk.distill(tmp_path / "shot", "mlp", "digits_shifted", method="kd", **DISTIL)
    assert "adapted to digits_shifted without its labels" in student.summary["label_note"]
    paired = tk.distill(tmp_path / "shot", "mlp", "digits->digits_shifted", method="kd",
                        **DISTIL)
    assert "label_note" not in paired.summary  # the pair reads no label


def test_evaluate_scores_validators_on_the_runs_feature_layer(tmp_path: Path) -> None:
    run = tk.adapt("mlp", "digits->digits_shifted", method="dann", out=tmp_path / "r",
                   feature_layer="features.3", **{**RUN, "model_options": {"widths": [32, 16]}})
    assert run.summary["validators_epoch"] == 2
    scores = tk.evaluate(tmp_path / "r", "digits->digits_shifted", validators=True)
    assert scores.validators["dev"] == pytest.approx(run.summary["validators"]["dev"], rel=1e-4)


def test_an_unfinished_teacher_run_names_its_command_or_its_process(tmp_path: Path) -> None:
    from transferkit.files import RunLock

    tk.train("mlp", "digits", out=tmp_path / "t", **RUN)
    (tmp_path / "t" / "model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"finish it with `transferkit train --out "):
        tk.load_model(tmp_path / "t")
    with RunLock(tmp_path / "t"), pytest.raises(CheckpointError, match=r"still training \(pid"):
        tk.distill(tmp_path / "t", "mlp", "digits", method="kd", **DISTIL)


def test_a_pair_of_the_same_data_is_said(tmp_path: Path, capsys) -> None:
    same = write_csv(tmp_path / "same.csv", COLUMNS, ["a", "b"], 0)
    tk.adapt("mlp", f"{same}->{same}", method="dann", **{**RUN, "progress": True, "epochs": 1})
    assert f"the source and the target are the same data ({same})" in capsys.readouterr().err
