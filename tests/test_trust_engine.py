"""Trust in the engine: loading never runs code, runs never mix, nothing fails silently.

Each test tries one fault a hostile tester or an unlucky user met (issue 5) and checks the
one-line refusal and that nothing saved is lost; docs/reliability.md lists them.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

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
from transferkit import files
from transferkit.data import Dataset
from transferkit.engine.checkpoint import load_torch, save_torch
from transferkit.engine.progress import ProgressBar
from transferkit.errors import (
    CheckpointError,
    ConfigError,
    DivergenceError,
    RunDirError,
    TransferkitError,
)
from transferkit.files import RunLock
from transferkit.models import mlp
from transferkit.models.base import weights_sha256

SAME = ["--data", "digits", "--model", "mlp", "--model-opt", "widths=[16]", "--epochs", "2",
        *CLI_FAST]


def fails(cli: CliRunner, *argv: str | Path) -> str:
    code, _, err = cli(*argv)
    assert code == 2, err
    return error_line(err)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- 1. loading never runs code


class Payload:
    """Unpickling this creates ``path``: what a crafted model.pt could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def poisoned(trained_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a finished run whose model.pt and checkpoint.pt carry the payload."""
    run = Path(shutil.copytree(trained_run, tmp_path / "poisoned"))
    marker = tmp_path / "pwned"
    for name in ("model.pt", "checkpoint.pt"):
        state = load_torch(run / name)
        state["extra"] = Payload(marker)
        torch.save(state, run / name)
    return run, marker


@pytest.mark.parametrize("path", ["evaluate", "teacher", "resume", "load_run", "load_model"])
def test_a_crafted_pickle_never_runs(
    cli: CliRunner, poisoned: tuple[Path, Path], tmp_path: Path, path: str
) -> None:
    run, marker = poisoned
    if path == "evaluate":
        line = fails(cli, "evaluate", run, "--data", "digits")
    elif path == "teacher":
        line = fails(cli, "distill", "--teacher", run, "--data", "digits", "--model-opt",
                     "widths=[8]", "--epochs", "1", *CLI_FAST, "--out", tmp_path / "student")
    elif path == "resume":
        line = fails(cli, "train", *SAME, "--out", run, "--resume")
    else:
        with pytest.raises(CheckpointError) as caught:
            (tk.load_run if path == "load_run" else tk.load_model)(run)
        line = str(caught.value)
        assert "\n" not in line
    assert "refused to load" in line and "could run code" in line
    assert not marker.exists()


@pytest.mark.parametrize("verb", ["evaluate", "predict", "export", "teacher", "load_model"])
def test_a_model_file_naming_a_factory_never_calls_it(
    cli: CliRunner, trained_run: Path, tmp_path: Path, verb: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``spec: {name: "os:system", options: {command: ...}}`` in a model.pt would run a shell
    command when the network is rebuilt; it is refused unless the user trusts the file."""
    run = Path(shutil.copytree(trained_run, tmp_path / "crafted"))
    marker = tmp_path / "pwned"
    state = load_torch(run / "model.pt")
    state["spec"] = {"name": "os:system", "options": {"command": f"touch {marker}"}}
    torch.save(state, run / "model.pt")
    monkeypatch.delenv("TRANSFERKIT_TRUST_CODE", raising=False)
    if verb == "load_model":
        with pytest.raises(ConfigError) as caught:
            tk.load_model(run)
        line = str(caught.value)
    elif verb == "teacher":
        line = fails(cli, "distill", "--teacher", run, "--data", "digits", "--model-opt",
                     "widths=[8]", "--epochs", "1", *CLI_FAST, "--out", tmp_path / "student")
    else:
        extra = ["--out", tmp_path / "p.csv"] if verb == "predict" else []
        line = fails(cli, verb, run, "--data", "digits", *extra)
    assert "names the model factory 'os:system'" in line and "TRANSFERKIT_TRUST_CODE=1" in line
    assert not marker.exists()
    monkeypatch.setenv("TRANSFERKIT_TRUST_CODE", "1")  # the user's word: it is then called
    with pytest.raises(TransferkitError):
        tk.load_model(run)
    assert marker.exists()


def test_a_bare_tensor_model_file_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.zeros(3), path)
    line = fails(cli, "evaluate", path, "--data", "digits")
    assert "holds a Tensor, not a transferkit model" in line


