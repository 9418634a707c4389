"""Every CLI command end to end on tiny budgets (in process), plus the real console script."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import transferkit as tk
from conftest import CLI_FAST, CliRunner, console_script, run_process
from transferkit.cli import main as cli_main
from transferkit.data import DATASETS, PAIRS, DomainPair
from transferkit.engine.checkpoint import load_torch
from transferkit.losses import dann_warmup
from transferkit.methods import METHODS
from transferkit.models import MODELS, mlp

RUN_FILES = [".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt", "summary.json"]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``transferkit train`` of a 2-epoch mlp on digits (a teacher for the distill tests)."""
    out = tmp_path_factory.mktemp("cli") / "teacher"
    code = cli_main(["train", "--data", "digits", "--model", "mlp", "--model-opt", "widths=[16]",
                     "--epochs", "2", *CLI_FAST, "--out", str(out)])
    assert code == 0
    return out


def test_list(cli: CliRunner) -> None:
    code, out, err = cli("list")
    assert code == 0 and err == ""
    for section, registry in (("datasets", DATASETS), ("pairs", PAIRS), ("models", MODELS),
                              ("methods", METHODS)):
        assert f"{section}:" in out
        for name in registry:
            assert f"  {name} " in out, name
    assert "digits->digits_shifted" in out and "dann" in out and "kd" in out
    from transferkit.validators import VALIDATORS

    assert "validators (adapt --select):" in out
    assert all(f"  {name} " in out for name in VALIDATORS)


def test_list_name_explains_one(cli: CliRunner) -> None:
    """`transferkit list NAME`: the method's options with their real defaults and its
    module's formula; models, datasets and validators too; a typo gets close names."""
    from transferkit.methods.dann import DANN

    code, out, err = cli("list", "dann")
    assert code == 0 and err == ""
    made = DANN()  # the defaults, read from an instance rather than from the signature
    assert f"trade_off={made.trade_off!r}" in out and f"gamma={made.gamma!r}" in out, out
    assert "lambda(p) = trade_off" in out  # dann.py's docstring: the warm-up formula
    for name, kind in (("lenet", "model"), ("usps", "dataset"), ("mnist->usps", "pair"),
                       ("snd", "validator")):
        code, out, _ = cli("list", name)
        assert code == 0 and out.startswith(f"{name} ({kind}"), out
    code, _, err = cli("list", "dan_")
    assert code == 2 and "did you mean dan, dann" in err, err
    code, _, err = cli("list", "DANN")
    assert code == 2 and "did you mean dann?" in err, err
    code, out, _ = cli("list", "oracle")  # a --select choice that is not a validator
    assert code == 0 and "reads target labels" in out, out
    code, _, err = cli("list", "x" * 5000)
    assert code == 2 and len(err) < 400, err  # the name is cut short, not echoed whole


