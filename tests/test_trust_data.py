"""Trust in the data: data built from Python is converted where its meaning is clear and refused
in one line otherwise; every saved model records its input convention, and evaluate, distill and
adapt feed it data on that scale (or refuse a shape it was not trained on)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import transferkit as tk
from conftest import CLI_FAST, FAST, HELPERS, TINY, CliRunner, error_line
from transferkit import api
from transferkit.data import (
    PAIRS,
    Dataset,
    DomainPair,
    InputConverted,
    InputSpec,
    Split,
    paths,
)
from transferkit.data.inputs import INPUTS_ATTR
from transferkit.engine.checkpoint import load_torch
from transferkit.errors import CheckpointError, ConfigError, DataError, TransferkitError
from transferkit.models import mlp
from transferkit.models.base import weights_sha256

UNIT = InputSpec(0.0, 1.0)  # [0, 1]: the standalone datasets
HALF = InputSpec(0.5, 0.5)  # [-1, 1]: the domain pairs
# Enough training for a model that is clearly better than chance (about a second).
TRAINED = {**FAST, "epochs": 2, "steps_per_epoch": 20, "batch_size": 64, "lr": 0.1}


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    """The message of a refusal, checked to be one line."""
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def arrays(n: int = 40, features: int = 6, classes: int = 3, seed: int = 0):
    """Separable toy data as NumPy: float64 features, int64 labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)) + 3.0 * np.eye(classes, features)[y]
    return x, y


def toy(x: object, y: object, classes: int = 3, name: str = "toy") -> Dataset:
    return Dataset(name, Split(x, y), Split(x, y), classes)