@pytest.mark.parametrize("field, value", [
    ("rank_rngs", "not states"), ("epoch", "two"), ("history", [1, 2]), ("step", None),
    ("optimizer", {"state": 3}), ("initial_loss", "low"), ("objective", {"x": 1}),
])
def test_a_crafted_checkpoint_is_one_line(cli: CliRunner, trained_run: Path, tmp_path: Path,
                                          field: str, value: object) -> None:
    """Loadable with weights_only, the right settings, but fields of the wrong kind."""
    run = Path(shutil.copytree(trained_run, tmp_path / "crafted"))
    state = load_torch(run / "checkpoint.pt")
    state[field] = value
    save_torch(state, run / "checkpoint.pt")
    before = snapshot(run)
    line = fails(cli, "train", *SAME[:-len(CLI_FAST)], "--epochs", "3", *CLI_FAST, "--out", run,
                 "--resume")
    assert f"checkpoint {run / 'checkpoint.pt'}" in line
    assert snapshot(run) == before


# ---------------------------------------------------------------- 3. the right teacher


def test_distill_records_and_prints_its_teacher(cli: CliRunner, trained_run: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "student"
    argv = ["distill", "--teacher", trained_run, "--data", "digits", "--model-opt", "widths=[8]",
            "--epochs", "1", "--device", "cpu", "--batch-size", "32", "--steps-per-epoch", "3"]
    code, stdout, err = cli(*argv, "--out", out)  # progress on: the teacher line is printed
    assert code == 0, err
    teacher_summary = json.loads((trained_run / "summary.json").read_text())
    accuracy = teacher_summary["final"]["test"]
    assert f"teacher {trained_run}: test accuracy {accuracy:.2%}" in err
    assert f"(teacher {accuracy:.2%})" in stdout  # beside the student's, at the end
    config = yaml.safe_load((out / "config.yaml").read_text())
    summary = json.loads((out / "summary.json").read_text())
    for record in (config, summary):
        assert record["teacher"]["source"] == str(trained_run)
        assert record["teacher"]["sha256"] == weights_sha256(tk.load_model(trained_run))
        assert record["teacher_accuracy"]["test"] == pytest.approx(accuracy)


def test_resume_with_another_teacher_is_refused(cli: CliRunner, trained_run: Path,
                                                tmp_path: Path) -> None:
    other = tmp_path / "other-teacher"
    tk.train("mlp", "digits", model_options=TINY, out=other, **{**FAST, "seed": 1})
    out = tmp_path / "student"
    base = ["distill", "--data", "digits", "--model-opt", "widths=[8]", "--epochs", "2",
            *CLI_FAST, "--out", out]
    assert cli(*base, "--teacher", trained_run, "--epochs", "1")[0] == 0
    before = snapshot(out)
    line = fails(cli, *base, "--teacher", other, "--resume")
    assert "it distils teacher" in line and str(other) in line
    assert snapshot(out) == before
    assert cli(*base, "--teacher", trained_run, "--resume")[0] == 0  # the same one continues


def test_a_named_teacher_of_another_architecture_is_not_reused(cli: CliRunner,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["distill", "--data", "digits", "--model-opt", "widths=[8]", "--epochs", "1",
            *CLI_FAST, "--out", out]
    assert cli(*base, "--teacher", "mlp", "--teacher-opt", "widths=[16]")[0] == 0
    teacher = snapshot(out / "teacher")
    shutil.rmtree(out / "student", ignore_errors=True)
    for name in ("checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt", "summary.json"):
        (out / name).unlink()
    line = fails(cli, *base, "--teacher", "small-cnn")
    assert "holds another teacher" in line and "settings differ (model" in line
    assert snapshot(out / "teacher") == teacher


# ---------------------------------------------------------------- 4. runs never mix


def test_two_processes_racing_for_one_run_directory(sub_env: dict, tmp_path: Path) -> None:
    """A second run into a directory that a running process holds is refused at once."""
    out = tmp_path / "run"
    argv = [*console_script(), "train", "--data", "digits", "--model-opt", "widths=[16]",
            "--epochs", "3", "--device", "cpu", "--no-progress", "--batch-size", "32",
            "--steps-per-epoch", "400", "--out", str(out)]
    first = subprocess.Popen(argv, env=sub_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists() or not (out / ".lock").read_text():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(RunDirError) as caught:  # this process is the second runner
            tk.train("mlp", "digits", model_options=TINY, out=out, **FAST)
    finally:
        _, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err
    assert f"in use by another transferkit run (pid {first.pid} on " in str(caught.value)
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3]  # the first run's rows only
    assert json.loads((out / "summary.json").read_text())["steps"] == 1200


def test_a_lock_left_by_a_killed_run_is_taken_over(sub_env: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [*console_script(), "train", "--data", "digits", "--model",
            f"{HELPERS}:random_probe", "--model-opt", f"path={tmp_path / 'probe'}",
            "--model-opt", "kill_at=10", "--epochs", "5", *CLI_FAST, "--out", str(out)]
    killed = run_process(argv, sub_env)  # SIGKILLs itself at its 10th step (epoch 4)
    assert killed.returncode == -signal.SIGKILL
    assert str(killed.args) and (out / ".lock").read_text().split()[0].isdigit()
    with RunLock(out):  # the dead owner's record stays, but its lock went with it
        pass
    resumed = run_process([*argv, "--resume"], sub_env)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3, 4, 5]


def test_one_process_cannot_run_twice_into_one_directory(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunDirError, match="in use by another"):
        tk.train("mlp", "digits", model_options=TINY, out=tmp_path, **FAST)


def test_metrics_follow_the_checkpoint_after_a_kill_before_it(digits: Dataset,
                                                              tmp_path: Path) -> None:
    """A run killed after its first metrics row but before its first checkpoint."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "lost": True}) + "\n")
    tk.train("mlp", digits, model_options=TINY, out=out, **{**FAST, "epochs": 2})
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    assert all("lost" not in r for r in rows(out))
    assert rows(out) == load_torch(out / "checkpoint.pt")["history"]


# ---------------------------------------------------------------- 6. divergence is an error


def test_a_huge_learning_rate_is_reported_as_divergence(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", "digits", "--model-opt", "widths=[16]", "--epochs",
                       "3", *CLI_FAST, "--lr", "1e6", "--out", out)
    assert code == 2
    line = error_line(err)
    assert ("diverged" in line or "non-finite" in line) and "learning rate" in line
    assert not (out / "model.pt").exists()


def test_a_run_refused_before_its_first_checkpoint_leaves_no_folder(cli: CliRunner,
                                                                    tmp_path: Path) -> None:
    """The folder the run made is removed with its lock and record; a folder the user made
    stays (emptied of what the run wrote)."""
    args = ("train", "--data", "digits", "--model-opt", "widths=[16]", "--epochs", "2",
            *CLI_FAST, "--lr", "1e6")
    fresh = tmp_path / "deep" / "run"
    code, _, err = cli(*args, "--out", fresh)
    assert code == 2
    assert "diverged" in error_line(err) or "non-finite" in error_line(err)
    assert not fresh.exists()
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    code, _, _ = cli(*args, "--out", mine)
    assert code == 2 and (mine / "notes").is_dir() and (mine / "config.yaml").is_file()
    ok = tmp_path / "ok"
    code, _, err = cli(*args[:-2], "--out", ok)  # the same run at a sane rate: nothing removed
    assert code == 0, err
    assert (ok / "model.pt").is_file() and (ok / ".lock").is_file()


def test_explosion_is_caught_before_it_is_checkpointed(digits: Dataset, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A finite loss that grows a million-fold: the last good checkpoint stays."""
    out = tmp_path / "run"
    settings = {**FAST, "epochs": 3, "lr": 0.05}
    from transferkit.engine import loop

    real = loop.Trainer._train_epoch

    def growing(self, epoch, bar):
        row = real(self, epoch, bar)
        if epoch == 1:
            row["train"]["loss"] = 1e6 * self.initial_loss
        return row

    monkeypatch.setattr(loop.Trainer, "_train_epoch", growing)
    with pytest.raises(DivergenceError, match=r"mean loss of epoch 2 is .* times the untrained"):
        tk.train("mlp", digits, model_options=TINY, out=out, **settings)
    assert load_torch(out / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in rows(out)] == [1]


def test_collapsed_predictions_are_an_error_unless_accepted(digits: Dataset, tmp_path: Path,
                                                            helpers_dir: Path) -> None:
    settings = {**FAST, "steps_per_epoch": 100, "lr": 1e-6}
    with pytest.raises(DivergenceError, match="predicts class 0 for 100% of test") as caught:
        tk.train(f"{HELPERS}:stuck", digits, out=tmp_path / "a", **settings)
    assert "\n" not in str(caught.value)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert "collapsed" in summary["warning"]  # saved, and says why not to use it
    accepted = tk.train(f"{HELPERS}:stuck", digits, out=tmp_path / "b",
                        check_divergence=False, **settings)
    assert "collapsed" in accepted.summary["warning"]


def test_a_healthy_run_raises_no_warning(digits: Dataset) -> None:
    result = tk.train("mlp", digits, model_options=TINY, **{**FAST, "steps_per_epoch": 100})
    assert "warning" not in result.summary and result.summary["final"]["test"] > 0.5


# ---------------------------------------------------------------- 7. the user's module


def test_distill_gives_the_teacher_back_as_it_came(digits: Dataset) -> None:
    teacher = mlp(digits.input_shape, 10, widths=[16])
    teacher.train()
    teacher.head.bias.requires_grad_(False)  # the user's own choice, kept
    tk.distill(teacher, "mlp", digits, student_options={"widths": [8]}, **FAST)
    assert teacher.training
    assert [p.requires_grad for p in teacher.parameters()] == [True, True, True, False]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    tk.adapt(teacher, "digits->digits_shifted", **FAST)  # trains the same module in place
    assert not torch.equal(before["features.1.weight"], teacher.state_dict()["features.1.weight"])


def test_distill_gives_back_every_submodule_mode(digits: Dataset, trained_run: Path) -> None:
    """A wrapped teacher (fed another input scale) and a frozen layer keep their own modes."""
    teacher = tk.load_model(trained_run)  # records [0, 1]; the pair below is in [-1, 1]
    teacher.train()
    teacher.features.eval()  # e.g. a frozen backbone
    tk.distill(teacher, "mlp", "digits->digits_shifted", student_options={"widths": [8]},
               **FAST)
    assert teacher.training and teacher.head.training and not teacher.features.training
    teacher.eval()
    tk.distill(teacher, "mlp", "digits->digits_shifted", student_options={"widths": [8]},
               **FAST)
    assert not any(m.training for m in teacher.modules())


def test_a_refused_or_failed_run_gives_the_teacher_back(digits: Dataset,
                                                        tmp_path: Path) -> None:
    """Building the method freezes the teacher at once; a run refused before it trains (a
    student of another class count, an --out that is a file, a student that is the teacher)
    used to leave the user's module frozen for good."""
    teacher = mlp(digits.input_shape, 10, widths=[16])
    teacher.train()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    attempts = [
        (lambda: tk.distill(teacher, mlp(digits.input_shape, 3, widths=[8]), digits, **FAST),
         "outputs 3 classes"),
        (lambda: tk.distill(teacher, "mlp", digits, out=a_file, **FAST), "is a file"),
        (lambda: tk.adapt("mlp", "digits->digits_shifted", method="dann+kd", teacher=teacher,
                          out=a_file, **FAST), "is a file"),
        (lambda: tk.distill(teacher, teacher, digits, **FAST), "shares its weights"),
    ]
    for attempt, words in attempts:
        with pytest.raises(tk.TransferkitError, match=words):
            attempt()
        assert teacher.training, words
        assert all(p.requires_grad for p in teacher.parameters()), words


# ---------------------------------------------------------------- 8. world size


def test_resume_with_another_number_of_processes_is_refused(cli: CliRunner,
                                                            trained_run: Path,
                                                            tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run, tmp_path / "ddp"))
    state = load_torch(run / "checkpoint.pt")
    state["world_size"] = 2
    state["rank_rngs"] = state["rank_rngs"] * 2
    save_torch(state, run / "checkpoint.pt")
    before = snapshot(run)
    line = fails(cli, "train", *SAME[:-len(CLI_FAST)], "--epochs", "3", *CLI_FAST, "--out", run,
                 "--resume")
    assert "trained by 2 process(es)" in line and "--nproc_per_node=2" in line
    assert snapshot(run) == before


# ---------------------------------------------------------------- 9. the environment


def test_out_is_an_existing_file(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.write_text("mine")
    assert "is a file, not a folder" in fails(cli, "train", *SAME, "--out", path)
    assert path.read_text() == "mine"


def test_out_name_too_long(cli: CliRunner, tmp_path: Path) -> None:
    line = fails(cli, "train", *SAME, "--out", tmp_path / ("x" * 300))
    assert "File name too long" in line and "shorter path" in line


def test_out_not_writable(cli: CliRunner, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere that is mounted read-write
        target = Path("/sys/transferkit-run")
        if not Path("/sys").is_dir():
            pytest.skip("no read-only /sys to aim at")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "run"
    line = fails(cli, "train", *SAME, "--out", target)
    assert f"cannot create run directory {target}" in line


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def full_on_second_checkpoint(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else ""
        if ".checkpoint.pt." in name:
            calls.append(name)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the checkpoint's file")
    monkeypatch.setattr(files.os, "fsync", full_on_second_checkpoint)
    line = fails(cli, "train", *SAME[:-len(CLI_FAST)], "--epochs", "3", *CLI_FAST, "--out", out)
    assert "No space left on device" in line and "previous version is kept" in line
    assert "--resume" in line
    assert load_torch(out / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in rows(out)] == [1]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    code, _, err = cli("train", *SAME[:-len(CLI_FAST)], "--epochs", "3", *CLI_FAST, "--out", out,
                       "--resume")
    assert code == 0, err
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3]


# ---------------------------------------------------------------- 12. progress


def test_progress_without_a_terminal_prints_a_line_per_epoch(sub_env: dict,
                                                             tmp_path: Path) -> None:
    proc = run_process([*console_script(), "train", "--data", "digits", "--model-opt",
                        "widths=[16]", "--epochs", "2", "--device", "cpu", "--batch-size", "32",
                        "--steps-per-epoch", "3", "--out", str(tmp_path / "run")], sub_env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    history = rows(tmp_path / "run")
    assert len(lines) == 2
    for line, row in zip(lines, history, strict=True):
        assert line.startswith(f"epoch {row['epoch']}/2: loss {row['train']['loss']:.4f}")
        assert f"test {row['eval']['test']['accuracy']:.2%}" in line


def test_progress_shows_the_epoch_that_just_ended() -> None:
    stream = io.StringIO()
    row = {"epoch": 1, "train": {"loss": 0.25}, "eval": {"test": {"accuracy": 0.5}}}
    with ProgressBar(True, 3, stream=stream) as bar:
        bar.start_epoch(1, 10)
        bar.end_epoch(row)
        assert bar.status == "loss 0.2500 | test 50.00%"
    assert stream.getvalue().startswith("epoch 1/3: loss 0.2500 | test 50.00% (")
    quiet = io.StringIO()
    with ProgressBar(False, 3, stream=quiet) as bar:
        bar.start_epoch(1, 10)
        bar.end_epoch(row)
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------- 14. resume may extend a run


def test_resume_extends_epochs_but_never_shrinks(digits: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tk.train("mlp", digits, model_options=TINY, out=out, **FAST)
    longer = tk.train("mlp", digits, model_options=TINY, out=out, resume=True,
                      **{**FAST, "epochs": 3})
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3] and longer.summary["epochs"] == 3
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 3
    before = snapshot(out)
    with pytest.raises(CheckpointError, match="already trained 3 epochs; give --epochs 3"):
        tk.train("mlp", digits, model_options=TINY, out=out, resume=True, **FAST)
    assert snapshot(out) == before


def test_divergence_check_can_be_turned_off_from_the_cli(cli: CliRunner, tmp_path: Path,
                                                        helpers_dir: Path) -> None:
    code, _, err = cli("train", "--data", "digits", "--model", f"{HELPERS}:stuck", "--epochs",
                       "1", "--device", "cpu", "--no-progress", "--steps-per-epoch", "100",
                       "--batch-size", "32", "--lr", "1e-6", "--out", tmp_path / "a")
    assert code == 2 and "predictions collapsed" in error_line(err)
    code, _, err = cli("train", "--data", "digits", "--model", f"{HELPERS}:stuck", "--epochs",
                       "1", "--device", "cpu", "--no-progress", "--steps-per-epoch", "100",
                       "--batch-size", "32", "--lr", "1e-6", "--no-divergence-check",
                       "--out", tmp_path / "b")
    assert code == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert "collapsed" in summary["warning"]


def test_a_raw_pickle_or_a_foreign_zip_is_one_line_on_stderr(tmp_path: Path,
                                                             sub_env: dict) -> None:
    """A bare pickle made torch warn over two lines before our refusal; a zip that torch did
    not write was called 'truncated'. Both are one line, said by the installed command."""
    import pickle
    import zipfile

    from conftest import console_script, run_process

    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"x": Payload(marker)}, protocol=4))
    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    for path, words in ((raw, "could run code"), (foreign, "zip archive but not a PyTorch")):
        proc = run_process([*console_script(), "evaluate", str(path), "--data", "digits"],
                           sub_env)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not marker.exists()
