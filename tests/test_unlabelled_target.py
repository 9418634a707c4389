"""An adaptation target without labels (photos from the field): read from a file or folder,
adapted to, validated without labels, and never scored with an accuracy it cannot have."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

import transferkit as tk
from conftest import CLI_FAST, FAST, TINY, CliRunner
from transferkit.data import UNLABELLED, Dataset, DomainPair, Split, unlabelled
from transferkit.errors import ConfigError, DataError

RUN = {**FAST, "epochs": 2}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A labelled source of 3 classes (string labels) and a shifted target without labels."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 3
    y = np.arange(90) % 3
    source = (centres[y] + rng.normal(size=(90, 6))).astype(np.float32)
    target = (centres[np.arange(60) % 3] + rng.normal(size=(60, 6)) + 1.5).astype(np.float32)
    paths = {"source": tmp_path / "source.npz", "target": tmp_path / "target.npz",
             "mat": tmp_path / "target.mat"}
    np.savez(paths["source"], x=source, y=np.array(["a", "b", "c"])[y])
    np.savez(paths["target"], x=target, x_test=target[:5])  # test arrays without labels
    savemat(paths["mat"], {"fts": target})
    return paths


def pair_of(files: dict[str, Path], side: str = "target") -> str:
    return f"{files['source']}->{files[side]}"


def test_a_target_file_without_labels_is_read_as_unlabelled(files: dict[str, Path]) -> None:
    for side in ("target", "mat"):
        pair = tk.load_data(pair_of(files, side))
        target = pair.target
        assert not target.labelled and pair.source.labelled
        assert target.num_classes == 3 and target.classes == ("a", "b", "c")  # the source's
        assert len(target.train) == 60 and target.test is target.train  # every row, unscored
        assert bool((target.train.y == UNLABELLED).all())
        assert "no labels" in target.description
    assert "arrays not read: 'x_test'" in tk.load_data(pair_of(files)).target.description
    # normalize on the unlabelled side uses its own rows
    z = tk.load_data(pair_of(files), normalize="zscore").target.train.x
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-5)
    # alone, a file without labels cannot be trained on; the message says where it belongs
    with pytest.raises(DataError, match=r"no labels array.*adaptation target: adapt --data"):
        tk.load_data(str(files["target"]))


def test_a_csv_target_without_a_label_column(tmp_path: Path) -> None:
    """A target CSV of exactly the source's feature columns (none named like a label) has
    no labels; one more column is its label column, as in any CSV."""
    rng = np.random.default_rng(2)
    source = tmp_path / "source.csv"
    rows = [f"{a:.3f},{b:.3f},{c:.3f},{'ab'[i % 2]}" for i, (a, b, c) in
            enumerate(rng.normal(size=(20, 3)))]
    source.write_text("f0,f1,f2,label\n" + "\n".join(rows) + "\n")
    field = tmp_path / "field.csv"
    field.write_text("f0,f1,f2\n" + "\n".join(",".join(f"{v:.3f}" for v in r)
                                              for r in rng.normal(size=(7, 3))) + "\n")
    pair = tk.load_data(f"{source}->{field}")
    assert not pair.target.labelled and pair.target.input_shape == (3,)
    assert len(pair.target.train) == 7 and pair.target.classes == ("a", "b")
    bare = tmp_path / "bare.csv"  # no header either
    bare.write_text("\n".join(",".join(f"{v:.3f}" for v in r)
                              for r in rng.normal(size=(5, 3))) + "\n")
    assert not tk.load_data(f"{source}->{bare}").target.labelled
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("f0,f1,f2,label\n1,2,3,a\n4,5,6,b\n1,1,1,a\n2,2,2,b\n")
    assert tk.load_data(f"{source}->{labelled}").target.labelled


def test_a_flat_image_folder_is_an_unlabelled_target(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "src" / cls / f"{i}.png")
    (tmp_path / "field").mkdir()
    for i in range(5):
        pixels = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "field" / f"{i}.png")
    pair = tk.load_data(f"{tmp_path / 'src'}->{tmp_path / 'field'}")
    assert not pair.target.labelled and pair.target.input_shape == (1, 8, 8)
    assert len(pair.target.train) == 5 and pair.target.classes == ("cat", "dog")
    with pytest.raises(DataError, match="no class folders"):  # alone it still needs classes
        tk.load_data(str(tmp_path / "field"))


def test_unlabelled_datasets_are_checked(files: dict[str, Path]) -> None:
    x = torch.rand(4, 3)
    data = unlabelled("field", x, 2)
    assert not data.labelled and data.train.y.tolist() == [UNLABELLED] * 4
    with pytest.raises(DataError, match="labels are all -1"):
        Dataset("field", Split(x, torch.zeros(4)), Split(x, torch.zeros(4)), 2, labelled=False,
                train_labelled=False)
    with pytest.raises(DataError, match=r"must lie in 0\.\.1"):  # -1 is no label of a labelled set
        Dataset("d", Split(x, -torch.ones(4)), Split(x, -torch.ones(4)), 2)
    with pytest.raises(DataError, match="the source domain 'field' has no labels"):
        DomainPair("field->d", data, Dataset("d", Split(x, torch.zeros(4)),
                                             Split(x, torch.zeros(4)), 2))


def test_adapt_to_an_unlabelled_target_reports_no_target_accuracy(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = tk.adapt("mlp", pair_of(files), method="dann", model_options=TINY, select="im",
                      out=out, **RUN)
    summary = result.summary
    assert set(summary["final"]) == {"source_test"}
    assert "has no labels: no target accuracy measured" in summary["target"]
    assert "oracle" not in summary["choices"] and "im" in summary["choices"]
    assert summary["selected"]["epoch"] in (1, 2)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(set(row["eval"]) == {"source_test"} for row in rows)  # never a target score
    assert all(np.isfinite(row["validators"]["im"]) for row in rows)  # label-free, on it
    last = rows[-1]["target_predictions"]  # the one collapse sign without labels
    assert last["rows"] == 60 and 1 / 3 <= last["top_class_share"] <= 1
    name = ("a", "b", "c")[last["top_class"]]
    assert f"predicts class {name!r} for {last['top_class_share']:.0%}" in summary["target"]
    with pytest.raises(ConfigError, match=r"select=oracle .* has no labels"):
        tk.adapt("mlp", pair_of(files), method="dann", model_options=TINY, select="oracle",
                 **RUN)
    scores = tk.evaluate(out, pair_of(files))
    assert set(scores) == {"source_test"} and "no accuracy on it" in scores.notes[-1]
    scores = tk.evaluate(out, pair_of(files), validators=True)
    assert np.isfinite(scores.validators["im"]) and "dev" in scores.validators
    report = tk.export(out, "torchscript", out=tmp_path / "model.ts")  # parity on its rows
    assert report["rows_checked"] == 60 and report["top1_agreement"] == 1.0
    assert "accuracy" not in report and "no labels" in report["accuracy_note"]


def test_source_free_and_distill_on_unlabelled_inputs(files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    source = tk.train("mlp", str(files["source"]),
                      model_options=TINY, out=tmp_path / "src", **RUN)
    for target in (str(files["target"]), pair_of(files)):  # alone, or the pair's target side
        result = tk.adapt(tmp_path / "src", target, method="shot", **RUN)
        assert result.summary["final"] == {} and "no labels" in result.summary["target"]
    data = unlabelled("field", tk.load_data(pair_of(files)).target.train.x, 3)
    student = tk.distill(source.model, "mlp", data, student_options=TINY, **RUN)
    assert student.summary["methods"] == ["kd"]  # the teacher alone: no hard-label term
    with pytest.raises(ConfigError, match="train: dataset 'field' has no labels"):
        tk.train("mlp", data, **RUN)


def test_cli_says_why_no_target_accuracy_shows(cli: CliRunner, files: dict[str, Path],
                                               tmp_path: Path) -> None:
    code, out, err = cli("adapt", "--data", pair_of(files), "--method", "dann", "--model-opt",
                         "widths=[16]", "--epochs", "2", *CLI_FAST, "--out", tmp_path / "r")
    assert code == 0, err
    assert "adapt: source_test accuracy" in out and "target_test" not in out
    assert "target: " in out and "has no labels: no target accuracy measured" in out


def test_no_accuracy_is_ever_computed_on_unlabelled_rows() -> None:
    """The last guard: a code path that forgot ``Dataset.labelled`` fails in one line instead
    of reporting 0% (no prediction equals -1)."""
    from transferkit.engine.evaluate import evaluate_split

    data = unlabelled("field", torch.rand(5, 4), 3)
    with pytest.raises(DataError, match="no labels"):
        evaluate_split(torch.nn.Linear(4, 3), data.test, torch.device("cpu"))


def test_removing_the_target_labels_changes_no_weight(files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """Adaptation never reads target labels: the same target with its labels stripped trains
    to the very same weights (test=all: both targets train on every row)."""
    rng = np.random.default_rng(3)
    labelled = tmp_path / "labelled_target.npz"
    with np.load(files["target"]) as target:
        np.savez(labelled, x=target["x"], y=np.array(["a", "b", "c"])[rng.integers(0, 3, 60)])
    runs = {}
    for name, target in (("labelled", labelled), ("unlabelled", files["target"])):
        runs[name] = tk.adapt("mlp", f"{files['source']}->{target}", method="dann",
                              model_options=TINY, data_options={"test": "all"}, **RUN)
    assert "target_test" in runs["labelled"].summary["final"]
    assert "target_test" not in runs["unlabelled"].summary["final"]
    weights = [r.model.state_dict() for r in runs.values()]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_folder_of_images_and_sub_folders_is_refused(tmp_path: Path) -> None:
    """Loose images beside class folders used to be dropped without a word (and a target
    with one stray class folder was scored on its 2 images)."""
    from PIL import Image

    for folder in ("src/a", "src/b", "mixed/a"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(np.full((4, 4), 40 * i, dtype=np.uint8)).save(
                tmp_path / folder / f"{i}.png")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "mixed" / "loose.png")
    for spec in (f"{tmp_path / 'src'}->{tmp_path / 'mixed'}", str(tmp_path / "mixed")):
        with pytest.raises(DataError, match=r"holds both images \(1, e.g. loose.png\) and sub"):
            tk.load_data(spec)


def test_what_a_target_file_holds_besides_inputs_is_said(files: dict[str, Path],
                                                         tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    gt = tmp_path / "gt.npz"
    np.savez(gt, x=x, gt=np.arange(20) % 3)  # labels under a name not looked for
    target = tk.load_data(f"{files['source']}->{gt}").target
    assert not target.labelled and "arrays not read: 'gt' (set --data-opt y=NAME" in \
        target.description
    no_inputs = tmp_path / "no_inputs.npz"  # test labels without their test inputs
    np.savez(no_inputs, x=x, y_test=np.arange(5) % 3)
    with pytest.raises(DataError, match=r"has test labels .* but no test inputs"):
        tk.load_data(f"{files['source']}->{no_inputs}")
    minus = tmp_path / "minus.npz"
    np.savez(minus, x=x, y=-np.ones(20, dtype=np.int64))
    with pytest.raises(DataError, match="every label is -1"):
        tk.load_data(f"{files['source']}->{minus}")
    # the source of a pair without labels is not told it could be a target
    with pytest.raises(DataError) as info:
        tk.load_data(f"{files['target']}->{files['source']}")
    assert "no labels array" in str(info.value) and "adaptation target" not in str(info.value)


def test_a_csv_target_in_another_column_order_is_aligned_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    source = tmp_path / "source.csv"
    rows = [f"{a:.3f},{b:.3f},{c:.3f},{'ab'[i % 2]}"
            for i, (a, b, c) in enumerate(rng.normal(size=(20, 3)))]
    source.write_text("f0,f1,f2,label\n" + "\n".join(rows) + "\n")
    values = rng.normal(size=(6, 3))
    field = tmp_path / "field.csv"
    field.write_text("f2,f0,f1\n" + "\n".join(f"{c},{a},{b}" for a, b, c in values) + "\n")
    target = tk.load_data(f"{source}->{field}").target
    assert torch.allclose(target.train.x, torch.tensor(values, dtype=torch.float32), atol=1e-6)
    assert "columns put in the source's order" in target.description
    extra = tmp_path / "extra.csv"  # an index column: not the source's 3 features
    extra.write_text("i,f0,f1,f2\n" + "\n".join(f"{j}.5,1,2,3" for j in range(6)) + "\n")
    with pytest.raises(DataError, match="exactly the source's 3 feature columns"):
        tk.load_data(f"{source}->{extra}")


def test_a_lone_file_without_labels_is_evaluated_exported_and_distilled(
    files: dict[str, Path], tmp_path: Path, cli: CliRunner
) -> None:
    """What a source-free run trained on: the CLI reads it back with the model's classes."""
    tk.train("mlp", str(files["source"]), model_options=TINY, out=tmp_path / "src", **RUN)
    run = tmp_path / "shot"
    tk.adapt(tmp_path / "src", str(files["target"]), method="shot", out=run, **RUN)
    with pytest.raises(ConfigError, match="no accuracy to measure; validators=True"):
        tk.evaluate(run, str(files["target"]))
    assert np.isfinite(tk.evaluate(run, str(files["target"]), validators=True).validators["im"])
    code, out, err = cli("export", run, "--format", "torchscript")  # the recorded data
    assert code == 0, err
    assert "no labels: parity only, no accuracy" in out
    code, out, err = cli("evaluate", run, "--data", files["target"], "--validators", "--json")
    assert code == 0, err
    assert "no accuracy on it" in json.loads(out)["notes"][-1]
    student = tk.distill(run, "mlp", str(files["target"]), student_options=TINY, **RUN)
    assert student.summary["final"] == {} and student.summary["methods"] == ["kd"]


