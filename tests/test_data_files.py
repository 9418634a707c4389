"""Data files: .npz, .mat, .csv and image folders read by ``transferkit.data.files``.

Every file is written by the test into pytest's temporary folder and is tiny; the real
Office-Caltech10 SURF files are read from the shared datasets when present (skipped otherwise).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.data import paths
from transferkit.data.base import Dataset, Split
from transferkit.data.file_options import (
    FILE_OPTIONS,
    FileOptions,
    is_data_path,
    parse_file_options,
)
from transferkit.data.files import load_file_dataset, load_file_pair
from transferkit.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
ALL = FileOptions(test="all")


def blobs(n_per_class: int = 6, classes: int = 3, features: int = 4, seed: int = 0):
    """(x float32 N x D, y int64 N): class c has mean c in every feature."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = (rng.normal(size=(len(y), features)) + y[:, None]).astype(np.float32)
    return x, y


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# --- options and path detection ---------------------------------------------------------------


def test_parse_options_reads_text_and_lists() -> None:
    options = parse_file_options(
        {"x": "fts", "y": 3, "test": "0.25", "seed": "7", "size": 16, "channels": "3",
         "normalize": "log, zscore"}
    )
    assert options == FileOptions(x="fts", y="3", test=0.25, seed=7, size=16, channels=3,
                                  normalize=("log", "zscore"))
    assert parse_file_options({"normalize": ["L1"], "test": "ALL"}).normalize == ("l1",)
    assert parse_file_options({"test": "all"}).test == "all"
    assert parse_file_options(None) == FileOptions()
    assert parse_file_options({"size": 4096}).size == 4096  # the largest side taken
    assert FILE_OPTIONS == ("x", "y", "x_test", "y_test", "test", "seed", "size", "channels",
                            "normalize")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"colour": 3}, ["unknown data option 'colour'", "x, y, x_test"]),
        ({"test": 1.5}, ["test", "(0, 1)", "all"]),
        ({"test": "half"}, ["test", "(0, 1)"]),
        ({"seed": -1}, ["seed", ">= 0"]),
        ({"size": 0}, ["size", ">= 1"]),
        ({"size": 4097}, ["size", "from 1 to 4096"]),
        ({"channels": 2}, ["channels", "1 (grey) or 3"]),
        ({"normalize": "zscore,minmax"}, ["normalize", "'minmax'", "zscore, l1, log"]),
        ({"normalize": "log,log"}, ["normalize", "twice"]),
        ({"x": True}, ["data option x"]),
        ({"x_test": "xt", "test": 0.2}, ["x_test", "test=0.2", "set one"]),
    ],
)
def test_parse_options_refuses_bad_values(options: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_file_options(options)
    for word in words:
        assert word in str(info.value)


def test_is_data_path(tmp_path: Path) -> None:
    assert is_data_path("missing/webcam.mat")
    assert is_data_path("a.NPZ") and is_data_path(str(tmp_path / "t.csv"))
    assert is_data_path(str(tmp_path))
    assert not is_data_path("mnist") and not is_data_path("mnist->usps")
    # A name with a separator is a path even when missing: "does not exist", not "unknown
    # dataset"; a bare name that is no folder stays a dataset name.
    assert is_data_path(str(tmp_path / "no_such_folder")) and is_data_path("img/train")
    assert not is_data_path("no_such_folder")


def test_option_that_does_not_apply_is_refused(tmp_path: Path) -> None:
    x, y = blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(ConfigError, match="size applies to image folders"):
        load_file_dataset(tmp_path / "d.npz", FileOptions(size=8))
    write_csv(tmp_path / "d.csv", ["1,0", "2,1"])
    with pytest.raises(ConfigError, match=r"x_test applies to \.npz and \.mat"):
        load_file_dataset(tmp_path / "d.csv", FileOptions(x_test="xt"))


def test_dataset_classes_default_none() -> None:
    data = Dataset("d", Split(torch.zeros(2, 3), torch.tensor([0, 1])),
                   Split(torch.zeros(1, 3), torch.tensor([1])), 2)
    assert data.classes is None


# --- formats round-trip -------------------------------------------------------------------------


def test_npz_round_trip(tmp_path: Path) -> None:
    x, y = blobs()
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    data = load_file_dataset(str(tmp_path / "blobs.npz"), ALL)
    assert data.name == str(tmp_path / "blobs.npz")  # as given: a resume reads the same file
    assert data.num_classes == 3 and data.classes == (0, 1, 2)
    assert data.inputs is None and data.input_shape == (4,)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert np.array_equal(data.train.x.numpy(), x) and np.array_equal(data.train.y.numpy(), y)
    assert np.array_equal(data.test.x.numpy(), x) and np.array_equal(data.test.y.numpy(), y)
    assert "blobs.npz: 18 rows x 4 features, 3 classes" in data.description
    assert "test = all training rows (transductive)" in data.description


def test_npz_default_keys_and_image_shaped_inputs(tmp_path: Path) -> None:
    x = np.arange(4 * 2 * 3 * 3, dtype=np.uint8).reshape(4, 2, 3, 3)
    labels = np.array([[5], [7], [5], [7]])
    np.savez(tmp_path / "d.npz", features=x, labels=labels, extra=np.zeros(3))
    data = load_file_dataset(tmp_path / "d.npz", ALL)
    assert data.input_shape == (2, 3, 3) and data.classes == (5, 7)  # channels-first kept
    assert np.allclose(data.train.x.numpy(), x.astype(np.float32) / 255)  # 8-bit pixels
    assert data.inputs is not None and (data.inputs.mean, data.inputs.std) == (0.0, 1.0)
    assert data.train.y.tolist() == [0, 1, 0, 1]


def test_npz_image_arrays_get_a_channel_axis_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey = rng.random((6, 9, 7)).astype(np.float32)  # N x H x W, as MNIST arrays come
    hwc = rng.random((6, 9, 7, 3)).astype(np.float32)  # channels-last, as Keras stores them
    y = np.array([0, 1] * 3)
    np.savez(tmp_path / "grey.npz", x=grey, y=y)
    np.savez(tmp_path / "hwc.npz", x=hwc, y=y, x_test=hwc[:2], y_test=y[:2])
    a = load_file_dataset(tmp_path / "grey.npz", ALL)
    assert a.input_shape == (1, 9, 7) and np.array_equal(a.train.x[:, 0].numpy(), grey)
    assert "images 1x9x7 (N x H x W read as one channel)" in a.description
    assert a.inputs is None  # float arrays: their scale is the user's
    b = load_file_dataset(tmp_path / "hwc.npz", FileOptions())
    assert b.input_shape == (3, 9, 7) and b.test.x.shape == (2, 3, 9, 7)
    assert np.array_equal(b.train.x.numpy(), np.moveaxis(hwc, -1, 1))
    assert "moved to channels-first" in b.description
    np.savez(tmp_path / "mixed.npz", x=(grey * 255).astype(np.uint8), y=y, x_test=grey,
             y_test=y)
    with pytest.raises(DataError, match=r"mixed\.npz: x is uint8 but x_test float32"):
        load_file_dataset(tmp_path / "mixed.npz", FileOptions())


def test_npz_named_arrays_and_own_test_split(tmp_path: Path) -> None:
    x, y = blobs()
    xt, yt = blobs(2, seed=1)
    np.savez(tmp_path / "d.npz", a=x, b=y + 1, x_test=xt, y_test=yt + 1)
    data = load_file_dataset(tmp_path / "d.npz", FileOptions(x="a", y="b"))
    assert data.classes == (1, 2, 3)
    assert np.array_equal(data.train.x.numpy(), x) and np.array_equal(data.train.y.numpy(), y)
    assert np.array_equal(data.test.x.numpy(), xt) and np.array_equal(data.test.y.numpy(), yt)
    assert "(+ 6 test rows)" in data.description and "the file's test arrays" in data.description
    # A chosen split overrides the file's own, and says so.
    held = load_file_dataset(tmp_path / "d.npz", FileOptions(x="a", y="b", test=0.5))
    assert len(held.train) + len(held.test) == 18
    assert "x_test/y_test not used" in held.description


def test_mat_round_trip(tmp_path: Path) -> None:
    from scipy.io import savemat

    x, y = blobs(classes=4)
    savemat(tmp_path / "office.mat", {"fts": x.astype(np.float64), "labels": (y + 1)[:, None]})
    data = load_file_dataset(tmp_path / "office.mat", ALL)
    assert data.name == str(tmp_path / "office.mat")
    assert data.classes == (1, 2, 3, 4) and data.num_classes == 4
    assert np.array_equal(data.train.x.numpy(), x) and np.array_equal(data.train.y.numpy(), y)
    savemat(tmp_path / "row.mat", {"X": x, "Y": (y + 1)[None, :]})  # labels 1 x N
    assert np.array_equal(load_file_dataset(tmp_path / "row.mat", ALL).train.y.numpy(), y)


def test_csv_header_string_labels_and_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pets.csv", [
        "weight,Class,height", "1.5,dog,2", "2.5,cat,3", "3.5,dog,4", "4.5,bird,5",
    ])
    data = load_file_dataset(path, ALL)
    assert data.classes == ("bird", "cat", "dog")
    assert data.train.y.tolist() == [2, 1, 2, 0]
    assert data.train.x.tolist() == [[1.5, 2.0], [2.5, 3.0], [3.5, 4.0], [4.5, 5.0]]
    # No header, string labels in the last column: the first row is data.
    path = write_csv(tmp_path / "raw.csv", ["1,2,b", "3,4,a", "5,6,b"])
    data = load_file_dataset(path, ALL)
    assert data.classes == ("a", "b") and data.train.y.tolist() == [1, 0, 1]
    assert data.train.x.tolist() == [[1, 2], [3, 4], [5, 6]]
    # Numeric labels by column index, features chosen by name.
    path = write_csv(tmp_path / "n.csv", ["a,b,c", "1,10,0.5", "2,20,1.5", "3,10,2.5"])
    data = load_file_dataset(path, FileOptions(y="1", test="all"))
    assert data.classes == (10, 20) and data.train.y.tolist() == [0, 1, 0]
    assert data.train.x.tolist() == [[1, 0.5], [2, 1.5], [3, 2.5]]
    data = load_file_dataset(path, FileOptions(x="c", y="b", test="all"))
    assert data.train.x.tolist() == [[0.5], [1.5], [2.5]]


