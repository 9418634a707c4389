"""Settings the user gives (YAML, flags, resume, devices, folders) are read safely and either
mean what the user meant or are refused in one line before anything loads or trains."""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

import transferkit as tk
from conftest import CLI_FAST, CliRunner, console_script, error_line, run_process
from transferkit.cli import build_parser, run_config
from transferkit.config import (
    MAX_YAML_NODES,
    ModelSpec,
    RunConfig,
    TrainConfig,
    format_validation_error,
    read_yaml,
)
from transferkit.data import Dataset, resolve_data_dirs
from transferkit.engine.distributed import local_device
from transferkit.errors import ConfigError, DataError

TINY_RUN = ["--data", "digits", "--model", "mlp", "--model-opt", "widths=[16]", *CLI_FAST]


def fails(cli: CliRunner, *argv: str | Path) -> str:
    code, _, err = cli(*argv)
    assert code == 2, err
    return error_line(err)


def settings(*argv: str | Path) -> RunConfig:
    """What the CLI would run, without running it."""
    return run_config(build_parser().parse_args([str(a) for a in argv]))


def billion_laughs(levels: int = 10, width: int = 9) -> str:
    """``a: &a [x, ...]``, ``b: &b [*a, ...]``, ...: width**levels values from a few lines."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str | bytes, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# ---------------------------------------------------------------- bounded reading and rendering


def test_billion_laughs_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs())
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match=f"expands to more than {MAX_YAML_NODES:,} values"):
            read_yaml(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5
    assert peak < 50 * 2**20


def test_billion_laughs_through_the_console_script(sub_env: dict, tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs(levels=12))
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to read the peak memory")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent (pytest, large).
    script = ("import sys\nfrom transferkit.cli import main\n"
              "code = main(['train', '--config', sys.argv[1]])\n"
              "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
              "print(peak.split()[1])\nsys.exit(code)")
    proc = run_process([sys.executable, "-c", script, str(path)], sub_env, timeout=120,
                       cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc.stderr)
    assert f"config {path}: the YAML expands to more than" in line
    assert int(proc.stdout.split()[-1]) < 1_500_000  # KiB; torch itself takes ~0.3 GB


def test_alias_bomb_in_an_option_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    flow = "[" + ", ".join(f"&l{i} [" + ", ".join([f"*l{i - 1}" if i else "x"] * 9) + "]"
                           for i in range(10)) + "]"
    line = fails(cli, "train", "--opt", f"weights={flow}", "--out", tmp_path / "run")
    assert "--opt weights: the YAML expands to more than" in line
    assert not (tmp_path / "run").exists()


def test_error_message_of_a_huge_shared_structure_is_short_and_quick() -> None:
    huge: list = ["x"] * 10
    for _ in range(40):  # 10**41 values, 41 distinct lists
        huge = [huge] * 10
    for model, data, field in ((ModelSpec, {"name": huge}, "name: Input should be a valid string"),
                               (TrainConfig, {"epochs": huge}, "epochs: Input should be a valid "
                                                               "integer")):
        with pytest.raises(ValidationError) as info:
            model.model_validate(data)
        start = time.perf_counter()
        text = format_validation_error(info.value, "config run.yaml")
        assert time.perf_counter() - start < 1
        assert text.startswith(f"config run.yaml: {field} (got [[[")
        assert len(text) < 200


def test_many_errors_are_cut_short() -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({k: "x" for k in ("epochs", "batch_size", "seed", "jitter",
                                                     "eval_every", "eval_batch_size", "amp")})
    text = format_validation_error(info.value)
    assert text.count("Input should be") == 5 and text.endswith("and 2 more")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe\x00e\x00p\x00o\x00c\x00h", "is not UTF-8 text (byte 0xff at offset 0); it "
                                               "must be a YAML text file saved as UTF-8"),
        (b"epochs: 3  # caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 16)"),
        ("# " + "x" * (1 << 20) + "\n", "is larger than 1024 KiB"),
        ("a: &a [1, *a]\n", "an alias (*name) refers to a value that contains it"),
        ("epochs: 1\nseed: 2\nepochs: 2\n", "key 'epochs' appears twice in one mapping (line 3)"),
        ("x: " + "[" * 60 + "]" * 60 + "\n", "nested more than 50 levels deep"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 50 levels deep"),
        ("seed: " + "9" * 5000 + "\n", "a value cannot be read"),
        ("!!python/object/apply:os.system [echo hi]\n",
         "not valid YAML: could not determine a constructor for the tag"),
        ("epochs: 3\x00\n", "not valid YAML: character #x0000 is not allowed"),
        ("epochs: 1\n---\nepochs: 2\n", "not valid YAML: expected a single document in the "
                                       "stream, but found another document at line 2"),
    ],
)
def test_unreadable_config_file(
    cli: CliRunner, tmp_path: Path, content: str | bytes, expected: str
) -> None:
    path = write(tmp_path, content)
    line = fails(cli, "train", "--config", path, "--out", tmp_path / "run")
    assert f"config {path}" in line and expected in line
    assert len(line) < 300
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "null\n", "---\n"])
def test_empty_config_file(cli: CliRunner, tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert f"config {path} is empty (no settings)" in fails(cli, "train", "--config", path)


def test_config_is_a_folder(cli: CliRunner, tmp_path: Path) -> None:
    assert f"config {tmp_path}: IsADirectoryError" in fails(cli, "train", "--config", tmp_path)


# ---------------------------------------------------------------- devices


def test_unknown_device_name(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    for argv in (["train", "--device", "foo", "--out", out],
                 ["distill", "--teacher", "mlp", "--device", "gpu", "--out", out],
                 ["evaluate", "nowhere", "--data", "digits", "--device", "cuda:x"]):
        line = fails(cli, *argv)
        assert "is not a device name; use auto, cpu, cuda, cuda:N (GPU number N), mps" in line
    assert not out.exists()  # refused before the teacher trained


def test_cuda_without_a_gpu(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    line = fails(cli, "distill", "--teacher", "mlp", "--device", "cuda", "--out", out)
    assert line == (
        "transferkit: error: device 'cuda' was asked for but this torch build/machine has no "
        "CUDA GPU (torch.cuda.is_available() is False); use --device cpu or --device auto"
    )
    assert not out.exists()
    assert "has no CUDA GPU" in fails(cli, "train", "--config", write(tmp_path, "device: cuda:0"))
    assert local_device("auto") == torch.device("cpu")
    assert local_device(" CPU ") == torch.device("cpu")


def test_cuda_index_beyond_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"means GPU 3, but this machine has 2 \(cuda:0 to cuda"):
        local_device("cuda:3")
    assert local_device("cuda:1") == torch.device("cuda", 1)


# ---------------------------------------------------------------- folders


def test_data_dir_that_is_a_file_or_missing(cli: CliRunner, tmp_path: Path) -> None:
    a_file = write(tmp_path, "not a folder", "data.txt")
    out = tmp_path / "run"
    line = fails(cli, "train", "--data-dir", a_file, "--out", out)
    assert f"--data-dir {a_file} is a file, not a folder" in line
    line = fails(cli, "evaluate", "nowhere", "--data", "digits", "--data-dir", a_file)
    assert "is a file, not a folder" in line
    line = fails(cli, "train", "--data-dir", tmp_path / "nope", "--out", out)
    assert f"--data-dir {tmp_path / 'nope'} does not exist" in line
    assert "--data-dir is empty" in fails(cli, "train", "--data-dir", "", "--out", out)
    assert not out.exists()
    with pytest.raises(DataError, match="is a file, not a folder"):
        resolve_data_dirs(a_file)


def test_a_target_batch_size_without_a_target_batch_is_said(cli: CliRunner,
                                                              tmp_path: Path) -> None:
    code, _, err = cli("train", "--data", "digits", "--model-opt", "widths=[8]", "--epochs",
                       "1", "--steps-per-epoch", "1", "--device", "cpu", "--target-batch-size",
                       "7", "--out", tmp_path / "r")
    assert code == 0, err
    assert "target_batch_size=7 has no effect: this run draws no separate target batch" in err
    code, _, err = cli("adapt", "--data", "digits->digits_shifted", "--method", "dann",
                       "--model-opt", "widths=[8]", "--epochs", "1", "--steps-per-epoch", "1",
                       "--device", "cpu", "--target-batch-size", "7", "--out", tmp_path / "a")
    assert code == 0 and "has no effect" not in err, err


@pytest.mark.parametrize("out", ["", "  "])
def test_empty_out(cli: CliRunner, tmp_path: Path, out: str) -> None:
    assert "--out is empty" in fails(cli, "train", "--out", out, "--epochs", "1", *CLI_FAST)
    assert "--out is empty" in fails(cli, "demo", "--out", out)
    path = write(tmp_path, f"out: '{out}'\n")
    assert "--out is empty" in fails(cli, "train", "--config", path)
    assert list(tmp_path.iterdir()) == [path]  # nothing written into the current folder


# ---------------------------------------------------------------- strict values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("epochs: true", "train.epochs: Input should be a valid integer, not true/false (got "
                         "True)"),
        ("epochs: '3'", "train.epochs: Input should be a valid integer, not text (got '3')"),
        ("train: {seed: no}", "train.seed: Input should be a valid integer, not true/false"),
        ("lr: yes", "train.optim.lr: Input should be a valid number, not true/false"),
        ("lr: '0.1'", "train.optim.lr: Input should be a valid number, not text"),
        ("train: {progress: 1}", "train.progress: Input should be a valid boolean (got 1)"),
        ("nesterov: 'true'", "train.optim.nesterov: Input should be a valid boolean"),
        ("lr: .nan", "train.optim.lr: Input should be a finite number (got nan)"),
        ("lr: .inf", "train.optim.lr: Input should be a finite number (got inf)"),
        ("max_norm: .inf", "train.optim.max_norm: Input should be a finite number"),
        ("teacher_train: {epochs: true}", "teacher_train.epochs: Input should be a valid integer"),
    ],
)
def test_strict_values_in_a_config_file(
    cli: CliRunner, tmp_path: Path, text: str, expected: str
) -> None:
    line = fails(cli, "train", "--config", write(tmp_path, text + "\n"), "--out", tmp_path / "r")
    assert expected in line


@pytest.mark.parametrize(("flag", "value"),
                         [("--lr", "inf"), ("--lr", "nan"), ("--momentum", "nan"),
                          ("--max-norm", "inf"), ("--weight-decay", "inf")])
def test_non_finite_flags(cli: CliRunner, tmp_path: Path, flag: str, value: str) -> None:
    field = flag[2:].replace("-", "_")
    line = fails(cli, "train", flag, value, "--out", tmp_path / "run")
    assert f"train.optim.{field}: Input should be a finite number" in line


def test_numbers_that_are_accepted(tmp_path: Path) -> None:
    numbers = write(tmp_path, "lr: 1\nweight_decay: 1e-3\nmax_norm: 2E1")
    cfg = settings("distill", "--config", numbers, "--teacher", "mlp", "--opt",
                   "temperature=1e-1", "--out", tmp_path / "r")
    assert cfg.train.optim.lr == 1.0 and isinstance(cfg.train.optim.lr, float)
    assert cfg.train.optim.weight_decay == 0.001 and cfg.train.optim.max_norm == 20.0
    assert cfg.method_options == {"temperature": 0.1}


def test_strict_values_python_api(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="epochs: Input should be a valid integer, not true"):
        tk.train("mlp", digits, epochs=True)
    with pytest.raises(ConfigError, match=r"optim\.lr: Input should be a finite number"):
        tk.train("mlp", digits, lr=float("nan"))


def test_bad_command_line_is_one_line(cli: CliRunner) -> None:
    line = fails(cli, "train", "--epochs", "x")
    assert "argument --epochs: invalid int value: 'x' (see transferkit train --help)" in line
    assert "unrecognized arguments: --nope" in fails(cli, "train", "--nope")


# ---------------------------------------------------------------- method and names, up front


def test_method_of_another_command_is_refused_before_training(
    cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    line = fails(cli, "distill", "--teacher", "mlp", "--method", "dann", "--out", out)
    assert line.endswith("distill: method 'dann' needs target, which this run does not have "
                         "(use `transferkit adapt`); train on a domain pair such as "
                         "digits->digits_shifted")
    assert not out.exists()  # the teacher did not train
    assert "adapt needs a domain pair such as 'mnist->usps', got 'digits'" in fails(
        cli, "adapt", "--data", "digits", "--out", out)
    assert "train: method 'kd' needs teacher, which this run does not have (use `transferkit " \
        "distill (or adapt --teacher)`)" in fails(cli, "train", "--method", "kd", "--out", out)
    assert "distill: method 'kd' needs teacher" not in fails(
        cli, "distill", "--teacher", "mlp", "--method", "kd+nope", "--out", out)
    assert "unknown model 'nope'" in fails(cli, "distill", "--teacher", "mlp", "--model", "nope",
                                           "--out", out)
    assert "unknown dataset 'nope'" in fails(cli, "distill", "--teacher", "mlp", "--data", "nope",
                                             "--out", out)
    assert not out.exists()


# ---------------------------------------------------------------- spellings


CANONICAL = """
model: {name: mlp, options: {widths: [16]}}
train: {epochs: 3, batch_size: 16, optim: {name: adam, lr: 0.05, weight_decay: 0.001}}
"""


@pytest.mark.parametrize(
    "text",
    [
        "model: {name: mlp, widths: [16]}\nepochs: 3\nbatch_size: 16\noptimizer: adam\n"
        "lr: 0.05\nweight_decay: 0.001\n",
        "model: {name: mlp, options: {widths: [16]}}\n"
        "train: {epochs: 3, batch-size: 16, lr: 0.05, weight-decay: 0.001, optimizer: adam}\n",
        "model: {name: mlp, widths: [16]}\noptim: adam\ntrain: {epochs: 3, batch_size: 16}\n"
        "lr: 5e-2\nweight-decay: 1e-3\n",
        "model: {name: mlp, options: {widths: [16]}}\n"
        "train: {epochs: 3, batch_size: 16, optim: adam, lr: 0.05}\nweight_decay: 0.001\n",
        "model: {name: mlp, widths: [16]}\nepochs: 3\n"
        "train: {batch_size: 16, optim: {optimizer: adam, lr: 0.05}}\nweight_decay: 0.001\n",
        "model: {name: mlp, widths: [16]}\nbatch-size: 16\nlr: 0.05\nweight_decay: 0.001\n"
        "train: {epochs: 3, optim: {name: adam, lr: 0.05}}\n",  # the same value twice is fine
        "model: {name: mlp, widths: [16]}\nepochs: 3\nbatch_size: 16.0\noptimizer: adam\n"
        "lr: 0.05\nweight_decay: 0.001\ntrain: {batch-size: 16}\nteacher_train: null\n",
    ],
)
def test_natural_spellings_mean_the_canonical_settings(tmp_path: Path, text: str) -> None:
    out = tmp_path / "run"
    want = settings("train", "--config", write(tmp_path, CANONICAL, "canonical.yaml"),
                    "--out", out)
    got = settings("train", "--config", write(tmp_path, text), "--out", out)
    assert got == want
    assert got.train.optim.name == "adam" and got.train.epochs == 3


def test_model_given_by_name(tmp_path: Path) -> None:
    cfg = settings("distill", "--config", write(tmp_path, "model: seed-mlp\nteacher: mlp\n"),
                   "--out", tmp_path / "run")
    assert cfg.model.name == "seed-mlp" and cfg.model.options == {}
    assert cfg.teacher is not None and cfg.teacher.name == "mlp"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: {learning_rate: 0.01}",
         "unknown field 'learning_rate' in train; did you mean 'lr'?"),
        ("batchsize: 3",
         "unknown field 'batchsize' at the top level; did you mean 'batch_size' or"),
        ("train: {optim: {learning-rate: 1}}",
         "unknown field 'learning-rate' in train.optim; did you mean 'lr'?"),
        ("dataset: mnist", "unknown field 'dataset' at the top level; did you mean 'data'?"),
        ("zzz: 1", "unknown field 'zzz' at the top level; valid fields: amp, augment, batch_size,"),
        ("lr: 0.1\ntrain: {lr: 0.2}",
         "'lr' and 'train.lr' both set train.optim.lr, to 0.1 and 0.2; keep one"),
        ("optimizer: adam\ntrain: {optim: {name: sgd}}",
         "'optimizer' and 'train.optim.name' both set train.optim.name, to 'adam' and 'sgd'"),
        ("batch-size: 8\nbatch_size: 16", "'batch-size' and 'batch_size' both set"),
        ("amp: 1\ntrain: {amp: true}", "'amp' and 'train.amp' both set train.amp, to 1 and True"),
        ("model: {name: mlp, widths: [8], options: {widths: [16]}}",
         "model option 'widths' is given twice, with [8] and [16]"),
        ("1: 2", "field names are text, got 1 at the top level"),
    ],
)
def test_unknown_or_conflicting_keys(
    cli: CliRunner, tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text + "\n")
    line = fails(cli, "train", "--config", path, "--out", tmp_path / "run")
    assert f"config {path}: {expected}" in line


# ---------------------------------------------------------------- resume with only --out


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_needs_only_the_run_directory(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli("train", *TINY_RUN, "--epochs", "1", "--out", out)
    assert code == 0, err
    code, _, err = cli("train", "--out", out, "--resume", "--epochs", "2")
    assert code == 0, err
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["model"]["options"] == {"widths": [16]}
    assert saved["train"]["steps_per_epoch"] == 3 and saved["train"]["device"] == "cpu"
    # a --config file overrides the recorded settings, flags override both
    extend = write(tmp_path, "epochs: 3\n")
    code, _, err = cli("train", "--config", extend, "--out", out, "--resume", "--no-progress")
    assert code == 0, err
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3]
    assert "settings differ (train.optim.lr)" in fails(cli, "train", "--out", out, "--resume",
                                                       "--lr", "0.5")
    line = fails(cli, "adapt", "--out", out, "--resume")
    assert f"{out} holds a 'train' run, not a 'adapt' run" in line


def test_resume_a_distillation_with_only_the_run_directory(
    cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, err = cli("distill", "--teacher", "mlp", "--teacher-opt", "widths=[16]",
                       "--teacher-epochs", "1", "--data", "digits", "--model-opt", "widths=[8]",
                       "--epochs", "1", *CLI_FAST, "--out", out)
    assert code == 0, err
    teacher = (out / "teacher" / "model.pt").read_bytes()
    code, _, err = cli("distill", "--out", out, "--resume", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    assert (out / "teacher" / "model.pt").read_bytes() == teacher  # reused, not retrained


def test_resume_without_out(cli: CliRunner) -> None:
    assert "--resume needs --out" in fails(cli, "train", "--resume")


# ---------------------------------------------------------------- import time


def test_import_does_not_load_heavy_optional_modules(sub_env: dict) -> None:
    code = ("import sys, transferkit\n"
            "print(' '.join(m for m in ('sklearn', 'scipy', 'rich') if m in sys.modules))")
    proc = run_process([sys.executable, "-c", code], sub_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    listing = run_process([*console_script(), "list"], sub_env, timeout=120)
    assert listing.returncode == 0 and "digits_shifted" in listing.stdout


def test_data_dir_variable_that_is_a_file(cli, tmp_path: Path, monkeypatch) -> None:
    """``TRANSFERKIT_DATA_DIR`` pointing at a file used to be ignored silently."""
    path = tmp_path / "datasets.tar"
    path.write_text("not a folder")
    monkeypatch.setenv("TRANSFERKIT_DATA_DIR", str(path))
    code, _, err = cli("train", "--data", "mnist", "--epochs", "1", "--device", "cpu",
                       "--no-progress", "--out", tmp_path / "run")
    assert code == 2
    line = error_line(err)
    assert "TRANSFERKIT_DATA_DIR" in line and "is a file, not a folder" in line