def test_a_target_with_labelled_test_rows_only(files: dict[str, Path], tmp_path: Path) -> None:
    """Unlabelled training rows and a few labelled test rows (the usual protocol when some
    field examples are labelled): adapted to without labels, scored on the test rows."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    path = tmp_path / "field.npz"
    np.savez(path, x=x, x_test=x[:9], y_test=np.array(["c", "a", "b"] * 3))
    pair = tk.load_data(f"{files['source']}->{path}")
    target = pair.target
    assert target.labelled and not target.train_labelled
    assert bool((target.train.y == UNLABELLED).all()) and len(target.train) == 40
    assert target.test.y.tolist() == [2, 0, 1] * 3  # mapped with the source's classes
    result = tk.adapt("mlp", pair, method="dann", model_options=TINY, select="oracle", **RUN)
    assert set(result.summary["final"]) == {"source_test", "target_test"}
    assert "target" not in result.summary and "oracle" in result.summary["choices"]
    assert result.history[-1]["eval"]["target_test"]["n"] == 9
    with pytest.raises(ConfigError, match="has no labels; train learns from labelled rows"):
        tk.train("mlp", target, **RUN)
    with pytest.raises(DataError, match="labelled training rows and an unlabelled test"):
        Dataset("d", target.test, target.train, 3, train_labelled=True, labelled=False)


def test_an_image_target_with_loose_train_images_and_labelled_test_folders(
    tmp_path: Path,
) -> None:
    from PIL import Image

    def save(folder: str, count: int) -> None:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(np.full((4, 4), 30 * i, dtype=np.uint8)).save(
                tmp_path / folder / f"{i}.png")

    for folder in ("src/cat", "src/dog"):
        save(folder, 3)
    save("field/train", 5)  # the unlabelled pool
    save("field/test/dog", 2)  # the few labelled field examples
    target = tk.load_data(f"{tmp_path / 'src'}->{tmp_path / 'field'}").target
    assert target.labelled and not target.train_labelled
    assert len(target.train) == 5 and target.test.y.tolist() == [1, 1]
    assert "scored on the test/ folder (2 images)" in target.description
