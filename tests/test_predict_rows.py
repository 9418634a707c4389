"""The rows ``predict`` reads: every input row of a file (``x`` then ``x_test``), checked
against the model's input shape before the model sees them, label columns left out unread,
and a model whose outputs are not finite refused in one line."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import transferkit as tk
from conftest import CliRunner, error_line
from transferkit.data.files import (
    FileOptions,
    load_file_dataset,
    load_file_pair,
    load_rows_to_predict,
)
from transferkit.errors import CheckpointError, DataError

TRAIN = {"model_options": {"widths": [8]}, "epochs": 1, "batch_size": 16, "device": "cpu",
         "progress": False}


def write_csv(path: Path, header: str | None, rows: Sequence[Sequence[object]]) -> Path:
    lines = ([header] if header is not None else []) + [",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A run trained on 4 features (two classes) and the 6 rows ``predict`` is given."""
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    y = np.arange(32) % 2
    x = (rng.normal(size=(32, 4)) + 2 * y[:, None]).astype(np.float32)
    np.savez(folder / "train.npz", x=x, y=y)
    tk.train("mlp", str(folder / "train.npz"), out=folder / "run", **TRAIN)
    return folder / "run", np.round(x[:6], 4)


def no_probe(x: Tensor) -> list[int]:
    raise AssertionError("the model was probed with rows of the wrong shape")


def save_images(folder: Path, count: int, size: tuple[int, int], mode: str = "L") -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(folder.name))
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
            folder / f"{i}.png")
    return folder


def test_rows_of_another_width_are_refused_before_the_model_sees_them(
    features: tuple[Path, np.ndarray], tmp_path: Path, cli: CliRunner
) -> None:
    run, x = features
    narrow = write_csv(tmp_path / "w3.csv", "a,b,c", x[:, :3].tolist())
    with pytest.raises(DataError, match=r"w3\.csv has 3 feature columns, the model takes 4 "
                       r"features; give the feature columns it was trained on"):
        tk.predict(run, str(narrow))
    code, _, err = cli("predict", run, "--data", narrow, "--out", tmp_path / "p.csv")
    assert code == 2 and "mat1" not in err and "feature columns" in error_line(err)
    named = write_csv(tmp_path / "named.csv", "a,b,y,c", x.tolist())  # 'y' read as the label
    with pytest.raises(DataError, match=r"has 3 feature columns \(column 'y' left out as the "
                       r"label\), the model takes 4"):
        tk.predict(run, str(named))
    assert len(tk.predict(run, str(named), data_options={"x": "a,b,y,c"})) == 6
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=x[:, :3])
    with pytest.raises(DataError, match=r"flat\.npz: rows of 3 features, the model takes 4 "
                       "features; give N x 4 arrays"):
        tk.predict(run, str(flat))
    grey = tmp_path / "grey.npz"
    np.savez(grey, x=np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"grey\.npz: inputs 1x4x4, the model takes 4 features"):
        tk.predict(run, str(grey))


def test_images_of_another_shape_name_the_option_that_fits_them(tmp_path: Path) -> None:
    """``shape`` (the model's input shape) is checked before ``classes_of`` probes the model."""
    big = save_images(tmp_path / "big", 2, (30, 50))
    rgb = save_images(tmp_path / "rgb", 2, (8, 8), "RGB")
    shape = (1, 8, 8)
    with pytest.raises(DataError, match=r"big: images 1x50x30, the model takes inputs 1x8x8: "
                       r"pass --data-opt size=8$"):
        load_rows_to_predict(big, FileOptions(), no_probe, shape=shape)
    with pytest.raises(DataError, match=r"rgb: images 3x8x8, the model takes inputs 1x8x8: "
                       r"pass --data-opt channels=1$"):
        load_rows_to_predict(rgb, FileOptions(), no_probe, shape=shape)
    with pytest.raises(DataError, match=r"pass --data-opt channels=1 --data-opt size=8$"):
        load_rows_to_predict(save_images(tmp_path / "both", 1, (5, 5), "RGB"), FileOptions(),
                             no_probe, shape=shape)
    with pytest.raises(DataError, match=r"images 1x50x30, the model takes 64 features: give a "
                       r"\.csv or \.npz of 64 features per row"):
        load_rows_to_predict(big, FileOptions(), no_probe, shape=(64,))
    arrays = tmp_path / "rgb.npz"
    np.savez(arrays, x=np.zeros((3, 8, 8, 3), dtype=np.uint8))  # channels-last colour
    with pytest.raises(DataError, match=r"rgb\.npz: inputs 3x8x8, the model takes inputs "
                       "1x8x8; give arrays of N x 1x8x8"):
        load_rows_to_predict(arrays, FileOptions(), no_probe, shape=shape)
    with pytest.raises(DataError, match=r"has 64 feature columns, the model takes inputs 1x8x8;"
                       r" give an \.npz of N x 1x8x8 arrays"):
        load_rows_to_predict(write_csv(tmp_path / "w.csv", None, [range(64)]), FileOptions(),
                             no_probe, shape=shape)
    # the options the messages name fit them; without a shape nothing is checked
    resized = load_rows_to_predict(big, FileOptions(size=8), lambda x: [0, 1], shape=shape)
    assert tuple(resized.train.x.shape) == (2, 1, 8, 8)
    grey = load_rows_to_predict(rgb, FileOptions(channels=1), lambda x: [0, 1], shape=shape)
    assert tuple(grey.train.x.shape) == (2, 1, 8, 8)
    assert tuple(load_rows_to_predict(big, FileOptions(), lambda x: [0, 1]).train.x.shape) == (
        2, 1, 50, 30)