def test_a_closed_pipe_is_not_a_traceback(sub_env: dict) -> None:
    """`transferkit list dann | head -1`: the reader leaves early; exit 141, nothing on stderr."""
    import subprocess

    proc = subprocess.Popen([*console_script(), "list", "dann"], env=sub_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_train_writes_the_run_directory(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, _ = cli("train", "--data", "digits", "--model", "mlp", "--model-opt",
                          "widths=[16]", "--epochs", "2", *CLI_FAST, "--out", out)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    assert f"run directory: {out}" in stdout and "test accuracy" in stdout
    cfg = config(out)
    assert cfg["command"] == "train" and cfg["data"] == "digits" and cfg["method"] == "supervised"
    assert cfg["model"] == {"name": "mlp", "options": {"widths": [16]}}
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["steps_per_epoch"] == 3
    metrics = rows(out)
    assert [r["epoch"] for r in metrics] == [1, 2] and metrics[-1]["step"] == 6
    assert summary(out)["final"] == {"test": metrics[-1]["eval"]["test"]["accuracy"]}
    assert load_torch(out / "checkpoint.pt")["epoch"] == 2
    model = tk.load_model(out)
    assert model.features[1].out_features == 16


def test_evaluate_prints_the_summary_accuracy(cli: CliRunner, cli_run: Path) -> None:
    code, out, _ = cli("evaluate", cli_run, "--data", "digits", "--device", "cpu", "--json")
    assert code == 0
    scores = json.loads(out)
    assert scores["test"]["accuracy"] == summary(cli_run)["final"]["test"]
    assert scores["test"]["n"] == 450
    code, out, _ = cli("evaluate", cli_run / "model.pt", "--data", "digits->digits_shifted",
                       "--device", "cpu", "--json")
    assert code == 0
    scored = json.loads(out)  # the digits model is fed the pair on its own scale, and told
    assert set(scored) == {"source_test", "target_test", "notes"}
    assert "converted" in scored["notes"][0], scored["notes"]
    # without --json: one line per split, the accuracy as a percentage
    code, out, _ = cli("evaluate", cli_run, "--data", "digits", "--device", "cpu")
    assert code == 0
    test = scores["test"]
    assert out == (f"test: accuracy {100 * test['accuracy']:.2f}% "
                   f"(loss {test['loss']:.4f}, 450 samples)\n")


def test_distill_from_a_teacher_run(cli: CliRunner, cli_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    code, stdout, _ = cli("distill", "--teacher", cli_run, "--data", "digits", "--model-opt",
                          "widths=[8]", "--method", "kd", "--opt", "temperature=2", "--epochs",
                          "1", *CLI_FAST, "--out", out)
    assert code == 0, stdout
    cfg = config(out)
    assert cfg["command"] == "distill" and cfg["method_options"] == {"temperature": 2}
    assert cfg["teacher_parameters"] == sum(p.numel() for p in tk.load_model(cli_run).parameters())
    assert set(rows(out)[0]["train"]) == {"kd", "kd.ce", "loss"}
    assert summary(out)["parameters"] == 64 * 8 + 8 + 8 * 10 + 10
    assert not (out / "teacher").exists()


def test_distill_trains_a_named_teacher(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["distill", "--teacher", "mlp", "--teacher-opt", "widths=[16]", "--teacher-epochs",
            "1", "--data", "digits", "--model-opt", "widths=[8]", "--method", "l2", "--epochs",
            "2", "--seed", "3", *CLI_FAST, "--out", out]
    code, _, err = cli(*argv)
    assert code == 0, err
    teacher = out / "teacher"
    assert sorted(p.name for p in teacher.iterdir()) == RUN_FILES
    teacher_cfg = config(teacher)
    assert teacher_cfg["model"] == {"name": "mlp", "options": {"widths": [16]}}
    # --teacher-epochs sets the teacher's epochs; it keeps the run's other settings
    train = teacher_cfg["train"]
    assert train["epochs"] == 1 and train["seed"] == 3 and train["device"] == "cpu"
    assert train["progress"] is False and train["steps_per_epoch"] == 3
    assert len(rows(teacher)) == 1 and len(rows(out)) == 2
    assert set(rows(out)[0]["train"]) == {"l2", "loss"}

    # resuming reuses the finished teacher
    before = (teacher / "model.pt").read_bytes(), (teacher / "model.pt").stat().st_mtime_ns
    code, _, err = cli(*argv, "--resume")
    assert code == 0, err
    assert ((teacher / "model.pt").read_bytes(), (teacher / "model.pt").stat().st_mtime_ns) \
        == before


def test_distill_on_a_pair_uses_unlabelled_target_inputs(
    cli: CliRunner, cli_run: Path, tmp_path: Path, digits_pair: DomainPair
) -> None:
    out = tmp_path / "run"
    code, _, err = cli("distill", "--teacher", cli_run, "--data", "digits->digits_shifted",
                       "--model-opt", "widths=[8]", "--epochs", "1", *CLI_FAST, "--out", out)
    assert code == 0, err
    assert set(rows(out)[0]["train"]) == {"kd", "loss"}  # no labels: no cross-entropy
    assert set(summary(out)["final"]) == {"source_test", "target_test"}

    # The teacher sees target training rows only.
    seen: list[torch.Tensor] = []

    class Recording(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(digits_pair.input_shape, 10, widths=[8])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach().clone())
            return self.net(x)

    tk.distill(Recording(), "mlp", digits_pair, student_options={"widths": [8]}, epochs=1,
               steps_per_epoch=3, batch_size=32, progress=False, device="cpu")
    target = {row.numpy().tobytes() for row in digits_pair.target.train.x}
    source = {row.numpy().tobytes() for row in digits_pair.source.train.x}
    rows_seen = [row.numpy().tobytes() for batch in seen for row in batch]
    tests = {row.numpy().tobytes() for d in (digits_pair.source, digits_pair.target)
             for row in d.test.x}  # the teacher's accuracy, measured and shown before training
    rows_seen = [r for r in rows_seen if r not in tests]
    # the class-count probe and the layer-shape probe (2 rows each), then 3 steps of 32
    assert len(rows_seen) == 2 + 2 + 3 * 32
    assert all(r in target for r in rows_seen)
    assert not any(r in source for r in rows_seen)


def test_adapt_dann(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("adapt", "--data", "digits->digits_shifted", "--model", "mlp",
                            "--model-opt", "widths=[16]", "--method", "dann", "--opt",
                            "hidden=16", "--opt", "gamma=5", "--epochs", "2", *CLI_FAST,
                            "--out", out)
    assert code == 0, err
    assert "target_test accuracy" in stdout
    cfg = config(out)
    assert cfg["method_options"] == {"hidden": 16, "gamma": 5}
    assert cfg["train"]["optim"]["gamma"] == 0.1  # the step schedule's gamma is untouched
    metrics = rows(out)
    assert set(metrics[-1]["train"]) == {"supervised.ce", "dann.domain", "loss"}
    assert all(math.isfinite(v) for r in metrics for v in r["train"].values())
    # the last step of 6 has progress 5/6; DANN's own gamma=5 shapes the warm-up
    assert metrics[-1]["dann.grl_coeff"] == pytest.approx(dann_warmup(5 / 6, 5.0))
    assert set(summary(out)["final"]) == {"source_test", "target_test"}
    weights = load_torch(out / "checkpoint.pt")["objective"]
    assert weights["methods.dann.discriminator.net.0.weight"].shape == (16, 16)


def test_config_file_with_flags_overriding_it(cli: CliRunner, tmp_path: Path) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({
        "command": "train",
        "data": "digits",
        "model": {"name": "mlp", "options": {"widths": [12]}},
        "train": {"epochs": 3, "batch_size": 16, "steps_per_epoch": 2, "device": "cpu",
                  "progress": False, "optim": {"name": "adam", "lr": 0.05}},
    }))
    out = tmp_path / "run"
    code, _, err = cli("train", "--config", run_yaml, "--epochs", "1", "--lr", "0.02",
                       "--model-opt", "dropout=0.1", "--out", out)
    assert code == 0, err
    cfg = config(out)
    assert cfg["train"]["epochs"] == 1  # flag
    assert cfg["train"]["batch_size"] == 16 and cfg["train"]["steps_per_epoch"] == 2  # file
    assert cfg["train"]["optim"]["name"] == "adam" and cfg["train"]["optim"]["lr"] == 0.02
    assert cfg["model"] == {"name": "mlp", "options": {"widths": [12], "dropout": 0.1}}
    assert [r["step"] for r in rows(out)] == [2]
    assert summary(out)["parameters"] == 64 * 12 + 12 + 12 * 10 + 10


def test_a_runs_own_config_repeats_it(cli: CliRunner, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = cli("adapt", "--data", "digits->digits_shifted", "--model-opt",
                       "widths=[16]", "--method", "dann", "--opt", "trade_off=0.5",
                       "--epochs", "2", "--seed", "3", *CLI_FAST, "--out", first)
    assert code == 0, err
    assert "methods" in config(first) and "source_holdout_rows" in config(first)  # records
    code, _, err = cli("adapt", "--config", first / "config.yaml", "--out", second)
    assert code == 0, err
    a, b = config(first), config(second)
    a["train"].pop("progress"), b["train"].pop("progress")
    assert a == b
    assert summary(second)["final"] == summary(first)["final"]  # same seed, same run
    code, _, err = cli("train", "--config", first / "config.yaml", "--out", tmp_path / "x")
    assert code == 2 and "record of a 'adapt' run, not a 'train' run" in err, err
    edited = tmp_path / "edited.yaml"  # a copied record with a misspelt field is not silent
    edited.write_text((first / "config.yaml").read_text() + "epochz: 1\n")
    code, _, err = cli("adapt", "--config", edited, "--out", tmp_path / "y")
    assert code == 2 and "epochz" in err and "epochs" in err, err
    record = config(first)
    record["method"] = "mcc"  # an edit that disagrees with the recorded methods
    edited.write_text(yaml.safe_dump(record))
    code, _, err = cli("adapt", "--config", edited, "--out", tmp_path / "z")
    assert code == 2 and "does not build the methods it lists" in err, err
    del record["method"]
    edited.write_text(yaml.safe_dump(record))
    code, _, err = cli("adapt", "--config", edited, "--out", tmp_path / "z")
    assert code == 2 and "but no method; write `method: dann`" in err, err


def test_every_record_is_a_config(cli: CliRunner, tmp_path: Path) -> None:
    """Each command's config.yaml (teacher file, source-free start) is read back as settings:
    every key it records is a setting or a known record."""
    teacher, student, free = tmp_path / "teacher", tmp_path / "student", tmp_path / "free"
    small = ["--model-opt", "widths=[16]", "--epochs", "1", *CLI_FAST]
    runs = [("train", ["--data", "digits", *small, "--out", teacher]),
            ("distill", ["--data", "digits", "--teacher", teacher, *small, "--out", student]),
            ("adapt", ["--data", "digits_shifted", "--model", teacher, "--method", "shot",
                       "--epochs", "1", *CLI_FAST, "--out", free])]
    for command, flags in runs:
        code, _, err = cli(command, *flags)
        assert code == 0, err
        again = tmp_path / f"{command}-again"
        code, _, err = cli(command, "--config", flags[-1] / "config.yaml", "--out", again)
        assert code == 0, (command, err)
        assert config(again)["method"] == config(flags[-1])["method"]


def test_demo(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, stdout, _ = cli("demo", "--epochs-scale", "0.05", "--out", out)
    assert code == 0
    assert "transferkit demo" in stdout and "source-only" in stdout and "dann" in stdout
    result = json.loads((out / "summary.json").read_text())
    assert len(result["rows"]) == 6
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["parameters"] > 0 for r in result["rows"])
    assert (out / "demo.md").read_text().count("\n| ") == 6  # a line per row after the header
    for sub in ("teacher", "student-alone", "student-l2", "student-kd", "source-only", "dann"):
        assert (out / sub / "model.pt").is_file(), sub


def test_console_script_train(tmp_path: Path, sub_env: dict) -> None:
    out = tmp_path / "run"
    proc = run_process([*console_script(), "train", "--data", "digits", "--model-opt",
                        "widths=[16]", "--epochs", "2", *CLI_FAST, "--out", str(out)], sub_env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"run directory: {out}" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    assert [r["epoch"] for r in rows(out)] == [1, 2]


def test_every_flag_says_what_it_does() -> None:
    """`transferkit COMMAND --help` explains every option, and a training flag's help gives
    the default the config really has."""
    import argparse

    from transferkit.cli import build_parser
    from transferkit.config import TrainConfig

    [commands] = [a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        silent = [a.option_strings or a.dest for a in command._actions if not a.help]
        assert not silent, (name, silent)
    flags = {a.dest: a.help for a in commands.choices["adapt"]._actions}
    defaults = TrainConfig()
    assert flags["batch_size"].endswith(f"default {defaults.batch_size}")
    assert flags["select"].endswith(f"default {defaults.select}")
    assert flags["lr"].endswith(f"default {defaults.optim.lr}")
    assert "entropy" in flags["select"] and "oracle" in flags["select"]


def test_adapt_select_trains_its_named_teacher_with_last(cli: CliRunner, tmp_path: Path) -> None:
    """--select is the student's choice: a teacher trained by the run keeps its last epoch."""
    out = tmp_path / "run"
    code, _, err = cli("adapt", "--data", "digits->digits_shifted", "--method", "dann+kd",
                       "--teacher", "mlp", "--teacher-opt", "widths=[8]", "--model-opt",
                       "widths=[16]", "--select", "entropy", "--epochs", "2", *CLI_FAST,
                       "--out", out)
    assert code == 0, err
    assert config(out / "teacher")["train"]["select"] == "last"
    assert config(out)["train"]["select"] == "entropy"


def test_adapt_refuses_a_teacher_no_method_reads(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli("adapt", "--data", "digits->digits_shifted", "--method", "dann",
                       "--teacher", "mlp", "--epochs", "1", *CLI_FAST, "--out", out)
    assert code == 2 and "no method in dann reads a teacher" in err and "dann+kd" in err, err
    assert not (out / "teacher").exists()  # refused before a teacher was trained for nothing
    with pytest.raises(tk.TransferkitError, match="reads a teacher"):
        tk.adapt("mlp", "digits->digits_shifted", method="coral", teacher=mlp((1, 8, 8), 10),
                 epochs=1, steps_per_epoch=1, progress=False, device="cpu")


def test_distill_refuses_methods_that_read_no_teacher(cli: CliRunner, tmp_path: Path) -> None:
    """distill with adaptation methods alone used to load the teacher and ignore it."""
    out = tmp_path / "run"
    code, _, err = cli("distill", "--data", "digits->digits_shifted", "--method", "dann",
                       "--teacher", "mlp", "--epochs", "1", *CLI_FAST, "--out", out)
    assert code == 2 and "distill: no method in dann reads a teacher" in err, err
    assert "dann+kd" in err and not (out / "teacher").exists()  # no teacher trained for it
    with pytest.raises(tk.TransferkitError, match="no method in supervised reads a teacher"):
        tk.distill(mlp((1, 8, 8), 10), "mlp", "digits", method="supervised", epochs=1,
                   progress=False, device="cpu")


def test_an_unfinished_run_or_its_checkpoint_says_what_to_do(cli: CliRunner,
                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, err = cli("train", "--data", "digits", "--model-opt", "widths=[8]", "--epochs", "1",
                       *CLI_FAST, "--out", run)
    assert code == 0, err
    code, _, err = cli("evaluate", run / "checkpoint.pt", "--data", "digits")
    assert code == 2 and "is a training checkpoint" in err and "model.pt" in err, err
    (run / "model.pt").unlink()  # as a run killed before its end leaves it
    code, _, err = cli("evaluate", run, "--data", "digits")
    assert code == 2 and "has not finished" in err and "--resume" in err, err


def test_metrics_are_strict_json(tmp_path: Path) -> None:
    """adda's first stage has no domain accuracy (NaN in memory): the file says null."""
    run = tmp_path / "adda"
    tk.adapt("mlp", "digits->digits_shifted", method="adda", model_options={"widths": [16]},
             epochs=2, steps_per_epoch=3, batch_size=32, device="cpu", progress=False, out=run)

    def refuse(token: str) -> float:
        raise ValueError(f"metrics.jsonl holds {token}")

    parsed = [json.loads(line, parse_constant=refuse)
              for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("adda.domain_acc", 0.0) is None for row in parsed), parsed[0]


@pytest.mark.parametrize("scale", ["0", "-1", "nan", "inf", "1e9"])
def test_demo_refuses_an_absurd_scale(cli: CliRunner, scale: str, tmp_path: Path) -> None:
    code, _, err = cli("demo", f"--epochs-scale={scale}", "--out", tmp_path / "demo")
    assert code == 2 and "--epochs-scale must be a number above 0" in err, err
    assert not (tmp_path / "demo").exists()


def test_distill_killed_while_training_its_teacher(cli: CliRunner, tmp_path: Path) -> None:
    """A kill during the on-the-fly teacher leaves OUT/teacher but no OUT/config.yaml:
    --resume alone cannot know the teacher, and says to repeat the whole command."""
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", "digits", "--model-opt", "widths=[8]", "--epochs", "1",
                       *CLI_FAST, "--out", out / "teacher")
    assert code == 0, err
    code, _, err = cli("distill", "--out", out, "--resume", *CLI_FAST)
    assert code == 2 and "stopped while training its teacher" in err, err


def test_a_missing_teacher_path_is_not_called_an_unknown_model(cli: CliRunner,
                                                               tmp_path: Path) -> None:
    code, _, err = cli("distill", "--data", "digits", "--teacher", f"{tmp_path}/nothere/",
                       *CLI_FAST, "--out", tmp_path / "run")
    assert code == 2 and "not found" in err and "unknown model" not in err, err


def test_teacher_training_flags_with_a_saved_teacher_are_refused(cli: CliRunner,
                                                                 cli_run: Path,
                                                                 tmp_path: Path) -> None:
    for flags in (["--teacher-epochs", "5"], ["--teacher-opt", "widths=[99]"]):
        code, _, err = cli("distill", "--data", "digits", "--teacher", cli_run, *flags,
                           *CLI_FAST, "--out", tmp_path / "run")
        assert code == 2 and f"{flags[0]} shape a teacher trained by this run" in err, err