def test_label_mapping_numbers_and_strings(tmp_path: Path) -> None:
    x = np.zeros((6, 2), np.float32)
    np.savez(tmp_path / "k.npz", x=x, y=np.array([10, 2, 1, 2, 10, 1]))
    data = load_file_dataset(tmp_path / "k.npz", ALL)
    assert data.classes == (1, 2, 10)  # numerically, not as text
    assert data.train.y.tolist() == [2, 1, 0, 1, 2, 0]
    np.savez(tmp_path / "f.npz", x=x, y=np.array([1.0, 2.0, 1.0, 2.0, 3.0, 3.0]))
    assert load_file_dataset(tmp_path / "f.npz", ALL).classes == (1, 2, 3)
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["b", "B", "a", "b", "a", "B"]))
    data = load_file_dataset(tmp_path / "s.npz", ALL)
    assert data.classes == ("B", "a", "b") and data.train.y.tolist() == [2, 0, 1, 2, 1, 0]
    given = load_file_dataset(tmp_path / "s.npz", ALL, classes=["b", "a", "B", "c"])
    assert given.num_classes == 4 and given.train.y.tolist() == [0, 2, 1, 0, 1, 2]
    with pytest.raises(DataError, match="label 'B' is not among the given classes"):
        load_file_dataset(tmp_path / "s.npz", ALL, classes=["a", "b"])


