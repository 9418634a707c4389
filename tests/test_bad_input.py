"""Bad input: one line on stderr starting ``transferkit: error:``, exit status 2, no traceback,
and nothing already saved is lost."""

from __future__ import annotations

import fractions
import gzip
import shutil
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import transferkit as tk
from conftest import (
    CLI_FAST,
    FAST,
    HELPERS,
    TINY,
    CliRunner,
    console_script,
    error_line,
    run_process,
    snapshot,
)
from transferkit import api
from transferkit.data import Dataset, paths
from transferkit.engine.checkpoint import load_torch
from transferkit.errors import CheckpointError, ConfigError, TransferkitError
from transferkit.models import mlp

# The settings of the `trained_run` fixture, as flags.
SAME = ["--data", "digits", "--model", "mlp", "--model-opt", "widths=[16]", "--epochs", "2",
        *CLI_FAST]


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A finished run that a bad command must leave as it is."""
    return Path(shutil.copytree(trained_run, tmp_path / "saved"))


def fails(cli: CliRunner, *argv: str | Path) -> str:
    code, _, err = cli(*argv)
    assert code == 2, err
    return error_line(err)


def fails_and_keeps(cli: CliRunner, run_dir: Path, *argv: str | Path) -> str:
    """``argv`` aimed at ``run_dir`` with ``--resume`` fails and leaves every file as it was."""
    before = snapshot(run_dir)
    line = fails(cli, *argv, "--out", run_dir, "--resume")
    assert snapshot(run_dir) == before
    return line


# ---------------------------------------------------------------- unknown names


def test_unknown_dataset(cli: CliRunner, run_copy: Path) -> None:
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--data", "nope")
    assert "unknown dataset 'nope'" in line
    from transferkit.data import DATASETS

    assert "valid datasets: " + ", ".join(sorted(DATASETS)) in line
    line = fails(cli, "adapt", "--data", "nope->digits", "--out", run_copy / "new")
    assert "unknown domain pair 'nope->digits'" in line and "digits->digits_shifted" in line
    line = fails(cli, "evaluate", run_copy, "--data", "nope")
    assert "unknown dataset 'nope'" in line
    # a path (it has a separator) is looked for as a path, whichever side it is on
    for data in ("img/nothere", "mnist->img/nothere"):
        line = fails(cli, "adapt", "--data", data, "--out", run_copy / "new")
        assert "data file img/nothere does not exist" in line and "unknown" not in line


def test_unknown_model(cli: CliRunner, run_copy: Path) -> None:
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--model", "nope")
    assert "unknown model 'nope'" in line
    from transferkit.models import MODELS

    assert "valid models: " + ", ".join(sorted(MODELS)) in line


def test_unknown_method(cli: CliRunner, run_copy: Path) -> None:
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--method", "nope")
    from transferkit.methods import METHODS

    assert "unknown method 'nope'" in line
    assert "valid methods: " + ", ".join(sorted(METHODS)[:4]) + ", " in line
    assert "adapt: method 'kd' needs teacher, which this run does not have (use `transferkit " \
        "distill (or adapt --teacher)`); give a teacher" in fails(
        cli, "adapt", "--data", "digits->digits_shifted", "--method", "kd")
    assert "distill: method 'dann' needs target" in fails(
        cli, "distill", "--teacher", run_copy, "--method", "dann")


# ---------------------------------------------------------------- data files


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def write_mnist(root: Path, broken: str) -> Path:
    """The four MNIST files under ``root/mnist`` (5 images each), train images ``broken``."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    images = np.zeros((5, 28, 28), dtype=np.uint8).tobytes()
    labels = bytes(range(5))
    for prefix in ("train", "t10k"):
        image_file = idx_bytes(2051, (5, 28, 28), images)
        if prefix == "train" and broken == "short payload":
            image_file = image_file[:-100]
        if prefix == "train" and broken == "wrong magic":
            image_file = idx_bytes(2049, (5, 28, 28), images)
        data = gzip.compress(image_file)
        if prefix == "train" and broken == "cut gzip":
            data = data[: len(data) // 2]
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(data)
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(2049, (5,), labels))
        )
    return folder / "train-images-idx3-ubyte.gz"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No downloads and no user data folders: only ``--data-dir`` is searched."""

    def refuse(url: str, timeout: float):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(paths, "urlopen", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TRANSFERKIT_DATA_DIR", raising=False)


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("short payload", "truncated: dims (5, 28, 28) need 3920 data bytes, found 3820"),
        ("cut gzip", "truncated or corrupt gzip data"),
        ("wrong magic", "magic number 2049 is not the expected 2051"),
    ],
)
def test_broken_data_file(
    cli: CliRunner, tmp_path: Path, run_copy: Path, offline: None, broken: str, expected: str
) -> None:
    bad = write_mnist(tmp_path / "data", broken)
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--data", "mnist", "--data-dir",
                           tmp_path / "data")
    assert str(bad) in line and expected in line


def test_intact_data_files_load(tmp_path: Path, offline: None) -> None:
    """The files the test above breaks are otherwise fine (so it fails for its reason)."""
    write_mnist(tmp_path / "data", "none")
    data = api.resolve_data("mnist", tmp_path / "data")
    assert isinstance(data, Dataset) and len(data.train) == 5 and data.input_shape == (1, 28, 28)


# ---------------------------------------------------------------- teacher and student disagree


def test_teacher_with_other_class_count_python_api(digits: Dataset) -> None:
    five = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ConfigError, match="the teacher outputs 5 classes but the data has 10"):
        tk.distill(five, "mlp", digits, student_options=TINY, **FAST)
    ten = mlp(digits.input_shape, 10, widths=[8])
    with pytest.raises(ConfigError, match="the student outputs 5 classes but the data has 10"):
        tk.distill(ten, nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), digits, **FAST)
    wrong_input = nn.Linear(10, 10)
    with pytest.raises(ConfigError, match=r"teacher cannot take inputs of shape \(1, 8, 8\)"):
        tk.distill(wrong_input, "mlp", digits, student_options=TINY, **FAST)


def test_teacher_with_other_class_count_cli(
    cli: CliRunner, tmp_path: Path, digits: Dataset, helpers_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRANSFERKIT_TRUST_CODE", "1")  # the teacher's factory is the test's
    helpers = __import__(HELPERS)
    teacher = tmp_path / "teacher" / "model.pt"
    teacher.parent.mkdir()
    api.save_model(helpers.five_classes(digits.input_shape), teacher,
                   {"name": f"{HELPERS}:five_classes", "options": {}}, digits)
    out = tmp_path / "student"
    line = fails(cli, "distill", "--teacher", teacher, "--model-opt", "widths=[8]", "--epochs",
                 "1", *CLI_FAST, "--out", out)
    assert "the teacher outputs 5 classes but the data has 10" in line
    assert not out.exists()
    line = fails(cli, "train", "--model", f"{HELPERS}:five_classes", "--epochs", "1", *CLI_FAST,
                 "--out", out)
    assert "outputs 5 classes but the data has 10" in line


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_that_does_not_fit(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        tk.load_model(trained_run, model="mlp", widths=[8])
    message = str(info.value)
    assert "features.1.weight: checkpoint (16, 64) vs model (8, 64)" in message
    assert "\n" not in message
    with pytest.raises(CheckpointError, match=r"missing weight, bias; unexpected features"):
        tk.load_model(trained_run / "model.pt", model=nn.Linear(64, 10))
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(TransferkitError, match=r"not a transferkit model\.pt"):
        tk.load_model(other)


def test_resume_with_other_settings_keeps_the_run(cli: CliRunner, run_copy: Path) -> None:
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--model-opt", "widths=[8]")
    assert "settings differ (model.options.widths)" in line
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--lr", "0.5")
    assert "settings differ (train.optim.lr)" in line
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--data", "digits_shifted")
    assert "settings differ (data)" in line
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--opt", "label_smoothing=0.1")
    assert "settings differ (method_options" in line and "label_smoothing" in line
    # the same settings resume (the run is finished: nothing more to train)
    code, _, err = cli("train", *SAME, "--out", run_copy, "--resume")
    assert code == 0, err
    assert (run_copy / "metrics.jsonl").read_text().count("\n") == 2


def test_resume_a_run_without_its_config_record(cli: CliRunner, run_copy: Path) -> None:
    """The checkpoint's own record of the settings still refuses them."""
    (run_copy / "config.yaml").unlink()
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--lr", "0.5")
    assert "cannot resume from" in line and "settings differ (optim.lr)" in line
    line = fails_and_keeps(cli, run_copy, "train", *SAME, "--model-opt", "widths=[8]")
    assert "checkpoint (16, 64) vs model (8, 64)" in line