@pytest.fixture(scope="module")
def unit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of mlp (widths [16]) trained on digits in [0, 1]; tests must not modify it."""
    out = tmp_path_factory.mktemp("unit") / "run"
    tk.train("mlp", "digits", model_options=TINY, out=out, **TRAINED)
    return out


# ---------------------------------------------------------------- data built from Python


@pytest.mark.parametrize(
    ("x_dtype", "y_form"),
    [
        (np.float64, "int32"),
        (np.float16, "column"),
        (np.int64, "float"),
        (np.uint8, "uint8"),
    ],
)
def test_python_data_with_one_meaning_is_converted(x_dtype: type, y_form: str) -> None:
    x, y = arrays()
    x = (np.abs(x) * 10).astype(x_dtype)
    labels = {
        "int32": y.astype(np.int32),
        "column": y.reshape(-1, 1),
        "float": y.astype(np.float64),
        "uint8": y.astype(np.uint8),
    }[y_form]
    data = toy(x, labels)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.train.y.shape == (40,) and data.train.y.tolist() == y.tolist()
    assert data.inputs is None  # data built by hand: convention unknown
    run = tk.train("mlp", data, model_options={"widths": [8]}, **{**FAST, "batch_size": 8})
    assert run.summary["final"]["test"] > 0.0


def test_numpy_split_shares_memory_when_it_can() -> None:
    x = np.zeros((4, 2), dtype=np.float32)
    split = Split(x, np.zeros(4, dtype=np.int64))
    x[0, 0] = 7.0
    assert float(split.x[0, 0]) == 7.0
    frozen = np.arange(8, dtype=np.float32).reshape(4, 2)[::-1]  # reversed strides
    frozen.flags.writeable = False
    assert Split(frozen, [0, 1, 2, 3]).x[0].tolist() == [6.0, 7.0]


def test_labels_one_to_k_name_the_fix() -> None:
    x, y = arrays(classes=10, features=12)
    with pytest.raises(DataError) as info:
        toy(x, y + 1, classes=10, name="x")
    assert one_line(info) == (
        "labels of dataset 'x' (train split) lie in 1..10 but must lie in 0..9: subtract 1"
    )
    with pytest.raises(DataError, match=r"lie in 0\.\.5 but must lie in 0\.\.2: set num_classes"):
        toy(x, y % 6, classes=3)
    with pytest.raises(DataError, match=r"lie in -1\.\.1 .*\(y \+ 1\) // 2"):
        toy(x[:4], np.array([-1, 1, -1, 1]), classes=2)
    good, bad = Split(x, y % 3), Split(x, y % 3 + 1)  # only the test split is off
    with pytest.raises(DataError, match=r"'toy' \(test split\) lie in 1\.\.3 .*subtract 1"):
        Dataset("toy", good, bad, 3)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.full(40, 0.5), r"40 labels are not whole numbers \(e\.g\. 0\.5\)"),
        (np.r_[np.zeros(39), np.nan], r"1 labels are not whole numbers \(e\.g\. nan\)"),
        (np.zeros((40, 3)), r"labels have shape \(40, 3\).*y\.argmax\(1\)"),
        (np.zeros((40, 1, 1)), r"labels have shape \(40, 1, 1\); give one class index"),
        (np.array(["a"] * 40), r"labels must be a tensor or NumPy array of numbers"),
        (np.zeros(39), r"inputs have 40 rows but labels have 39"),
    ],
)
def test_bad_labels_are_refused_in_one_line(labels: np.ndarray, message: str) -> None:
    x, _ = arrays()
    with pytest.raises(DataError, match=message) as info:
        toy(x, labels)
    one_line(info)


def test_bad_features_are_refused_in_one_line() -> None:
    x, y = arrays()
    x[3, 1] = np.nan
    x[5, :2] = np.inf
    with pytest.raises(DataError) as info:
        toy(x, y)
    assert one_line(info) == (
        "inputs of dataset 'toy' (train split) hold 3 NaN or infinite values (in 2 rows); "
        "drop or fill those rows before building the Dataset"
    )
    with pytest.raises(DataError, match=r"inputs have shape \(40,\).*x\.reshape\(-1, 1\)"):
        toy(y.astype(np.float32), y)
    with pytest.raises(DataError, match=r"dataset 'toy' \(train split\) has no rows"):
        toy(np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(DataError, match=r"inputs are torch\.complex64"):
        toy(torch.zeros(40, 2, dtype=torch.complex64), y)
    with pytest.raises(DataError, match=r"train inputs are \(6,\) but test inputs \(5,\)"):
        Dataset("toy", Split(np.zeros((40, 6)), y), Split(np.zeros((40, 5)), y), 3)


@pytest.mark.parametrize("classes", [0, -2, 2.5, "3", True, None])
def test_num_classes_must_be_a_positive_int(classes: object) -> None:
    x, y = arrays()
    with pytest.raises(DataError, match="num_classes of dataset 'toy' must be a positive int"):
        toy(x, y % 1, classes=classes)  # type: ignore[arg-type]


def test_train_and_test_may_be_tuples() -> None:
    x, y = arrays()
    data = Dataset("toy", (x, y), (x, y), np.int64(3))  # type: ignore[arg-type]
    assert isinstance(data.test, Split) and data.num_classes == 3
    assert type(data.num_classes) is int
    with pytest.raises(DataError, match=r"train of dataset 'toy' must be a Split\(x, y\)"):
        Dataset("toy", x, (x, y), 3)  # type: ignore[arg-type]


def test_real_office_caltech_labels_name_the_fix() -> None:
    """The shared Office-Caltech10 file: uint8 features and an N x 1 label column in 1..10."""
    scipy_io = pytest.importorskip("scipy.io")
    root = Path(os.environ.get(paths.ENV_VAR, Path(__file__).parents[2] / "shared" / "datasets"))
    path = root / "office_caltech10_surf" / "webcam_SURF_L10.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found (set {paths.ENV_VAR})")
    mat = scipy_io.loadmat(path)
    x, y = mat["fts"], mat["labels"]
    with pytest.raises(DataError) as info:
        Dataset("webcam", Split(x, y), Split(x, y), 10)
    assert one_line(info).endswith("lie in 1..10 but must lie in 0..9: subtract 1")
    data = Dataset("webcam", Split(x, y - 1), Split(x, y - 1), 10)
    assert data.input_shape == (800,) and data.train.y.max() == 9
    tk.train("mlp", data, model_options={"widths": [8]}, **FAST)


# ---------------------------------------------------------------- foreign models


class Raises(nn.Module):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [ValueError("expected 100 features\nmore"), TypeError("bad"), IndexError("index 7"),
     KeyError("k"), AssertionError()],
)
def test_foreign_model_errors_are_one_line(exc: BaseException, digits: Dataset) -> None:
    with pytest.raises(ConfigError) as info:
        tk.train(Raises(exc), digits, **FAST)
    message = one_line(info)
    assert message.startswith("model cannot take inputs of shape (1, 8, 8): ")
    assert message != "model cannot take inputs of shape (1, 8, 8): "


def test_probe_lets_transferkit_errors_through(digits: Dataset) -> None:
    with pytest.raises(DataError, match=r"^own message$"):
        tk.train(Raises(DataError("own message")), digits, **FAST)


def test_model_returning_a_tuple(digits: Dataset) -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = mlp(digits.input_shape, 10, widths=[8])

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.inner(x), x

    with pytest.raises(ConfigError, match="must return a tensor of N x classes logits, got tuple"):
        tk.train(Pair(), digits, **FAST)


def test_foreign_model_value_error_cli(cli: CliRunner, helpers_dir: Path, tmp_path: Path) -> None:
    code, _, err = cli("train", "--model", f"{HELPERS}:picky", "--epochs", "1", *CLI_FAST,
                       "--out", tmp_path / "run")
    assert code == 2
    line = error_line(err)
    assert line == ("transferkit: error: model cannot take inputs of shape (1, 8, 8): "
                    "expected 100 features, got 64")


def test_resolve_data_names_the_type_not_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        api.resolve_data(torch.zeros(100, 100))  # type: ignore[arg-type]
    assert one_line(info) == ("data must be a dataset name, file, Dataset or DomainPair, got "
                              "Tensor; arrays in memory: tk.from_arrays(x, y) (a pair: "
                              "tk.pair(source, target))")


# ---------------------------------------------------------------- input conventions


def test_input_spec_record_is_plain_and_round_trips(tmp_path: Path) -> None:
    spec = InputSpec(0.5, 0.5, (1, 28, 28))
    record = spec.to_dict()
    assert record == {"shape": [1, 28, 28], "mean": 0.5, "std": 0.5}
    torch.save(record, tmp_path / "r.pt")
    assert InputSpec.from_dict(torch.load(tmp_path / "r.pt", weights_only=True)) == spec
    assert spec.describe() == "1x28x28 in [-1, 1] (mean 0.5, std 0.5)"
    assert UNIT.describe() == "in [0, 1]"
    for bad in ({"mean": 0.5}, {"mean": 0, "std": 1, "scale": 2}, [0.5, 0.5]):
        with pytest.raises(DataError, match="is not a dict of shape, mean and std"):
            InputSpec.from_dict(bad)
    with pytest.raises(DataError, match="std must be positive"):
        InputSpec(0.0, 0.0)
    with pytest.raises(DataError, match="mean must be a finite number"):
        InputSpec(float("nan"))
    with pytest.raises(DataError, match="shape must be a tuple of positive ints"):
        InputSpec(shape=(1, 0))


def test_registered_data_records_its_convention(digits: Dataset, digits_pair: DomainPair) -> None:
    assert digits.inputs == InputSpec(0.0, 1.0, (1, 8, 8))
    assert digits_pair.inputs == InputSpec(0.5, 0.5, (1, 8, 8))
    assert digits_pair.source.inputs == digits_pair.target.inputs == digits_pair.inputs
    x = digits.train.x
    assert torch.equal(digits_pair.source.train.x, x.sub(0.5).div(0.5))


def test_conversion_is_exact_and_checked(digits: Dataset) -> None:
    half = digits.with_inputs(HALF)
    assert half.inputs == InputSpec(0.5, 0.5, (1, 8, 8))
    assert float(half.train.x.min()) == -1.0 and float(half.train.x.max()) == 1.0
    assert torch.equal(half.with_inputs(UNIT).test.x, digits.test.x)
    assert digits.with_inputs(UNIT) is digits
    with pytest.raises(DataError, match="does not record its input convention"):
        Dataset("raw", digits.train, digits.test, 10).with_inputs(HALF)
    with pytest.raises(DataError, match=r"inputs gives shape \(1, 16, 16\) but the data has"):
        Dataset("d", digits.train, digits.test, 10, inputs=InputSpec(shape=(1, 16, 16)))
    with pytest.raises(DataError, match=r"source inputs are in \[0, 1\] but target inputs in"):
        DomainPair("p", digits, half)


def test_pair_builder_brings_any_recorded_scale_to_the_pair(
    digits: Dataset, digits_pair: DomainPair
) -> None:
    spec = PAIRS.get("digits->digits_shifted")
    rebuilt = spec.build(digits.with_inputs(HALF), digits_pair.target.with_inputs(UNIT))
    assert torch.equal(rebuilt.source.train.x, digits_pair.source.train.x)
    assert rebuilt.inputs == digits_pair.inputs


def test_saved_model_records_its_convention(unit_model: Path, digits_pair: DomainPair,
                                            tmp_path: Path) -> None:
    state = load_torch(unit_model / "model.pt")
    assert state["inputs"] == {"shape": [1, 8, 8], "mean": 0.0, "std": 1.0}
    model = tk.load_model(unit_model)
    assert isinstance(model, nn.Module)
    assert getattr(model, INPUTS_ATTR) == InputSpec(0.0, 1.0, (1, 8, 8))
    assert tk.load_run(unit_model).model.transferkit_inputs == InputSpec(0, 1, (1, 8, 8))
    # A model trained on a pair records the pair's convention.
    api.save_model(model, tmp_path / "pair.pt", {"name": "mlp", "options": TINY}, digits_pair)
    assert tk.load_model(tmp_path / "pair.pt").transferkit_inputs == InputSpec(0.5, 0.5, (1, 8, 8))


def test_old_or_broken_input_records(unit_model: Path, tmp_path: Path, digits: Dataset) -> None:
    state = load_torch(unit_model / "model.pt")
    old = {k: v for k, v in state.items() if k != "inputs"}  # a file from before the record
    torch.save(old, tmp_path / "old.pt")
    model = tk.load_model(tmp_path / "old.pt")
    assert model.transferkit_inputs is None
    scores = tk.evaluate(tmp_path / "old.pt", digits.with_inputs(HALF), device="cpu")
    assert scores.notes == []  # unknown convention: used as given, nothing to convert
    torch.save({**state, "inputs": {"mean": "zero", "std": 1.0}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: InputSpec mean must be a finite") as info:
        tk.load_model(tmp_path / "bad.pt")
    one_line(info)


def test_evaluate_converts_data_to_the_model_convention(unit_model: Path, digits: Dataset) -> None:
    same = tk.evaluate(unit_model, digits, device="cpu")
    assert same.notes == [] and same["test"]["accuracy"] > 0.5
    half = digits.with_inputs(HALF)
    converted = tk.evaluate(unit_model, half, device="cpu")
    assert converted == same  # the same images give the same accuracy and loss, exactly
    assert converted.notes == [
        f"inputs of 'digits' converted from [-1, 1] (mean 0.5, std 0.5) to [0, 1], "
        f"as the model {unit_model} expects"
    ]
    # The same tensors without a recorded convention are used as given, and score otherwise.
    raw = tk.evaluate(unit_model, Dataset("raw", half.train, half.test, 10), device="cpu")
    assert raw["test"]["accuracy"] != same["test"]["accuracy"]
    # A module loaded with load_model carries its convention along.
    loaded = tk.evaluate(tk.load_model(unit_model), half, device="cpu")
    assert loaded["test"] == same["test"]


def test_evaluate_on_a_pair_in_another_convention(unit_model: Path, digits: Dataset,
                                                  digits_pair: DomainPair) -> None:
    scores = tk.evaluate(unit_model, digits_pair, device="cpu")
    assert scores["source_test"] == tk.evaluate(unit_model, digits, device="cpu")["test"]
    assert "converted from [-1, 1] (mean 0.5, std 0.5) to [0, 1]" in scores.notes[0]


def test_evaluate_refuses_another_shape(unit_model: Path, digits: Dataset, cli: CliRunner,
                                        tmp_path: Path) -> None:
    big = digits.test.x.repeat(1, 1, 2, 2)
    data = Dataset("big", Split(big, digits.test.y), Split(big, digits.test.y), 10,
                   inputs=HALF)
    with pytest.raises(ConfigError) as info:
        tk.evaluate(unit_model, data, device="cpu")
    assert one_line(info) == (
        f"model {unit_model} expects inputs 1x8x8 in [0, 1] but data 'big' gives 1x16x16 in "
        "[-1, 1] (mean 0.5, std 0.5); use data of its input shape 1x8x8"
    )
    # A model trained on 1x16x16 inputs, evaluated from the command line on digits (1x8x8).
    wide = tmp_path / "wide.pt"
    api.save_model(mlp((1, 16, 16), 10, **TINY), wide, {"name": "mlp", "options": TINY}, data)
    code, _, err = cli("evaluate", wide, "--data", "digits", "--device", "cpu")
    assert code == 2
    assert error_line(err).endswith(
        "expects inputs 1x16x16 in [-1, 1] (mean 0.5, std 0.5) but data 'digits' gives 1x8x8 "
        "in [0, 1]; use data of its input shape 1x16x16"
    )


def test_evaluate_cli_converts(unit_model: Path, cli: CliRunner) -> None:
    code, out, err = cli("evaluate", unit_model, "--data", "digits->digits_shifted",
                         "--device", "cpu")
    assert code == 0, err
    assert "converted from [-1, 1] (mean 0.5, std 0.5) to [0, 1]" in err
    assert "source_test" in out


def test_evaluate_refuses_what_is_not_a_model(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match=r"needs an nn\.Module or a saved model, got int"):
        tk.evaluate(3, digits)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="not found"):
        tk.evaluate(Path("no/such/run"), digits)


def test_input_converted_feeds_the_model_its_own_scale(unit_model: Path, digits: Dataset) -> None:
    teacher = tk.load_model(unit_model).eval()
    wrapped = InputConverted(teacher, InputSpec(0.5, 0.5, (1, 8, 8)), teacher.transferkit_inputs)
    half = digits.with_inputs(HALF)
    with torch.no_grad():
        assert torch.equal(wrapped(half.test.x), teacher(digits.test.x))
    assert wrapped.transferkit_inputs == InputSpec(0.5, 0.5, (1, 8, 8))
    assert wrapped.state_dict().keys() == teacher.state_dict().keys()
    assert weights_sha256(wrapped) == weights_sha256(teacher)


def test_distill_converts_a_teacher_of_another_convention(unit_model: Path,
                                                          digits: Dataset,
                                                          tmp_path: Path) -> None:
    half = digits.with_inputs(HALF)
    out = tmp_path / "student"
    run = tk.distill(unit_model, "mlp", half, student_options=TINY, out=out, **FAST)
    note = "converted from [-1, 1] (mean 0.5, std 0.5) to [0, 1]"
    assert run.summary["teacher_inputs"] == note
    assert yaml.safe_load((out / "config.yaml").read_text())["teacher_inputs"] == note
    if "teacher_accuracy" in run.summary:  # the teacher scores as on its own data
        own = tk.evaluate(unit_model, digits, device="cpu")["test"]["accuracy"]
        assert run.summary["teacher_accuracy"]["test"] == own
    # The student learnt in the data's convention and records it.
    assert tk.load_model(out).transferkit_inputs == InputSpec(0.5, 0.5, (1, 8, 8))
    same = tk.distill(unit_model, "mlp", digits, student_options=TINY, **FAST)
    assert same.summary["teacher_inputs"] == "same as the data: [0, 1]"
    unknown = tk.distill(mlp((1, 8, 8), 10, **TINY), "mlp", half, student_options=TINY, **FAST)
    assert unknown.summary["teacher_inputs"].startswith("unknown")


def test_distill_refuses_a_teacher_of_another_shape(unit_model: Path, digits: Dataset) -> None:
    big = digits.test.x.repeat(1, 1, 2, 2)
    data = Dataset("big", Split(big, digits.test.y), Split(big, digits.test.y), 10, inputs=UNIT)
    with pytest.raises(ConfigError) as info:
        tk.distill(unit_model, "mlp", data, student_options=TINY, **FAST)
    assert one_line(info) == (
        "teacher expects inputs 1x8x8 in [0, 1] but data 'big' gives 1x16x16 in [0, 1]; "
        "use data of its input shape 1x8x8, or resize each batch for it: --teacher-input "
        "size=8,channels=1 (teacher_input= in the API)"
    )


def test_adapt_starts_from_a_saved_model_in_its_convention(unit_model: Path,
                                                           digits_pair: DomainPair,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "adapted"
    run = tk.adapt(str(unit_model), digits_pair, method="dann", out=out, **FAST)
    assert run.summary["model"] == {"name": str(unit_model), "options": {}}
    assert run.summary["architecture"] == {"name": "mlp", "options": TINY}
    assert run.summary["inputs"] == (
        "inputs of 'digits->digits_shifted' converted from [-1, 1] (mean 0.5, std 0.5) to "
        "[0, 1], as the model expects"
    )
    adapted = tk.load_model(out)  # rebuilt from the spec of the model it started from
    assert adapted.transferkit_inputs == InputSpec(0.0, 1.0, (1, 8, 8))
    assert tk.evaluate(out, digits_pair, device="cpu")["source_test"]["accuracy"] == pytest.approx(
        run.summary["final"]["source_test"]
    )
    with pytest.raises(ConfigError, match="model options apply only to a model given by name"):
        tk.adapt(unit_model, digits_pair, model_options=TINY, **FAST)


def test_adapt_cli_starts_from_a_saved_run(cli: CliRunner, unit_model: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "adapted"
    code, _, err = cli("adapt", "--data", "digits->digits_shifted", "--model", unit_model,
                       "--epochs", "1", *CLI_FAST, "--out", out)
    assert code == 0, err
    assert tk.load_model(out).transferkit_inputs == InputSpec(0.0, 1.0, (1, 8, 8))
    code, _, err = cli("adapt", "--data", "digits->digits_shifted", "--model",
                       tmp_path / "missing-run", "--epochs", "1", *CLI_FAST)
    assert code == 2 and "unknown model" in error_line(err)
    assert "nor a model.pt / run directory found from" in error_line(err)


def test_adapt_refuses_a_saved_model_of_another_shape(unit_model: Path,
                                                      digits_pair: DomainPair) -> None:
    def grow(d: Dataset) -> Dataset:
        def split(s: Split) -> Split:
            return Split(s.x.repeat(1, 1, 2, 2), s.y)

        return Dataset(d.name, split(d.train), split(d.test), 10, inputs=HALF)

    pair = DomainPair("big", grow(digits_pair.source), grow(digits_pair.target))
    with pytest.raises(TransferkitError) as info:
        tk.adapt(unit_model, pair, **FAST)
    assert one_line(info) == (
        "model expects inputs 1x8x8 in [0, 1] but data 'big' gives 1x16x16 in [-1, 1] "
        "(mean 0.5, std 0.5); use data of its input shape 1x8x8"
    )


@pytest.mark.parametrize("shape", [(1, 4, 4), (64,)])
def test_a_model_of_unknown_convention_keeps_its_input_shape(cli: CliRunner, tmp_path: Path,
                                                             shape: tuple) -> None:
    """A float .npz records no input convention; the model's input shape is still checked:
    1x4x4 was a torch shape error, 64 flat features silently ran on 8x8 images."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "f.npz"
    np.savez(data, x=rng.random((60, *shape), dtype=np.float32), y=np.arange(60) % 10)
    run = tmp_path / "run"
    code, _, err = cli("train", "--data", data, "--model-opt", "widths=[8]", "--epochs", "1",
                       *CLI_FAST, "--out", run)
    assert code == 0, err
    trained = "x".join(map(str, shape))
    code, _, err = cli("evaluate", run, "--data", "digits")
    assert code == 2 and f"trained on inputs {trained} but data 'digits' gives 1x8x8" in err, err
    code, _, err = cli("distill", "--data", "digits", "--teacher", run, "--model-opt",
                       "widths=[8]", "--epochs", "1", *CLI_FAST, "--out", tmp_path / "student")
    assert code == 2 and "teacher was trained on inputs" in err, err
    code, _, err = cli("evaluate", run, "--data", data)  # its own data still works
    assert code == 0, err