# --- splits ---------------------------------------------------------------------------------------


def test_fraction_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    sizes = {0: 10, 1: 5, 2: 2, 3: 1}
    y = np.concatenate([np.full(n, c) for c, n in sizes.items()])
    x = np.stack([np.arange(len(y)), np.zeros(len(y))], 1).astype(np.float32)  # row ids
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_file_dataset(tmp_path / "d.npz", FileOptions(test=0.3, seed=1))
    test_counts = torch.bincount(data.test.y, minlength=4).tolist()
    # round half up of 0.3 * n: 3, 1.5 -> 2, 0.6 -> 1; a single row stays in training.
    assert test_counts == [3, 2, 1, 0]
    train_ids = set(data.train.x[:, 0].int().tolist())
    test_ids = set(data.test.x[:, 0].int().tolist())
    assert not train_ids & test_ids and train_ids | test_ids == set(range(len(y)))
    for split in (data.train, data.test):  # labels still belong to their rows
        assert np.array_equal(split.y.numpy(), y[split.x[:, 0].long().numpy()])
    again = load_file_dataset(tmp_path / "d.npz", FileOptions(test=0.3, seed=1))
    assert torch.equal(again.test.x, data.test.x)
    other = [load_file_dataset(tmp_path / "d.npz", FileOptions(test=0.3, seed=s)) for s in (2, 3)]
    assert any(not torch.equal(o.test.x, data.test.x) for o in other)
    default = load_file_dataset(tmp_path / "d.npz")
    assert torch.bincount(default.test.y, minlength=4).tolist() == [2, 1, 1, 0]
    assert "20% of each class held out" in default.description