def test_existing_run_without_resume(cli: CliRunner, run_copy: Path) -> None:
    before = snapshot(run_copy)
    line = fails(cli, "train", *SAME, "--out", run_copy)
    assert "already holds a run" in line and "--resume" in line
    assert snapshot(run_copy) == before


def test_truncated_model_file(cli: CliRunner, trained_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model.pt"
    broken.write_bytes((trained_run / "model.pt").read_bytes()[:300])
    line = fails(cli, "evaluate", broken, "--data", "digits")
    assert str(broken) in line and "truncated" in line
    assert "is not a file or run dir" in fails(cli, "evaluate", "nowhere", "--data", "digits")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty (0 bytes)"),
        (b"garbage, not a model\n", "is not a PyTorch model or checkpoint file"),
        ("unsafe", "refused to load"),  # a real torch file holding an arbitrary class
    ],
)
def test_a_model_file_that_is_not_one(cli: CliRunner, tmp_path: Path, content, expected) -> None:
    path = tmp_path / "model.pt"
    if content == "unsafe":
        torch.save({"state": fractions.Fraction(1, 3)}, path)
    else:
        path.write_bytes(content)
    line = fails(cli, "evaluate", path, "--data", "digits")
    assert str(path) in line and expected in line, line


# ---------------------------------------------------------------- settings of the wrong type


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--epochs", "0"], "train.epochs: Input should be greater than or equal to 1 (got 0)"),
        (["--lr", "-1"], "train.optim.lr: Input should be greater than 0 (got -1.0)"),
        (["--batch-size", "0"], "train.batch_size"),
        (["--schedule", "weird"], "train.optim.schedule"),
        (["--momentum", "1.5"], "train.optim.momentum"),
        (["--opt", "notakeyvalue"], "--opt 'notakeyvalue': write key=value"),
        (["--opt", "temperature="], "--opt 'temperature=': temperature has no value"),
        (["--model-opt", "widths= "], "widths has no value; write widths=VALUE"),
        (["--normalize", " , "], "--normalize has no steps"),
        (["--opt", "nope=1"], "method 'supervised'"),
        (["--model-opt", "widths=abc"], "widths must be a list of positive ints"),
        (["--model-opt", "depth=3"], "model 'mlp' has no option 'depth'"),
        (["--model-opt", "name=x"], "model 'mlp' has no option 'name'"),
        (["--model-opt", "num_classes=3"], "model option 'num_classes' is set from the data"),
        (["--max-norm", "0"], "train.optim.max_norm: Input should be greater than 0"),
    ],
)
def test_bad_flag_values(
    cli: CliRunner, run_copy: Path, flags: list[str], expected: str
) -> None:
    line = fails_and_keeps(cli, run_copy, "train", *SAME, *flags)
    assert expected in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: {batch_size: big}", "train.batch_size: Input should be a valid integer"),
        ("train: {optim: {lr: fast}}", "train.optim.lr"),
        ("train: [1, 2]", "train must be a mapping of fields, got [1, 2]"),
        ("train: {optim: 3}", "train.optim must be a mapping of fields, got 3"),
        ("method_options: [a]", "method_options must be a mapping of fields"),
        ("model: [mlp]", "model must be a mapping of fields, got ['mlp']"),
        ("teacher_train: {epochs: 0}", "teacher_train.epochs"),
        ("epoch: 3", "unknown field 'epoch' at the top level; did you mean 'epochs'?"),
        ("command: adapt", "is for 'adapt', not 'train'"),
        ("[1, 2]", "the top level must be a mapping"),
        ("train: {epochs: 2", "not valid YAML: expected ',' or '}', but got '<stream end>'"),
    ],
)
def test_bad_config_file(cli: CliRunner, tmp_path: Path, run_copy: Path, text: str,
                         expected: str) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(text + "\n")
    line = fails_and_keeps(cli, run_copy, "train", "--config", run_yaml, "--model-opt",
                           "widths=[16]")
    assert expected in line