def test_one_column_too_many_is_refused_unless_it_is_named_as_the_label(
    features: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    run, x = features
    expected = tk.predict(run, str(write_csv(tmp_path / "four.csv", "a,b,c,d", x.tolist())))
    extra = [[*row, 9] for row in x.tolist()]
    wide = write_csv(tmp_path / "w5.csv", "a,b,c,d,e", extra)
    with pytest.raises(DataError, match=r"w5\.csv has 5 columns, none named like a label .*the "
                       r"model takes 4 features: name the label column \(--data-opt y=NAME\) "
                       "or drop the extra column"):
        tk.predict(run, str(wide))
    bare = write_csv(tmp_path / "bare.csv", None, extra)
    with pytest.raises(DataError, match=r"5 columns and no header.*--data-opt y=4 for the last"):
        tk.predict(run, str(bare))
    for path, options in ((wide, {"y": "e"}), (bare, {"y": 4}), (wide, {"x": "a,b,c,d"})):
        found = tk.predict(run, str(path), data_options=options)
        assert torch.equal(found.probs, expected.probs), options
    for name in ("label", "Class", "target", "y"):
        named = write_csv(tmp_path / f"{name}.csv", f"a,b,{name},c,d",
                          [[*r[:2], "x", *r[2:]] for r in x.tolist()])
        assert torch.equal(tk.predict(run, str(named)).probs, expected.probs), name


def test_an_npz_without_labels_gives_its_x_test_rows_too(
    features: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    run, x = features
    whole = tmp_path / "whole.npz"
    np.savez(whole, x=x[:5])
    expected = tk.predict(run, str(whole))
    split = tmp_path / "split.npz"
    np.savez(split, x=x[:2], x_test=x[2:5])
    found = tk.predict(run, str(split))
    assert found.rows == ["0", "1", "x_test:0", "x_test:1", "x_test:2"]
    assert torch.equal(found.probs, expected.probs)
    other = tmp_path / "other.npz"  # a labels array of another length: never read
    np.savez(other, x=x[:2], y=np.array([0.5]), X_test=x[2:5], y_test=np.array(["a"]))
    assert torch.equal(tk.predict(run, str(other)).probs, expected.probs)
    alone = tmp_path / "alone.npz"  # test rows alone are the rows (they were refused)
    np.savez(alone, x_test=x[:5])
    assert torch.equal(tk.predict(run, str(alone)).probs, expected.probs)
    with pytest.raises(DataError, match=r"to read the test array 'x_test' as the rows: "
                                        "--data-opt x=x_test"):
        tk.train("mlp", str(alone), **TRAIN)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, x=x[:2], x_test=x[2:5, :3])
    with pytest.raises(DataError, match="x_test has rows of shape"):
        tk.predict(run, str(mismatch))


def test_evaluate_maps_a_field_files_labels_by_the_models_classes(
    features: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A field sample holding some of the classes: its labels are the model's classes (by
    index, or by the names the model recorded). It used to be refused ("the model outputs 2
    classes but the data has 1"), or its labels re-indexed from 0 on their own."""
    run, x = features
    ones = tmp_path / "ones.npz"
    np.savez(ones, x=x, y=np.ones(len(x), dtype=np.int64))
    predicted = tk.predict(run, str(ones)).labels
    scores = tk.evaluate(run, str(ones), data_options={"test": "all"})
    assert scores["test"]["accuracy"] == pytest.approx(np.mean([p == 1 for p in predicted]))
    rng = np.random.default_rng(1)
    names = np.array(["cat", "dog", "eel"])[np.arange(30) % 3]
    rows = [[*np.round(rng.normal(size=3) + 3 * (i % 3), 3), n] for i, n in enumerate(names)]
    write_csv(tmp_path / "pets.csv", "a,b,c,label", rows)
    tk.train("mlp", str(tmp_path / "pets.csv"), out=tmp_path / "pets", **TRAIN)
    field = write_csv(tmp_path / "field.csv", "a,b,c,label",
                      [r for r in rows if r[-1] in ("eel", "dog")])
    predicted = tk.predict(tmp_path / "pets", str(field)).labels
    truth = [r[-1] for r in rows if r[-1] in ("eel", "dog")]
    capsys.readouterr()
    scores = tk.evaluate(tmp_path / "pets", str(field), data_options={"test": "all"})
    assert scores["test"]["accuracy"] == pytest.approx(
        np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    tk.evaluate(tmp_path / "pets", str(field))  # the default: a held-out split, said so
    assert "field.csv holds out, not on every row" in capsys.readouterr().err


def test_evaluate_refuses_numbers_that_are_not_a_nameless_models_classes(
    features: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """A model trained on labels 0, 1 records no names: its classes are the indices. A file
    labelled 1, 2 (counting from 1, or other classes) was re-indexed in sorted order and scored
    as classes 0, 1 without a word; a label 1e300 in an array file became int64 garbage."""
    run, x = features
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, x=x, y=np.arange(len(x)) % 2 + 1)
    with pytest.raises(DataError) as caught:
        tk.evaluate(run, str(shifted), data_options={"test": "all"})
    message = str(caught.value)
    assert "label 2 is not a class of the model" in message and "indices 0..1" in message
    assert "from 1 to 2" in message and str(shifted) in message
    named = tmp_path / "named.npz"
    np.savez(named, x=x, y=np.array(["ant", "bee"] * 3))
    with pytest.raises(DataError, match=r"labels are names \('ant', 'bee'\) but the model "
                                        r"records no class names"):
        tk.evaluate(run, str(named), data_options={"test": "all"})
    huge = tmp_path / "huge.npz"
    np.savez(huge, x=x, y=np.array([0.0, 1.0, 1e300, 0.0, 1.0, 0.0]))
    with pytest.raises(DataError, match=r"1 labels \(y\) are too large for exact class"):
        tk.evaluate(run, str(huge), data_options={"test": "all"})
    ones = tmp_path / "ones.npz"  # the model's own indices, some classes only: read as before
    np.savez(ones, x=x, y=np.ones(len(x)))
    assert tk.evaluate(run, str(ones), data_options={"test": "all"})["test"]["n"] == len(x)


def test_evaluate_refuses_rows_of_another_width_as_predict_does(
    features: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Rows of 5 features for a model of 4: the message named torch's matrix product ("mat1
    and mat2 shapes cannot be multiplied"); now the file and both widths, as predict does."""
    run, x = features
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.hstack([x, x[:, :1]]), y=np.arange(len(x)) % 2)
    with pytest.raises(DataError) as caught:
        tk.evaluate(run, str(wide), data_options={"test": "all"})
    assert str(caught.value) == (f"{wide}: rows of 5 features, the model takes 4 features; "
                                 "give N x 4 arrays")


def test_label_cells_are_never_parsed(features: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    run, x = features
    expected = tk.predict(run, str(write_csv(tmp_path / "four.csv", "a,b,c,d", x[:4].tolist())))
    labels = ["cat", "", "1.5", "nan"]
    partial = write_csv(tmp_path / "partial.csv", "a,b,c,d,label",
                        [[*r, lab] for r, lab in zip(x[:4].tolist(), labels, strict=True)])
    found = tk.predict(run, str(partial))
    assert found.rows == ["0", "1", "2", "3"] and torch.equal(found.probs, expected.probs)
    by_option = write_csv(tmp_path / "species.csv", "species,a,b,c,d",
                          [["", *r] for r in x[:4].tolist()])
    found = tk.predict(run, str(by_option), data_options={"y": "species"})
    assert torch.equal(found.probs, expected.probs)
    # a y option the file lacks: a file without labels
    assert len(tk.predict(run, str(tmp_path / "four.csv"), data_options={"y": "species"})) == 4


def test_a_value_too_large_for_float32_is_one_line_without_a_numpy_warning(
    features: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    run, x = features
    huge = write_csv(tmp_path / "huge.csv", "a,b,c,d", [["1e300", 2, 3, 4], x[0].tolist()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning would be raised, not DataError
        with pytest.raises(DataError, match=r"huge\.csv: inputs 'x' hold 1 NaN or infinite "
                           "values"):
            tk.predict(run, str(huge))


def first_linear(model: nn.Module) -> nn.Linear:
    return next(m for m in model.modules() if isinstance(m, nn.Linear))


def test_outputs_that_are_not_finite_are_refused(features: tuple[Path, np.ndarray],
                                                 tmp_path: Path, cli: CliRunner) -> None:
    run, x = features
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=x)
    model = tk.load_model(run)
    with torch.no_grad():
        first_linear(model).weight.fill_(float("nan"))
    with pytest.raises(CheckpointError, match=r"outputs are not finite \(NaN or inf\) for 6 of 6 "
                       r"rows of .*rows\.npz: its weights hold NaN or infinite values \(a "
                       "damaged or diverged model\\)"):
        tk.predict(model, str(rows))
    saved = torch.load(run / "model.pt", weights_only=True)
    for name, value in saved["state_dict"].items():
        if value.is_floating_point():
            saved["state_dict"][name] = torch.full_like(value, float("nan"))
    (tmp_path / "nan").mkdir()
    torch.save(saved, tmp_path / "nan" / "model.pt")
    code, _, err = cli("predict", tmp_path / "nan" / "model.pt", "--data", rows, "--out",
                       tmp_path / "p.csv")
    assert code == 2 and "not finite" in error_line(err)
    assert not (tmp_path / "p.csv").exists()
    model = tk.load_model(run)  # finite weights that overflow on huge (finite) rows
    with torch.no_grad():
        first_linear(model).weight.fill_(1.0)
    loud = tmp_path / "loud.npz"
    np.savez(loud, x=np.vstack([x[:2], np.full((1, 4), 3e38, dtype=np.float32)]))
    with pytest.raises(CheckpointError, match=r"for 1 of 3 rows .*its weights are finite, so "
                       "the rows overflow it"):
        tk.predict(model, str(loud))


# --- a CSV's columns matched by name with the model's training columns ----------------------

SPECIES = ("setosa", "versicolor", "virginica")


def write_iris(path: Path, order: str, x: np.ndarray, labels: Sequence[str] | None,
               label: str = "species", extra: str = "") -> Path:
    """Columns ``order`` (of a, b, c, d) of ``x``, then one column of zeros per letter of
    ``extra``, then a label column named ``label`` when ``labels`` are given."""
    index = ["abcd".index(c) for c in order]
    header = [*order, *extra] + ([label] if labels is not None else [])
    rows = [[*r[index].tolist(), *[0] * len(extra)] + ([lab] if labels is not None else [])
            for lab, r in zip(labels or [""] * len(x), x, strict=True)]
    return write_csv(path, ",".join(header), rows)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, list[str]]:
    """A training CSV ``a,b,c,d,species`` (string labels) that a model was trained on."""
    folder = tmp_path_factory.mktemp("iris")
    rng = np.random.default_rng(1)
    y = np.arange(30) % 3
    x = np.round(rng.normal(size=(30, 4)) + y[:, None], 3)
    labels = [SPECIES[k] for k in y]
    path = write_iris(folder / "train.csv", "abcd", x, labels)
    tk.train("mlp", str(path), out=folder / "run", **TRAIN)
    return path, x, labels


def three_classes(x: Tensor) -> list[int]:  # as api.predict's classes_of, for 3 classes
    return list(range(3))


def by_name(path: Path, trained: tk.data.Dataset, options: FileOptions | None = None
            ) -> tk.data.Dataset:
    """The rows predict reads from ``path`` for a model trained on ``trained``."""
    return load_rows_to_predict(path, options or FileOptions(), three_classes, shape=(4,),
                                columns=trained.columns, label_column=trained.label_column)


def test_a_csv_dataset_records_its_feature_and_label_column_names(
    iris: tuple[Path, np.ndarray, list[str]], tmp_path: Path
) -> None:
    path, x, labels = iris
    data = load_file_dataset(path)
    assert data.columns == ("a", "b", "c", "d") and data.label_column == "species"
    assert data.classes == SPECIES
    assert tk.load_data(str(path)).columns == data.columns
    named = load_file_dataset(write_iris(tmp_path / "y.csv", "cadb", x, labels, label="kind"),
                              FileOptions(y="kind"))
    assert named.columns == ("c", "a", "d", "b") and named.label_column == "kind"
    bare = write_csv(tmp_path / "bare.csv", None,
                     [[*r, lab] for r, lab in zip(x.tolist(), labels, strict=True)])
    assert (load_file_dataset(bare).columns, load_file_dataset(bare).label_column) == (None, None)
    arrays = tmp_path / "xy.npz"
    np.savez(arrays, x=x, y=np.arange(30) % 3)
    assert load_file_dataset(arrays).columns is None
    # an unlabelled pair target in another column order: its columns in the source's order
    target = write_iris(tmp_path / "field.csv", "dcba", x, None)
    pair = load_file_pair(str(path), str(target), FileOptions(test="all"))
    assert pair.target.columns == ("a", "b", "c", "d") and pair.target.label_column is None
    assert torch.equal(pair.target.train.x, pair.source.train.x)
    # kept through replace(), and one name per feature
    assert replace(data, description="other").columns == data.columns
    with pytest.raises(DataError, match=r"3 column names for inputs 4; give one name per"):
        tk.data.Dataset("d", data.train, data.test, 3, columns=("a", "b", "c"))


def test_predict_matches_a_csv_by_its_column_names(
    iris: tuple[Path, np.ndarray, list[str]], tmp_path: Path
) -> None:
    path, x, labels = iris
    trained = load_file_dataset(path)
    expected = torch.tensor(x, dtype=torch.float32)
    own = by_name(path, trained)  # the training file itself: every row, species left out
    assert torch.equal(own.train.x, expected) and not own.labelled
    assert own.columns == ("a", "b", "c", "d") and own.label_column == "species"
    assert "column 'species' left out as the label" in own.description
    assert "reordered" not in own.description
    dcba = write_iris(tmp_path / "dcba.csv", "dcba", x, None)
    reordered = by_name(dcba, trained)
    assert torch.equal(reordered.train.x, expected)
    assert "columns reordered by name as in training" in reordered.description
    assert torch.equal(by_name(write_iris(tmp_path / "lab.csv", "bdac", x, labels),
                               trained).train.x, expected)
    # another column named like a label, or the one option y names, is left out unread
    other = write_iris(tmp_path / "class.csv", "cbda", x, ["?"] * len(x), label="Class")
    assert torch.equal(by_name(other, trained).train.x, expected)
    truth = write_iris(tmp_path / "truth.csv", "abcd", x, labels, label="truth")
    assert torch.equal(by_name(truth, trained, FileOptions(y="truth")).train.x, expected)
    # an x option still picks the columns itself, in the order given
    assert torch.equal(by_name(dcba, trained, FileOptions(x="d,c,b,a")).train.x,
                       torch.tensor(x[:, ::-1].copy(), dtype=torch.float32))


def test_a_missing_or_extra_column_is_named(
    iris: tuple[Path, np.ndarray, list[str]], tmp_path: Path
) -> None:
    path, x, labels = iris
    trained = load_file_dataset(path)
    missing = write_iris(tmp_path / "abd.csv", "abd", x, labels)
    with pytest.raises(DataError, match=r"abd\.csv lacks the column 'c' the model was trained "
                       r"on \('a', 'b', 'c', 'd'\): add it or rename the header") as caught:
        by_name(missing, trained)
    assert "\n" not in str(caught.value)
    renamed = write_iris(tmp_path / "renamed.csv", "abc", x, None, extra="e")
    with pytest.raises(DataError, match=r"lacks the column 'd' .*; its column 'e' is not among "
                       "them"):
        by_name(renamed, trained)
    extra = write_iris(tmp_path / "extra.csv", "abcd", x, labels, extra="e")
    with pytest.raises(DataError, match=r"extra\.csv has a column the model did not train on: "
                       r"'e'; drop it \(the model"):
        by_name(extra, trained)
    unnamed = write_iris(tmp_path / "unnamed.csv", "dcba", x, None, extra="e")
    with pytest.raises(DataError, match=r"has a column the model did not train on: 'e'; drop "
                       r"it, or name it as the label \(--data-opt y=e\)"):
        by_name(unnamed, trained)
    several = write_iris(tmp_path / "efgh.csv", "abcd", x, None, extra="efgh")
    with pytest.raises(DataError, match=r"columns the model did not train on: 'e', 'f', 'g' "
                       "and 1 more; drop them"):
        by_name(several, trained)
    # without the training names, or without a header, the columns are read by position
    plain = load_rows_to_predict(extra, FileOptions(y="species"), three_classes, shape=(5,))
    assert plain.columns == ("a", "b", "c", "d", "e")
    bare = write_csv(tmp_path / "bare.csv", None, x[:, ::-1].tolist())
    positional = by_name(bare, trained)
    assert torch.equal(positional.train.x, torch.tensor(x[:, ::-1].copy(), dtype=torch.float32))
