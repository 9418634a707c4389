"""Arrays in memory (``tk.from_arrays``, ``tk.pair``): read exactly as an ``.npz`` holding
them, trained, adapted, predicted and evaluated as that file is, recorded so that a resume
with other arrays is refused, and anything that is not an array refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import transferkit as tk
from conftest import FAST, TINY
from transferkit.data.inputs import InputSpec
from transferkit.errors import CheckpointError, ConfigError, DataError

STEPS = {**FAST, "steps_per_epoch": 2}


def blobs(n: int = 60, d: int = 5, shift: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, d)) + 3.0 * np.eye(3, d)[y] + shift
    return x.astype(np.float32), y


NAMES = np.array(["ant", "bee", "cat"])


def same_data(memory: tk.Dataset, file: tk.Dataset, title: str) -> None:
    """The same tensors, classes and conventions; the description differs by the title."""
    for part in ("train", "test"):
        assert torch.equal(getattr(memory, part).x, getattr(file, part).x), part
        assert torch.equal(getattr(memory, part).y, getattr(file, part).y), part
    assert memory.classes == file.classes and memory.num_classes == file.num_classes
    assert memory.inputs == file.inputs and memory.input_shape == file.input_shape
    assert (memory.normalization is None) == (file.normalization is None)
    if memory.normalization is not None:  # the steps and the training rows' statistics
        assert memory.normalization.to_record() == file.normalization.to_record()
    expected = file.description.replace(title, memory.name).replace(
        "the file's test arrays", "x_test/y_test")
    assert memory.description == expected


def images(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Channels-last 8-bit images, N x 6 x 6 x 3, as Keras and PIL keep them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 6, 6, 3), dtype=np.uint8), np.arange(n) % 2


@pytest.mark.parametrize("case", ["rows", "own test, zscore", "names, test=all", "images"])
def test_arrays_are_read_as_the_npz_of_them(case: str, tmp_path: Path) -> None:
    x, y = blobs()
    arrays: dict = {"x": x, "y": y}
    options: dict = {}
    if case == "own test, zscore":
        xt, yt = blobs(20, seed=3)
        arrays.update(x_test=xt, y_test=yt)
        options = {"normalize": "zscore"}
    elif case == "names, test=all":
        arrays["y"] = NAMES[y]
        options = {"test": "all", "normalize": "log", "seed": 3}
        arrays["x"] = np.abs(x)
    elif case == "images":
        arrays["x"], arrays["y"] = images()
        options = {"test": 0.25, "seed": 7}
    np.savez(tmp_path / "a.npz", **arrays)
    file = tk.load_data(str(tmp_path / "a.npz"), **options)
    memory = tk.from_arrays(arrays["x"], arrays["y"], x_test=arrays.get("x_test"),
                            y_test=arrays.get("y_test"), **options)
    same_data(memory, file, "a.npz")
    if case == "images":  # channels-first, scaled by 255, recorded as [0, 1]
        assert memory.input_shape == (3, 6, 6) and memory.inputs == InputSpec(0.0, 1.0, (3, 6, 6))
        assert "channels-last N x H x W x C moved to channels-first" in memory.description
    if case == "names, test=all":
        assert memory.classes == ("ant", "bee", "cat")


def test_the_same_arrays_train_the_same_model_as_their_npz(tmp_path: Path) -> None:
    x, y = blobs()
    np.savez(tmp_path / "a.npz", x=x, y=y)
    runs = [tk.train("mlp", data, model_options=TINY, data_options=options, seed=5,
                     out=tmp_path / out, **STEPS)
            for data, options, out in ((str(tmp_path / "a.npz"), {"normalize": "zscore"}, "f"),
                                       (tk.from_arrays(x, y, normalize="zscore"), None, "m"))]
    weights = [run.model.state_dict() for run in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert runs[0].summary["final"] == runs[1].summary["final"]
    record = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert record["data"] == "arrays" and len(record["data_sha256"]["arrays"]) == 64


def test_tensors_lists_and_later_changes(tmp_path: Path) -> None:
    x, y = blobs(30)
    expected = tk.from_arrays(x, y)
    tensor = torch.tensor(x, requires_grad=True)
    from_tensor = tk.from_arrays(tensor * 1.0, torch.tensor(y))  # a non-leaf with a graph
    from_lists = tk.from_arrays(x.tolist(), y.tolist())
    for data in (from_tensor, from_lists):
        assert torch.equal(data.train.x, expected.train.x)
        assert torch.equal(data.test.y, expected.test.y)
        assert not data.train.x.requires_grad
    pixels, labels = images(12)
    as_tensor = tk.from_arrays(torch.from_numpy(pixels), torch.from_numpy(labels), test="all")
    assert as_tensor.input_shape == (3, 6, 6) and float(as_tensor.train.x.max()) <= 1.0
    assert torch.allclose(as_tensor.train.x[0], torch.from_numpy(
        np.moveaxis(pixels[0], -1, 0).astype(np.float32) / 255))
    before = expected.train.x.clone()
    x[:] = 0.0  # the caller's array changes; what was read from it does not
    assert torch.equal(expected.train.x, before)
    assert torch.equal(tk.from_arrays(x, y, test="all").train.x, torch.zeros(30, 5))


def test_string_labels_name_the_predictions(tmp_path: Path) -> None:
    x, y = blobs()
    run = tk.train("mlp", tk.from_arrays(x, NAMES[y]), model_options=TINY, out=tmp_path / "r",
                   **STEPS)
    rows = tk.predict(tmp_path / "r", tk.from_arrays(x[:5]))
    assert rows.classes == ["ant", "bee", "cat"] and len(rows) == 5
    assert rows.rows == ["0", "1", "2", "3", "4"]
    np.savez(tmp_path / "new.npz", x=x[:5])
    by_file = tk.predict(run.model, str(tmp_path / "new.npz"))
    assert torch.equal(rows.probs, by_file.probs)
    # labels of two of the classes: mapped by the model's names, every row scored
    two = y[:30] != 0
    scores = tk.evaluate(tmp_path / "r", tk.from_arrays(x[:30][two], NAMES[y[:30][two]],
                                                         test="all"))
    assert scores["test"]["n"] == int(two.sum())


def test_a_model_with_normalisation_reads_arrays_as_files(tmp_path: Path) -> None:
    x, y = blobs()
    tk.train("mlp", tk.from_arrays(x, y, normalize="zscore"), model_options=TINY,
             out=tmp_path / "r", **STEPS)
    field = x[:4] * 3.0  # four rows alone: the training rows' statistics, not their own
    np.savez(tmp_path / "field.npz", x=field)
    memory = tk.predict(tmp_path / "r", tk.from_arrays(field))
    file = tk.predict(tmp_path / "r", str(tmp_path / "field.npz"))
    assert torch.equal(memory.probs, file.probs)
    np.savez(tmp_path / "b.npz", x=x, y=y)
    scored = tk.evaluate(tmp_path / "r", tk.from_arrays(x, y, test="all"))
    by_file = tk.evaluate(tmp_path / "r", str(tmp_path / "b.npz"),
                          data_options={"test": "all"})
    assert scored["test"] == by_file["test"] and scored["test"]["n"] == 60


def test_an_unlabelled_target_is_paired_and_adapted_to(tmp_path: Path) -> None:
    xs, ys = blobs()
    xt, _ = blobs(40, shift=1.0, seed=1)
    source = tk.from_arrays(xs, NAMES[ys], normalize="zscore")
    target = tk.from_arrays(xt, normalize="zscore")
    assert not target.labelled and target.classes is None  # not known alone
    pair = tk.pair(source, target)
    assert isinstance(pair, tk.DomainPair) and pair.name == "source->target"
    assert pair.target.classes == ("ant", "bee", "cat") and pair.target.num_classes == 3
    assert not pair.target.labelled and len(pair.target.train) == 40
    run = tk.adapt("mlp", pair, method="coral", model_options=TINY, out=tmp_path / "a",
                   **STEPS)
    assert set(run.summary["final"]) == {"source_test"}
    assert "target has no labels" in run.summary["target"] and run.summary["steps"] == 2
    record = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert set(record["data_sha256"]) == {"source", "target"}


def test_a_target_is_mapped_to_the_sources_classes(tmp_path: Path) -> None:
    xs, ys = blobs()
    xt, yt = blobs(40, shift=1.0, seed=1)
    source = tk.from_arrays(xs, NAMES[ys])
    # the target holds two of the source's three classes: indices are the source's
    some = yt != 0
    pair = tk.pair(source, tk.from_arrays(xt[some], NAMES[yt[some]], test="all"))
    assert pair.target.classes == ("ant", "bee", "cat")
    assert set(pair.target.test.y.tolist()) == {1, 2}
    # labelled test rows beside unlabelled ones: scored on those rows only
    scored = tk.pair(source, tk.from_arrays(xt[:30], x_test=xt[30:], y_test=NAMES[yt[30:]]))
    assert not scored.target.train_labelled and scored.target.labelled
    assert torch.equal(scored.target.test.y, torch.from_numpy(yt[30:]))
    # a file as one side reads as the same arrays do
    np.savez(tmp_path / "t.npz", x=xt[some], y=NAMES[yt[some]])
    with_file = tk.pair(source, str(tmp_path / "t.npz"), test="all")
    assert torch.equal(with_file.target.test.y, pair.target.test.y)
    with pytest.raises(DataError, match=r"label 'dog' is not among the source's classes") as err:
        tk.pair(source, tk.from_arrays(xt, np.where(yt == 0, "dog", NAMES[yt])))
    assert "\n" not in str(err.value) and "from_arrays (target)" in str(err.value)
    with pytest.raises(DataError, match="the source has no labels"):
        tk.pair(tk.from_arrays(xs), tk.from_arrays(xt))


def test_resume_with_other_arrays_is_refused(tmp_path: Path) -> None:
    x, y = blobs()
    out = tmp_path / "run"
    tk.train("mlp", tk.from_arrays(x, y), model_options=TINY, out=out, **STEPS)
    resumed = tk.train("mlp", tk.from_arrays(x.copy(), y), model_options=TINY, out=out,
                       resume=True, **{**STEPS, "epochs": 2})
    assert resumed.summary["resumed"] and len(resumed.history) == 2
    changed = x.copy()
    changed[0, 0] += 1.0
    for other in (tk.from_arrays(changed, y), tk.from_arrays(x, y, test=0.3),
                  tk.from_arrays(x.astype(np.float16), y)):  # float16 rounds the values
        with pytest.raises(CheckpointError, match=r"settings differ \(data_sha256.arrays\)") as err:
            tk.train("mlp", other, model_options=TINY, out=out, resume=True,
                     **{**STEPS, "epochs": 3})
        assert "\n" not in str(err.value)


def test_the_same_values_in_another_container_are_the_same_data(tmp_path: Path) -> None:
    """The digest is of what a run reads: int32 labels (NumPy's default on Windows), float
    labels 0.0/1.0, a column of labels, float64 inputs of the same float32 values, bytes or
    str names give the same data (and resume); a value that reads otherwise does not."""
    x, y = blobs()
    recorded = tk.from_arrays(x, y).origin.sha256
    alike = [tk.from_arrays(x.astype(np.float64), y.astype(np.int32)),
             tk.from_arrays(torch.from_numpy(x), y.astype(np.float32)[:, None]),
             tk.from_arrays(x.tolist(), y.tolist())]
    assert all(data.origin.sha256 == recorded for data in alike)
    assert tk.from_arrays(x, NAMES.astype(bytes)[y]).origin.sha256 == \
        tk.from_arrays(x, NAMES[y]).origin.sha256
    unlike = [tk.from_arrays(x.astype(np.float64) + 1e-3, y), tk.from_arrays(x, y + 1),
              tk.from_arrays(x, NAMES[y]), tk.from_arrays(x, y, seed=1)]
    assert all(data.origin.sha256 != recorded for data in unlike)
    out = tmp_path / "run"
    tk.train("mlp", tk.from_arrays(x, y), model_options=TINY, out=out, **STEPS)
    resumed = tk.train("mlp", alike[0], model_options=TINY, out=out, resume=True,
                       **{**STEPS, "epochs": 2})
    assert resumed.summary["resumed"] and len(resumed.history) == 2


@pytest.mark.parametrize("name", ["digits", " mnist ", "a->b", "data/arrays", "field.npz",
                                  "a folder", "two\nlines"])
def test_a_name_that_records_other_data_is_refused(name: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Records name the data; ``report`` draws a confusion matrix on what the name reads,
    ``export`` checks parity on it, so arrays named like a registered dataset, a file or a
    pair would be scored as that data."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a folder").mkdir()
    x, y = blobs()
    with pytest.raises(ConfigError, match=r"from_arrays: name .*(choose another name|one "
                                          r"line)") as err:
        tk.from_arrays(x, y, name=name)
    assert "\n" not in str(err.value)
    assert tk.from_arrays(x, y, name="field rows").name == "field rows"


def test_predict_reads_every_row_of_arrays_split_for_training(tmp_path: Path) -> None:
    """The training Dataset given to predict: its test= chose a split for training, and
    predict reads every row (it refused "test=all: remove it", which a Dataset cannot)."""
    x, y = blobs()
    data = tk.from_arrays(x, NAMES[y], test="all")
    tk.train("mlp", data, model_options=TINY, out=tmp_path / "r", **STEPS)
    for given in (data, tk.from_arrays(x, NAMES[y], test=0.3)):
        rows = tk.predict(tmp_path / "r", given)
        assert len(rows) == 60 and rows.classes == ["ant", "bee", "cat"]
    target = tk.pair(tk.from_arrays(x, NAMES[y]), tk.from_arrays(x[:10], NAMES[y[:10]],
                                                                 test="all"))
    assert len(tk.predict(tmp_path / "r", target)) == 10


def test_a_pair_normalised_on_one_side_only_is_refused(tmp_path: Path) -> None:
    """A pair of files has one normalize for both sides; arrays bring their own, and one
    side z-scored beside a raw one fed the domains on other scales, silently."""
    xs, ys = blobs()
    xt, _ = blobs(40, shift=5.0, seed=1)
    np.savez(tmp_path / "s.npz", x=xs, y=ys)
    cases = [(tk.from_arrays(xs, ys, normalize="zscore"), tk.from_arrays(xt), {}),
             (str(tmp_path / "s.npz"), tk.from_arrays(xt), {"normalize": "zscore"}),
             (tk.from_arrays(xs, ys, normalize="zscore"), tk.from_arrays(xt, normalize="log"),
              {})]
    for source, target, options in cases:
        with pytest.raises(ConfigError, match=r"normalised by zscore.*give both sides "
                                              r"normalize='zscore'") as err:
            tk.pair(source, target, **options)
        assert "\n" not in str(err.value)
    both = tk.pair(str(tmp_path / "s.npz"), tk.from_arrays(xt, normalize="zscore"),
                   normalize="zscore")
    assert abs(float(both.target.train.x.mean())) < 1e-4  # its own rows' statistics
    assert tk.pair(tk.from_arrays(xs, ys), tk.from_arrays(xt)).target.normalization is None


@pytest.mark.parametrize("given", ["arrays", "file"])
def test_distill_scores_a_target_by_the_teachers_class_names(given: str,
                                                             tmp_path: Path) -> None:
    """Rows without labels beside labelled test rows (x_test/y_test) distilled from a teacher
    trained on names: the test labels map by the teacher's names (as source-free adapt maps
    them); they were refused as "not among the source's classes: 0, 1, 2"."""
    xs, ys = blobs()
    xt, yt = blobs(40, shift=1.0, seed=1)
    teacher = tk.train("mlp", tk.from_arrays(xs, NAMES[ys]), model_options=TINY,
                       out=tmp_path / "t", **STEPS)
    arrays = {"x": xt[:30], "x_test": xt[30:], "y_test": NAMES[yt[30:]]}
    np.savez(tmp_path / "field.npz", **arrays)
    data = tk.from_arrays(**arrays) if given == "arrays" else str(tmp_path / "field.npz")
    run = tk.distill(teacher, "mlp", data, student_options=TINY, out=tmp_path / "d", **STEPS)
    assert set(run.summary["final"]) == {"test"}
    rows = tk.predict(run.model, tk.from_arrays(xt[:3]))
    assert rows.classes == ["ant", "bee", "cat"]
    scored = tk.evaluate(run.model, tk.from_arrays(**arrays))["test"]
    assert scored["n"] == 10 and scored["accuracy"] == run.summary["final"]["test"]


class DataFrame:
    """What a pandas DataFrame looks like to transferkit (pandas need not be installed)."""

    __module__ = "pandas.core.frame"

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def to_numpy(self) -> np.ndarray:
        return self.values


def bad_inputs() -> dict:
    x, y = blobs(12)
    holes = x.copy()
    holes[2, 1] = np.nan
    return {
        "3 rows, 4 labels": ((x[:3], y[:4]), {}, DataError, r"3 input rows but 4 labels \(y\)"),
        "DataFrame": ((DataFrame(x), y), {}, DataError, "x is a pandas DataFrame.*to_numpy"),
        "DataLoader": ((DataLoader(TensorDataset(torch.from_numpy(x))), y), {}, DataError,
                       "x is a torch DataLoader"),
        "dict": (({"x": x, "y": y},), {}, DataError, "x is a mapping.*from_arrays"),
        "labels as a dict": ((x, {"y": y}), {}, DataError, "y is a mapping"),
        "NaN": ((holes, y), {}, DataError, "inputs 'x' hold 1 NaN"),
        "ragged lists": (([[1.0, 2.0], [3.0]], [0, 1]), {}, DataError,
                         "x cannot be read as one array"),
        "labels mixing text and numbers": ((x[:6], [1, "1", 2, 2, "2", 1]), {}, DataError,
                                           r"y mixes strings and numbers \(e.g. '1' and 1\)"),
        "no rows": ((x[:0],), {}, DataError, r"x has no rows \(shape \(0, 5\)\)"),
        "x_test alone": ((x, y), {"x_test": x}, DataError, "x_test without y_test"),
        "two test splits": ((x, y), {"x_test": x, "y_test": y, "test": 0.2}, DataError,
                            "both choose the test split"),
        "a file's option": ((x, y), {"size": 8}, ConfigError,
                            "size applies to image folders, not to arrays in memory"),
        "a misspelt option": ((x, y), {"normalise": "zscore"}, ConfigError,
                              "unknown data option 'normalise'.*test, seed, normalize"),
    }


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_what_is_not_arrays_is_refused_in_one_line(case: str) -> None:
    args, options, error, message = bad_inputs()[case]
    with pytest.raises(error, match=message) as err:
        tk.from_arrays(*args, **options)
    assert "\n" not in str(err.value) and str(err.value).startswith(
        ("from_arrays", "data option"))


def test_the_verbs_say_where_arrays_go() -> None:
    x, y = blobs(12)
    with pytest.raises(ConfigError, match=r"tk.from_arrays\(x, y\)"):
        tk.train("mlp", x, **STEPS)
    with pytest.raises(ConfigError, match=r"tk.pair\(source, target\)"):
        tk.adapt("mlp", tk.from_arrays(x, y), **STEPS)
    with pytest.raises(ConfigError, match=r"keep those given to tk\.from_arrays"):
        tk.train("mlp", tk.from_arrays(x, y), data_options={"normalize": "zscore"}, **STEPS)
    with pytest.raises(ConfigError, match="train learns from labelled rows"):
        tk.train("mlp", tk.from_arrays(x), **STEPS)
    with pytest.raises(ConfigError, match="pair: the source is a ndarray"):
        tk.pair(x, tk.from_arrays(x))


def test_a_run_on_arrays_is_never_read_again_by_its_name(tmp_path: Path, cli,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The run records its data as "arrays": report, export and a command-line resume read
    data by the recorded name, and would read a folder or file of that name (or say "unknown
    dataset 'arrays'"). The record says the data was in memory, and each says so instead."""
    pytest.importorskip("matplotlib")
    x, y = blobs()
    run = tmp_path / "run"
    tk.train("mlp", tk.from_arrays(x, y), model_options=TINY, out=run, **STEPS)
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["data"] == "arrays" and record["data_in_memory"] == ["arrays"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "arrays").mkdir()  # a folder of the recorded name: never read
    page = tk.report_runs([run], tmp_path / "r.html").read_text()
    assert "trained on arrays in memory (arrays), which are not on disk" in page
    with pytest.raises(ConfigError, match=r"trained on arrays in memory \(tk.from_arrays: "
                                          r"arrays\), which export cannot read again"):
        tk.export(run, "torchscript")
    code, _, err = cli("train", "--out", str(run), "--resume", "--epochs", "2")
    assert code == 2 and "trained on arrays in memory" in err and "resume=True" in err
    assert tk.export(run, "torchscript", data=tk.from_arrays(x, y))["rows_checked"] > 0