def test_bad_settings_in_config_named_as_file(cli: CliRunner, tmp_path: Path) -> None:
    assert "FileNotFoundError" in fails(cli, "train", "--config", tmp_path / "missing.yaml")
    assert "teacher_train.epochs" in fails(cli, "distill", "--teacher", "mlp",
                                           "--teacher-epochs", "0")


def test_bad_settings_python_api(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match=r"epochs: Input should be greater than or equal to 1"):
        tk.train("mlp", digits, epochs=0)
    with pytest.raises(ConfigError, match=r"optim.lr"):
        tk.train("mlp", digits, lr="fast")
    with pytest.raises(ConfigError, match=r"method 'dann'"):
        tk.adapt("mlp", "digits->digits_shifted", nope=1, **FAST)


# ---------------------------------------------------------------- a loss that turns NaN


def test_nan_from_a_huge_learning_rate(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = fails(cli, "train", "--model-opt", "widths=[16]", "--lr", "1e30", "--epochs", "2",
                 "--device", "cpu", "--no-progress", "--out", out)
    assert "loss became non-finite at epoch 1, step " in line
    assert "no checkpoint was written yet" in line and "lower the learning rate" in line
    assert not (out / "checkpoint.pt").exists()
    assert "method options" not in line  # none were set: the lr is the suspect


def test_nan_from_a_huge_loss_weight_names_the_weight(cli: CliRunner, tmp_path: Path) -> None:
    """The message used to blame the learning rate alone for a trade_off of 1e30."""
    line = fails(cli, "adapt", "--method", "dann", "--data", "digits->digits_shifted",
                 "--model-opt", "widths=[16]", "--opt", "trade_off=1e30", "--opt", "gamma=10",
                 "--epochs", "2", "--device", "cpu", "--no-progress", "--out", tmp_path / "r")
    assert "loss became non-finite" in line
    assert "the method options include trade_off=1e+30: a large loss weight" in line
    assert "gamma" not in line  # a usual value is not a suspect


def test_nan_from_a_tiny_loss_divisor_names_the_divisor(cli: CliRunner, tmp_path: Path) -> None:
    """l2's scale divides the loss: scale=1e-300 made NaN with a message that blamed the lr."""
    line = fails(cli, "distill", "--method", "l2", "--teacher", "mlp", "--teacher-epochs", "1",
                 "--model-opt", "widths=[16]", "--teacher-opt", "widths=[16]", "--opt",
                 "scale=1e-300", "--epochs", "1", "--device", "cpu", "--no-progress",
                 "--out", tmp_path / "r")
    assert "non-finite" in line
    assert "scale=1e-300, which divides the loss: a tiny divisor is a huge loss weight" in line
    assert "a large loss weight" not in line  # scale is not read as a weight


@pytest.mark.parametrize("args", [
    ("adapt", "--method", "dann", "--data", "digits->digits_shifted", "--opt",
     "trade_off=1e300"),
    ("train", "--data", "digits", "--lr", "1e30"),
    ("train", "--data", "digits", "--lr", "1e30", "--steps-per-epoch", "1"),  # finite weights
])
def test_weights_made_non_finite_by_the_last_step_are_never_saved(
    cli: CliRunner, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Gradient reversal scales only the backward pass: the loss stayed finite while the last
    step's update was NaN, and the run ended with exit 0 and a NaN model.pt."""
    out = tmp_path / "r"
    line = fails(cli, args[0], "--model-opt", "widths=[16]", "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "16", "--device", "cpu",
                 "--no-progress", "--out", out, *args[1:])
    assert "weights became non-finite in epoch 1" in line or "not finite after epoch 1" in line \
        or "non-finite at" in line, line
    assert not (out / "model.pt").exists()


def test_divergence_on_raw_features_of_large_scale_says_normalize(cli: CliRunner,
                                                                   tmp_path: Path) -> None:
    """Counts or prices in the thousands blow a network up at the usual rate: the fix a new
    user misses is normalising them, so the message names it (and its size)."""
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (rng.normal(size=(60, 4)) + y[:, None]) * 5e4
    np.savez(tmp_path / "prices.npz", x=x.astype(np.float32), y=y)
    line = fails(cli, "train", "--data", tmp_path / "prices.npz", "--model-opt", "widths=[16]",
                 "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--no-progress",
                 "--out", tmp_path / "r")
    assert "diverged" in line or "non-finite" in line
    largest = float(np.abs(x.astype(np.float32)).max())  # of the training rows (80% of them)
    found = float(line.split("the input features reach |x| = ")[1].split(":")[0])
    assert 0.5 * largest <= found <= largest
    assert "--normalize zscore" in line
    scaled = cli("train", "--data", tmp_path / "prices.npz", "--model-opt", "widths=[16]",
                 "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--no-progress",
                 "--normalize", "zscore", "--out", tmp_path / "ok")
    assert scaled[0] == 0, scaled[2]


def test_nan_later_keeps_the_last_good_checkpoint(
    cli: CliRunner, tmp_path: Path, helpers_dir: Path
) -> None:
    out = tmp_path / "run"
    line = fails(cli, "train", "--model", f"{HELPERS}:nan_after", "--model-opt", "calls=8",
                 "--epochs", "5", *CLI_FAST, "--out", out)
    assert "loss became non-finite at epoch 3, step 2 (supervised.ce=nan)" in line
    assert f"the last good checkpoint (epoch 2) is kept in {out}" in line
    state = load_torch(out / "checkpoint.pt")
    assert state["epoch"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]
    assert (out / "metrics.jsonl").read_text().count("\n") == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["options"] == {"calls": 8}
    helpers = __import__(HELPERS)
    model = tk.load_model(out / "checkpoint.pt", helpers.nan_after((1, 8, 8), 10))
    assert model.inner.features[1].weight.shape == (16, 64)


def test_multi_line_message_is_printed_on_one_line(cli: CliRunner, helpers_dir: Path) -> None:
    line = fails(cli, "train", "--model", f"{HELPERS}:broken", "--epochs", "1", *CLI_FAST)
    assert "raised RuntimeError: first line second line" in line


# ---------------------------------------------------------------- the real console script


def test_console_script_error_is_one_line(sub_env: dict, tmp_path: Path) -> None:
    proc = run_process([*console_script(), "train", "--data", "nope", "--device", "cpu"], sub_env,
                       cwd=tmp_path)
    assert proc.returncode == 2
    assert error_line(proc.stderr).startswith("transferkit: error: unknown dataset 'nope'")
    assert proc.stdout == ""


# ---------------------------------------------------------------- models that cannot train


class _Linear(nn.Module):
    def __init__(self, output: str) -> None:
        super().__init__()
        self.fc, self.output = nn.Linear(64, 10), output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        return z.detach() if self.output == "detached" else z.argmax(1, keepdim=True).expand(
            -1, 10) if self.output == "indices" else z


@pytest.mark.parametrize(("output", "words"), [
    ("detached", "output does not depend on its trainable weights"),
    ("indices", "must return floating-point logits, got torch.int64"),
])
def test_a_model_whose_output_cannot_train_is_refused_before_training(
    digits: Dataset, tmp_path: Path, output: str, words: str
) -> None:
    """Such a forward used to fail inside backward ("element 0 of tensors does not require
    grad") or log_softmax (no Long kernel), after the run directory was made."""
    with pytest.raises(ConfigError, match=words):
        tk.train(_Linear(output), digits, out=tmp_path / "run", **FAST)
    assert not (tmp_path / "run").exists()
    assert tk.evaluate(_Linear("detached"), digits)["test"]["accuracy"] >= 0  # evaluating: fine


def test_a_float64_model_is_told_to_convert_not_blamed_on_the_shape(digits: Dataset) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    with pytest.raises(ConfigError, match=r"weights are torch.float64 .*\.float\(\)"):
        tk.train(model, digits, **FAST)


def test_api_arguments_of_the_wrong_kind_or_range(tmp_path: Path, trained_run: Path) -> None:
    """Each used to end in a raw error from torch or NumPy (split_size, Overflow when
    unpacking long long, Seed must be between 0 and 2**32 - 1)."""
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got 0"):
        tk.evaluate(trained_run, "digits", batch_size=0)
    for seed in (-1, "x", 2**32):
        with pytest.raises(ConfigError, match="seed must be an integer"):
            tk.inspect(trained_run, "digits->digits_shifted", seed=seed, picture=False)
    for seed, words in ((2**70, "less than or equal to"), (-3, "greater than or equal to 0")):
        with pytest.raises(ConfigError, match=f"seed: Input should be {words}"):
            tk.train("mlp", "digits", seed=seed, **{**FAST, "epochs": 1})


def test_data_given_as_a_path_object_or_with_spaces_round_the_arrow(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "a.npz"
    np.savez(path, x=rng.normal(size=(30, 4)).astype(np.float32), y=np.arange(30) % 3)
    assert tk.load_data(path).name == str(path)  # a pathlib.Path, as its str
    assert tk.load_data(" digits -> digits_shifted ").name == "digits->digits_shifted"
    with pytest.raises(tk.TransferkitError, match=f"data file {tmp_path / 'b.npz'} does not"):
        tk.load_data(f"{path} -> {tmp_path / 'b.npz'}")  # no invisible leading space


def test_wrong_kinds_of_names_and_parts_are_one_line(digits: Dataset, trained_run: Path) -> None:
    from transferkit.data import DomainPair

    cases = [
        (lambda: tk.explain(None), "explain takes the name"),
        (lambda: tk.explain(3), "explain takes the name"),
        (lambda: tk.load_model([trained_run]), "named by its path"),
        (lambda: tk.adapt("mlp", "digits->digits_shifted", feature_layer=3, **FAST),
         "module path as a string"),
        (lambda: Dataset(123, digits.train, digits.test, 10), "name must be a non-empty"),
        (lambda: DomainPair("x", (digits.train.x, digits.train.y), digits),
         "source must be a Dataset"),
    ]
    for call, words in cases:
        with pytest.raises(TransferkitError, match=words):
            call()


def test_a_loaded_model_predicts_the_same_twice(trained_run: Path) -> None:
    """load_model gives the module in eval mode: dropout off, repeatable predictions."""
    model = tk.load_model(trained_run)
    assert not any(m.training for m in model.modules())
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), model(x))


class _OwnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_a_run_of_a_python_module_reloads_with_that_module(digits: Dataset,
                                                           tmp_path: Path) -> None:
    """Its model.pt cannot rebuild the network: the message used to call it a training
    checkpoint, and load_run had no way to take the module."""
    out = tmp_path / "run"
    tk.train(_OwnNet(), digits, out=out, **FAST)
    for call in (lambda: tk.load_run(out), lambda: tk.load_model(out)):
        with pytest.raises(ConfigError) as info:
            call()
        message = str(info.value)
        assert "network given from Python (class _OwnNet)" in message, message
        assert "load_run(run, model=_OwnNet())" in message and "checkpoint" not in message
    result = tk.load_run(out, _OwnNet())
    assert result.summary["final"]["test"] == pytest.approx(
        tk.evaluate(result.model, digits)["test"]["accuracy"])
    with pytest.raises(ConfigError, match="is a file; load_run reads a run directory"):
        tk.load_run(out / "model.pt")
    (out / "summary.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a transferkit run record"):
        tk.load_run(out, _OwnNet())
    (out / "summary.json").write_text("{}")
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "tr')  # a kill in the middle of a line
    with pytest.raises(CheckpointError, match=r"metrics.jsonl line \d+ is not valid JSON"):
        tk.load_run(out, _OwnNet())