def test_test_all_is_the_training_rows(tmp_path: Path) -> None:
    x, y = blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_file_dataset(tmp_path / "d.npz", ALL)
    assert torch.equal(data.test.x, data.train.x) and torch.equal(data.test.y, data.train.y)


# --- normalisation ---------------------------------------------------------------------------


def test_zscore_uses_training_statistics_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(6, 3)).astype(np.float32)
    x[:, 2] = 5.0  # a constant feature: std 0 -> 1
    xt = (x + 10.0).astype(np.float32)
    y = np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=y)
    data = load_file_dataset(tmp_path / "d.npz", FileOptions(normalize=("zscore",)))
    mean, std = x.astype(np.float64).mean(0), x.astype(np.float64).std(0)
    std[std == 0] = 1.0
    np.testing.assert_allclose(data.train.x.numpy(), (x - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.test.x.numpy(), (xt - mean) / std, rtol=1e-5, atol=1e-5)
    assert abs(float(data.test.x[:, 0].mean())) > 1.0  # not standardised with its own mean
    np.testing.assert_allclose(data.train.x[:, :2].mean(0).numpy(), 0.0, atol=1e-5)
    assert data.inputs is None and "normalized: zscore" in data.description


def test_l1_and_log_against_numpy(tmp_path: Path) -> None:
    x = np.array([[1, 3, 0], [0, 0, 0], [2, 2, 4], [5, 0, 5]], np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    l1 = load_file_dataset(tmp_path / "d.npz", FileOptions(test="all", normalize="l1"))
    norms = np.abs(x).sum(1, keepdims=True)
    expected = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    np.testing.assert_allclose(l1.train.x.numpy(), expected, rtol=1e-6)
    both = load_file_dataset(tmp_path / "d.npz", FileOptions(test="all", normalize="log,l1"))
    logged = np.log1p(x)
    norms = logged.sum(1, keepdims=True)
    expected = np.divide(logged, norms, out=np.zeros_like(x), where=norms > 0)
    np.testing.assert_allclose(both.train.x.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(both.test.x.numpy(), expected, rtol=1e-5)


def test_log_refuses_negative_values(tmp_path: Path) -> None:
    np.savez(tmp_path / "neg.npz", x=np.array([[1.0], [-2.0], [3.0]]), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"neg.npz.*log.*1 values are negative"):
        load_file_dataset(tmp_path / "neg.npz", FileOptions(test="all", normalize="log"))
    np.savez(tmp_path / "pos.npz", x=np.array([[1.0], [2.0], [3.0]]), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="put log first"):
        load_file_dataset(tmp_path / "pos.npz", FileOptions(test="all", normalize="zscore,log"))


# --- pairs ----------------------------------------------------------------------------------------


def test_pair_maps_target_with_source_classes(tmp_path: Path) -> None:
    x, y = blobs(classes=3)
    np.savez(tmp_path / "src.npz", x=x, y=np.array(["a", "b", "c"])[y])
    # The target lacks class "a": its "b" and "c" must still be indices 1 and 2.
    write_csv(tmp_path / "tgt.csv", ["f1,f2,f3,f4,label", "0,0,0,1,c", "1,1,1,1,b", "2,2,2,2,c"])
    pair = load_file_pair(str(tmp_path / "src.npz"), str(tmp_path / "tgt.csv"), ALL)
    assert pair.name == f"{tmp_path / 'src.npz'}->{tmp_path / 'tgt.csv'}"
    assert pair.source.classes == pair.target.classes == ("a", "b", "c")
    assert pair.num_classes == 3 and pair.target.train.y.tolist() == [2, 1, 2]
    write_csv(tmp_path / "bad.csv", ["f1,f2,f3,f4,label", "0,0,0,1,c", "1,1,1,1,zebra"])
    with pytest.raises(DataError, match=r"label 'zebra' is not among the source's classes"):
        load_file_pair(str(tmp_path / "src.npz"), str(tmp_path / "bad.csv"), ALL)


def test_pair_normalises_each_side_with_its_own_statistics(tmp_path: Path) -> None:
    x, y = blobs()
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", x=x * 3 + 100, y=y)
    pair = load_file_pair(str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                          FileOptions(test="all", normalize=("zscore",)))
    np.testing.assert_allclose(pair.source.train.x.numpy(), pair.target.train.x.numpy(),
                               atol=1e-4)


def test_pair_with_a_registered_side(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(20) % 10)
    pair = load_file_pair(str(tmp_path / "mine.npz"), "digits", ALL)
    assert pair.name.endswith("mine.npz->digits") and pair.target.classes == tuple(range(10))
    assert pair.target.input_shape == (1, 8, 8) and len(pair.target.test) == 450
    np.savez(tmp_path / "shifted.npz", x=x, y=np.arange(20) % 10 + 1)
    with pytest.raises(DataError, match=r"digits: train split label 0 is not among the source"):
        load_file_pair(str(tmp_path / "shifted.npz"), "digits", ALL)


def test_pair_refuses_mismatched_feature_sizes(tmp_path: Path) -> None:
    np.savez(tmp_path / "wide.npz", x=blobs(features=8)[0], y=blobs()[1])
    np.savez(tmp_path / "narrow.npz", x=blobs(features=4)[0], y=blobs()[1])
    with pytest.raises(DataError) as info:
        load_file_pair(str(tmp_path / "wide.npz"), str(tmp_path / "narrow.npz"), ALL)
    message = str(info.value)
    assert "source features 8 vs target 4 (" in message
    assert "wide.npz" in message and "narrow.npz" in message


# --- refusals: one line naming the file -----------------------------------------------------------


def test_missing_key_names_arrays_and_option(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", inputs=np.zeros((3, 2)), classes=np.array([0, 1, 0]))
    with pytest.raises(DataError) as info:
        load_file_dataset(tmp_path / "d.npz")
    message = str(info.value)
    for part in ("d.npz", "no labels array", "'inputs', 'classes'", "--data-opt y=NAME"):
        assert part in message
    with pytest.raises(DataError, match=r"no array 'feats' \(option x\).*--data-opt x=NAME"):
        load_file_dataset(tmp_path / "d.npz", FileOptions(x="feats", y="classes"))
    np.savez(tmp_path / "half.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 0]),
             x_test=np.zeros((2, 2)))
    with pytest.raises(DataError, match="no y_test array"):
        load_file_dataset(tmp_path / "half.npz")


def test_pickled_npz_is_refused_not_unpickled(tmp_path: Path) -> None:
    objects = np.array([{"a": 1}, {"b": 2}, {"c": 3}], dtype=object)
    np.savez(tmp_path / "p.npz", x=objects, y=np.array([0, 1, 0]), allow_pickle=True)
    with pytest.raises(DataError, match=r"p.npz: array 'x' is a pickled object array"):
        load_file_dataset(tmp_path / "p.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x80\x04not a zip at all")
    with pytest.raises(DataError, match=r"junk\.npz is not an \.npz archive"):
        load_file_dataset(tmp_path / "junk.npz")


def test_unreadable_mat_files(tmp_path: Path) -> None:
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512, b" ")
    (tmp_path / "v73.mat").write_bytes(header + b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(DataError, match=r"v73.mat is a MATLAB v7.3.*-v7.*\.npz"):
        load_file_dataset(tmp_path / "v73.mat")
    (tmp_path / "junk.mat").write_bytes(b"garbage" * 50)
    with pytest.raises(DataError, match=r"junk.mat: cannot read as a MATLAB file"):
        load_file_dataset(tmp_path / "junk.mat")
    with pytest.raises(DataError, match=r"absent\.mat does not exist"):
        load_file_dataset(tmp_path / "absent.mat")


def test_csv_bad_cell_names_line_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", ["a,b,label", "1,2,0", "3,oops,1", "5,6,0"])
    with pytest.raises(DataError, match=r"bad.csv, line 3, column 'b': 'oops' is not a number"):
        load_file_dataset(path)
    path = write_csv(tmp_path / "ragged.csv", ["1,2,0", "3,1", "5,6,0"])
    with pytest.raises(DataError, match=r"ragged.csv, line 2: 2 cells"):
        load_file_dataset(path)


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        ([[1.0, np.nan], [np.inf, 2.0], [3.0, 4.0]], [0, 1, 0], "2 NaN or infinite"),
        ([[1.0], [2.0], [3.0]], [0, 1], "3 input rows but 2 labels"),
        ([[1.0], [2.0], [3.0]], [4, 4, 4], "one class only (4)"),
        ([[1.0], [2.0], [3.0]], [0.5, 1.0, 0.0], "1 labels (y) are not whole numbers"),
        ([1.0, 2.0, 3.0], [0, 1, 0], "give one row per example"),
    ],
)
def test_bad_arrays_are_refused(tmp_path: Path, x: list, y: list, words: str) -> None:
    np.savez(tmp_path / "d.npz", x=np.array(x), y=np.array(y))
    with pytest.raises(DataError) as info:
        load_file_dataset(tmp_path / "d.npz")
    assert "d.npz" in str(info.value) and words in str(info.value)


def test_single_row_classes_cannot_be_split(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="test=all"):
        load_file_dataset(tmp_path / "d.npz")
    assert len(load_file_dataset(tmp_path / "d.npz", ALL).test) == 2


# --- image folders ------------------------------------------------------------------------------


def test_image_folder_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = np.stack([grey, 255 - grey, np.full_like(grey, 7)], axis=2)
    write_png(root / "circle" / "a.png", grey)
    write_png(root / "circle" / "b.png", rgb)
    write_png(root / "square" / "c.png", grey)
    (root / "square" / "notes.txt").write_text("ignored")
    data = load_file_dataset(root, ALL)
    assert data.name == str(root) and data.classes == ("circle", "square")
    assert data.input_shape == (3, 3, 4)  # a colour image makes every image RGB
    assert data.inputs is not None and (data.inputs.mean, data.inputs.std) == (0.0, 1.0)
    assert data.inputs.shape == (3, 3, 4)
    assert data.train.y.tolist() == [0, 0, 1]
    expected_grey = torch.from_numpy(grey / 255.0).float()
    assert torch.allclose(data.train.x[0], expected_grey.expand(3, 3, 4))
    assert torch.allclose(data.train.x[1], torch.from_numpy(rgb.transpose(2, 0, 1) / 255).float())
    one = load_file_dataset(root, FileOptions(test="all", channels=1, size=6))
    assert one.input_shape == (1, 6, 6)
    assert float(one.train.x.min()) >= 0.0 and float(one.train.x.max()) <= 1.0


def test_sixteen_bit_images(tmp_path: Path) -> None:
    from PIL import Image

    pixels = (np.arange(8, dtype=np.uint16) * 9000).reshape(2, 4)
    for label in ("a", "b"):
        (tmp_path / "deep" / label).mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / "deep" / label / "i.png")
    data = load_file_dataset(tmp_path / "deep", ALL)
    assert data.input_shape == (1, 2, 4)
    np.testing.assert_allclose(data.train.x[0, 0].numpy(), pixels / 65535, rtol=1e-6)


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    for part, count in (("train", 2), ("test", 1)):
        for label, value in (("one", 10), ("two", 200)):
            for i in range(count):
                write_png(root / part / label / f"{i}.png", np.full((2, 2), value, np.uint8))
    data = load_file_dataset(root)
    assert data.input_shape == (1, 2, 2) and data.classes == ("one", "two")
    assert (len(data.train), len(data.test)) == (4, 2)
    assert data.test.y.tolist() == [0, 1] and "test/ folder" in data.description
    assert torch.allclose(data.test.x[1], torch.full((1, 2, 2), 200 / 255))


def test_image_folder_refusals(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    write_png(root / "a" / "1.png", np.zeros((4, 4), np.uint8))
    write_png(root / "b" / "1.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"images differ in size.*--data-opt size=N"):
        load_file_dataset(root)
    assert load_file_dataset(root, FileOptions(size=4, test="all")).input_shape == (1, 4, 4)
    (root / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder .*imgs/c holds no images"):
        load_file_dataset(root, FileOptions(size=4))
    (root / "c" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"image .*broken.png cannot be decoded"):
        load_file_dataset(root, FileOptions(size=4))
    with pytest.raises(ConfigError, match="data option x applies to"):
        load_file_dataset(root, FileOptions(x="fts"))


# --- the real Office-Caltech10 SURF files ----------------------------------------------------


OFFICE_ROWS = {"amazon": 958, "Caltech10": 1123, "dslr": 157, "webcam": 295}


def office_dir() -> Path:
    env = os.environ.get(paths.ENV_VAR)
    for root in (Path(env) if env else None, REPO.parent / "shared" / "datasets",
                 Path("/work/shared/datasets")):
        if root is not None and (root / "office_caltech10_surf").is_dir():
            return root / "office_caltech10_surf"
    pytest.skip(f"office_caltech10_surf not found in the shared datasets (set {paths.ENV_VAR})")


@pytest.mark.parametrize("domain", sorted(OFFICE_ROWS))
def test_office_caltech_surf(domain: str) -> None:
    path = office_dir() / f"{domain}_SURF_L10.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    data = load_file_dataset(path, ALL)
    assert data.num_classes == 10 and data.classes == tuple(range(1, 11))
    assert data.input_shape == (800,) and len(data.train) == OFFICE_ROWS[domain]
    assert f"{OFFICE_ROWS[domain]} rows x 800 features, 10 classes" in data.description
