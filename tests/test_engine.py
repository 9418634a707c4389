"""The training engine: determinism, resume after a kill, atomic checkpoints, NaN handling,
augmentation and learning-rate schedules."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import transferkit as tk
from conftest import FAST, HELPERS, TINY
from transferkit import api
from transferkit.config import OptimConfig, TrainConfig
from transferkit.data import Dataset, Split
from transferkit.data.augment import random_translate
from transferkit.engine import loop
from transferkit.engine.batches import epoch_batches, rank_slice
from transferkit.engine.checkpoint import atomic_write, load_torch, save_torch
from transferkit.engine.evaluate import evaluate_split
from transferkit.engine.loop import TrainData, Trainer
from transferkit.engine.optim import apply_max_norm, build_optimizer, learning_rate, weight_matrices
from transferkit.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirError
from transferkit.methods import DANN, Supervised
from transferkit.models import mlp

# dropout and jitter draw random numbers, so these runs also test the saved RNG state
NOISY = {**FAST, "epochs": 3, "steps_per_epoch": 4, "jitter": 1}
NOISY_MODEL = {"widths": [16], "dropout": 0.3}


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def tmp_files(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_metrics(digits: Dataset) -> None:
    def run(seed: int) -> tk.RunResult:
        return tk.train("mlp", digits, model_options=NOISY_MODEL, seed=seed, **NOISY)

    first, second, other = run(1), run(1), run(2)
    assert without_time(first.history) == without_time(second.history)  # exact floats
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert without_time(first.history) != without_time(other.history)


# ---------------------------------------------------------------- resume


def test_interrupted_run_resumes_to_the_same_numbers(
    digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {**NOISY, "epochs": 4}
    whole = tk.train("mlp", digits, model_options=NOISY_MODEL, out=tmp_path / "whole", **settings)

    # Interrupt while epoch 3's checkpoint is written: metrics follow the checkpoint, so
    # epoch 3 is in neither.
    real_save, calls = loop.save_torch, []

    def interrupted_save(obj, path):
        calls.append(obj["epoch"])
        if obj["epoch"] == 3:
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(loop, "save_torch", interrupted_save)
    run_dir = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        tk.train("mlp", digits, model_options=NOISY_MODEL, out=run_dir, **settings)
    monkeypatch.setattr(loop, "save_torch", real_save)
    assert calls == [1, 2, 3]
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2]
    assert load_torch(run_dir / "checkpoint.pt")["epoch"] == 2
    assert tmp_files(run_dir) == []

    resumed = tk.train("mlp", digits, model_options=NOISY_MODEL, out=run_dir, resume=True,
                       **settings)
    assert resumed.summary["resumed"] is True
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2, 3, 4]  # the lost epoch 3 once
    assert without_time(rows(run_dir)) == without_time(rows(tmp_path / "whole"))
    assert without_time(resumed.history) == without_time(whole.history)
    assert resumed.summary["final"] == whole.summary["final"]
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path, sub_env: dict) -> None:
    epochs = 10
    argv = [sys.executable, "-m", "transferkit.cli", "train", "--data", "digits", "--model",
            "mlp", "--model-opt", "widths=[128]", "--model-opt", "dropout=0.2", "--jitter", "1",
            "--epochs", str(epochs), "--steps-per-epoch", "100", "--batch-size", "64",
            "--device", "cpu", "--no-progress"]
    quiet = {"env": sub_env, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    reference = subprocess.Popen([*argv, "--out", str(tmp_path / "ref")], **quiet)
    run_dir = tmp_path / "killed"
    victim = subprocess.Popen([*argv, "--out", str(run_dir)], **quiet)
    checkpoint, seen = run_dir / "checkpoint.pt", 0
    try:
        deadline = time.monotonic() + 240
        while victim.poll() is None and time.monotonic() < deadline:
            if checkpoint.exists():  # written atomically: always a whole file
                seen = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]
                if seen >= 2:
                    break
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
    finally:
        code = victim.wait(timeout=60)
        victim.stderr.close()
    assert code == -signal.SIGKILL, "the run finished before it could be killed"
    assert seen >= 2
    at_kill = load_torch(checkpoint)["epoch"]
    assert 2 <= at_kill < epochs
    # A write the kill cut short leaves a temporary file; plant one to be sure it is cleared.
    (run_dir / ".checkpoint.pt.killed.tmp").write_bytes(b"half a checkpoint")

    resumed = subprocess.run([*argv, "--out", str(run_dir), "--resume"], env=sub_env,
                             capture_output=True, text=True, timeout=240, check=False)
    assert resumed.returncode == 0, resumed.stderr
    _, ref_err = reference.communicate(timeout=240)
    assert reference.returncode == 0, ref_err

    ref_dir = tmp_path / "ref"
    assert [r["epoch"] for r in rows(run_dir)] == list(range(1, epochs + 1))
    assert without_time(rows(run_dir)) == without_time(rows(ref_dir))  # exactly equal
    summary = json.loads((run_dir / "summary.json").read_text())
    ref_summary = json.loads((ref_dir / "summary.json").read_text())
    assert summary["resumed"] is True and ref_summary["resumed"] is False
    assert summary["final"] == ref_summary["final"]
    assert summary["steps"] == ref_summary["steps"] == epochs * 100
    ours, theirs = load_torch(run_dir / "model.pt"), load_torch(ref_dir / "model.pt")
    for key, value in theirs["state_dict"].items():
        assert torch.equal(value, ours["state_dict"][key]), key
    assert tmp_files(run_dir) == [] and tmp_files(ref_dir) == []


def test_resume_refuses_other_settings(digits: Dataset, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tk.train("mlp", digits, model_options=TINY, out=run_dir, **FAST)
    with pytest.raises(ConfigError, match="already holds a run"):
        tk.train("mlp", digits, model_options=TINY, out=run_dir, **FAST)
    with pytest.raises(CheckpointError, match=r"settings differ \(train.optim.lr\)"):
        tk.train("mlp", digits, model_options=TINY, out=run_dir, resume=True,
                 **{**FAST, "lr": 0.5})
    # Without config.yaml the checkpoint's own record still catches it.
    (run_dir / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"settings differ \(optim.lr\)"):
        tk.train("mlp", digits, model_options=TINY, out=run_dir, resume=True,
                 **{**FAST, "lr": 0.5})
    with pytest.raises(CheckpointError, match=r"model.features.1.weight: checkpoint \(16, 64\)"):
        tk.train("mlp", digits, model_options={"widths": [8]}, out=run_dir, resume=True, **FAST)
    # Settings that do not change the numbers may differ; a finished run is given back as saved.
    saved = json.loads((run_dir / "summary.json").read_text())
    again = tk.train("mlp", digits, model_options=TINY, out=run_dir, resume=True,
                     **{**FAST, "eval_batch_size": 7})
    assert again.summary == saved and len(rows(run_dir)) == 1


# ---------------------------------------------------------------- atomic writes


def test_run_dir_files_and_no_temporary_files(trained_run: Path) -> None:
    names = sorted(p.name for p in trained_run.iterdir())
    assert names == [
        ".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt", "summary.json"
    ]
    state = load_torch(trained_run / "checkpoint.pt")
    assert state["epoch"] == 2 and state["step"] == 6
    assert [r["epoch"] for r in state["history"]] == [1, 2]


def test_run_files_get_the_usual_permissions(trained_run: Path) -> None:
    """Written through mkstemp (0600), yet readable like metrics.jsonl (0666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt", "summary.json"):
        assert stat.S_IMODE((trained_run / name).stat().st_mode) == 0o666 & ~umask, name


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    save_torch({"epoch": 1}, target)
    before = target.read_bytes()

    def fail_halfway(handle) -> None:
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(RunDirError, match=r"disk full.*previous version is kept"):
        atomic_write(target, fail_halfway)
    assert target.read_bytes() == before
    assert load_torch(target)["epoch"] == 1
    assert tmp_files(tmp_path) == []


def test_atomic_write_replaces_a_links_target_and_never_a_device(tmp_path: Path) -> None:
    """``--out latest.csv`` (a link) writes the file it points to; a pipe (or ``/dev/null``,
    a device) is refused instead of being renamed over."""
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    atomic_write(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and real.read_text() == "new"
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    with pytest.raises(RunDirError, match=r"pipe\.csv: it is a named pipe, not a regular file"):
        atomic_write(pipe, lambda f: f.write(b"x"))
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    with pytest.raises(RunDirError, match="a loop of symbolic links"):
        atomic_write(tmp_path / "l1", lambda f: f.write(b"x"))
    assert (tmp_path / "l1").is_symlink()
    dangling = tmp_path / "dangling.csv"  # written where it points, as cp does
    dangling.symlink_to(tmp_path / "new" / "x.csv")
    atomic_write(dangling, lambda f: f.write(b"y"))
    assert dangling.is_symlink() and (tmp_path / "new" / "x.csv").read_bytes() == b"y"
    assert tmp_files(tmp_path) == []


def test_truncated_checkpoint_is_a_clear_error(trained_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model.pt"
    broken.write_bytes((trained_run / "model.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        tk.load_model(broken)


# ---------------------------------------------------------------- non-finite loss


def test_nan_loss_names_epoch_and_step_and_keeps_checkpoint(
    digits: Dataset, tmp_path: Path, helpers_dir: Path
) -> None:
    helpers = __import__(HELPERS)
    model = helpers.nan_after(digits.input_shape, 10, calls=8)  # step 8 = epoch 3, step 2
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, step 2 \(supervised.ce=nan\)") as info:
        tk.train(model, digits, out=run_dir, **{**FAST, "epochs": 5})
    assert f"checkpoint (epoch 2) is kept in {run_dir}" in str(info.value)
    state = load_torch(run_dir / "checkpoint.pt")
    assert state["epoch"] == 2 and state["step"] == 6
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2]
    assert all(math.isfinite(r["train"]["loss"]) for r in rows(run_dir))
    assert not (run_dir / "model.pt").exists()
    # the kept checkpoint loads into the architecture
    restored = tk.load_model(run_dir / "checkpoint.pt", helpers.nan_after((1, 8, 8), 10))
    assert torch.isfinite(restored.eval()(digits.test.x[:4])).all()


def test_nan_in_first_epoch_without_run_dir(digits: Dataset, helpers_dir: Path) -> None:
    model = __import__(HELPERS).nan_after(digits.input_shape, 10, calls=2)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2 .*no checkpoint was written"):
        tk.train(model, digits, **FAST)


# ---------------------------------------------------------------- augmentation


def test_random_translate_matches_per_sample_shift() -> None:
    n, c, h, w, p = 5, 2, 6, 7, 2
    x = torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) + 1
    torch.manual_seed(3)
    out = random_translate(x, p)
    torch.manual_seed(3)
    shifts = torch.randint(0, 2 * p + 1, (2, n))
    assert out.shape == x.shape
    expected = torch.zeros_like(x)
    for i in range(n):
        dy, dx = int(shifts[0, i]) - p, int(shifts[1, i]) - p  # content moves by (-dy, -dx)
        for r in range(h):
            for col in range(w):
                if 0 <= r + dy < h and 0 <= col + dx < w:
                    expected[i, :, r, col] = x[i, :, r + dy, col + dx]
    assert torch.equal(out, expected)
    assert len({(int(a), int(b)) for a, b in shifts.T}) > 1  # samples get their own shifts
    assert random_translate(x, 0) is x
    with pytest.raises(ValueError, match="N x C x H x W"):
        random_translate(x[0], 1)


# ---------------------------------------------------------------- learning rate


def test_learning_rate_schedules_follow_their_formulas() -> None:
    total = 40
    step = OptimConfig(lr=0.2, schedule="step", step_size=3, gamma=0.5)
    inverse = OptimConfig(lr=0.01, schedule="inverse", inv_alpha=0.01, inv_beta=0.75)
    cosine = OptimConfig(lr=0.1, schedule="cosine")
    constant = OptimConfig(lr=0.03)
    for s in (0, 1, 9, 10, 25, 39, 40, 55):
        epoch = s // 10
        assert learning_rate(step, s, epoch, total) == pytest.approx(0.2 * 0.5 ** (epoch // 3))
        assert learning_rate(inverse, s, epoch, total) == pytest.approx(
            0.01 * (1 + 0.01 * s) ** -0.75
        )
        assert learning_rate(cosine, s, epoch, total) == pytest.approx(
            0.1 * 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))
        )
        assert learning_rate(constant, s, epoch, total) == 0.03
    assert learning_rate(cosine, 0, 0, total) == pytest.approx(0.1)
    assert learning_rate(cosine, total, 4, total) == pytest.approx(0.0, abs=1e-15)


def test_trainer_applies_the_schedule(digits: Dataset) -> None:
    result = tk.train("mlp", digits, model_options=TINY, schedule="step", step_size=1, gamma=0.5,
                      lr=0.1, **{**FAST, "epochs": 3})
    assert [row["lr"] for row in result.history] == pytest.approx([0.1, 0.05, 0.025])
    cosine = tk.train("mlp", digits, model_options=TINY, schedule="cosine", lr=0.1,
                      **{**FAST, "epochs": 2})
    last_step = 2 * FAST["steps_per_epoch"] - 1
    assert cosine.history[-1]["lr"] == pytest.approx(
        0.05 * (1 + math.cos(math.pi * last_step / (2 * FAST["steps_per_epoch"])))
    )


def test_max_norm_rescales_only_long_rows_as_numpy_does() -> None:
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(6, 5) * torch.tensor([0.1, 1, 3, 0.2, 2, 5])[:, None])
    rows = weight.detach().numpy().copy()
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    expected = rows * np.minimum(1.0, 1.5 / norms)
    apply_max_norm([weight], 1.5)
    np.testing.assert_allclose(weight.detach().numpy(), expected, rtol=1e-5)
    assert (norms < 1.5).any() and (norms > 1.5).any()  # both cases were exercised
    conv = nn.Conv2d(2, 3, 3)
    assert weight_matrices(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), conv))[1] is conv.weight


def test_trainer_keeps_weights_within_max_norm(digits: Dataset) -> None:
    settings = {**FAST, "lr": 0.5, "check_divergence": False}  # 3 steps at lr 0.5: collapses
    free = tk.train("mlp", digits, model_options=TINY, **settings)
    capped = tk.train("mlp", digits, model_options=TINY, max_norm=0.3, **settings)
    longest = [
        max(float(w.detach().norm(dim=1).max()) for w in weight_matrices(r.model))
        for r in (free, capped)
    ]
    assert longest[0] > 0.3 >= longest[1] - 1e-5


def test_build_optimizer() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    adam = build_optimizer(params, OptimConfig(name="adam", lr=0.003, weight_decay=0.1))
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["lr"] == 0.003 and adam.param_groups[0]["weight_decay"] == 0.1
    sgd = build_optimizer(params, OptimConfig(momentum=0.0, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"] is False
    nesterov = build_optimizer(params, OptimConfig(momentum=0.5, nesterov=True))
    assert nesterov.param_groups[0]["nesterov"] is True


# ---------------------------------------------------------------- batches, evaluation, checks


def test_epoch_batches_are_seeded_permutations() -> None:
    plan = epoch_batches(10, 4, 5, seed=0, epoch=1)
    assert plan.shape == (5, 4)
    flat = plan.flatten().tolist()
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert torch.equal(plan, epoch_batches(10, 4, 5, seed=0, epoch=1))
    assert not torch.equal(plan, epoch_batches(10, 4, 5, seed=0, epoch=2))
    assert not torch.equal(plan, epoch_batches(10, 4, 5, seed=0, epoch=1, stream=1))
    halves = [rank_slice(plan, r, 2) for r in range(2)]
    assert torch.equal(torch.cat(halves, dim=1), plan)
    assert rank_slice(plan, 0, 1) is plan


def test_evaluate_split_counts() -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
        model.bias.zero_()
    x = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [3.0, 1.0, 0], [0, 0, 1.0]])
    y = torch.tensor([0, 0, 0, 1])
    scores = evaluate_split(model, Split(x, y), torch.device("cpu"), batch_size=3)
    expected_loss = torch.nn.functional.cross_entropy(model(x), y).item()
    assert scores["accuracy"] == pytest.approx(0.5)  # row 3: logits tie, argmax picks class 0
    assert scores["loss"] == pytest.approx(expected_loss)
    assert scores["n"] == 4
    assert model.training


def test_trainer_checks_its_inputs(digits: Dataset) -> None:
    model = mlp(digits.input_shape, 10, widths=[8])
    config = TrainConfig(progress=False, device="cpu")
    with pytest.raises(ConfigError, match="at least one method"):
        Trainer(model, [], TrainData(digits.train.x, digits.train.y, 10), config)
    with pytest.raises(ConfigError, match="need labels"):
        Trainer(model, [Supervised()], TrainData(digits.train.x, None, 10), config)
    with pytest.raises(ConfigError, match="need target inputs"):
        Trainer(model, [Supervised(), DANN(hidden=4)],
                TrainData(digits.train.x, digits.train.y, 10), config)
    frozen = mlp(digits.input_shape, 10, widths=[8]).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        Trainer(frozen, [Supervised()], TrainData(digits.train.x, digits.train.y, 10), config)


def test_train_data_class_counts(digits: Dataset) -> None:
    data = TrainData(digits.train.x, digits.train.y, 10)
    counts = data.class_counts()
    assert counts.tolist() == torch.bincount(digits.train.y, minlength=10).tolist()
    assert int(counts.sum()) == len(digits.train)
    assert TrainData(digits.train.x, None, 10).class_counts() is None


def test_api_run_result(trained_run: Path, digits: Dataset) -> None:
    summary = json.loads((trained_run / "summary.json").read_text())
    metrics = rows(trained_run)
    assert summary["final"]["test"] == metrics[-1]["eval"]["test"]["accuracy"]
    assert summary["epochs"] == 2 and summary["steps"] == 6
    model = tk.load_model(trained_run)
    scores = tk.evaluate(model, digits, device="cpu")
    assert scores["test"]["accuracy"] == summary["final"]["test"]
    restored = api.load_model(trained_run / "checkpoint.pt", mlp(digits.input_shape, 10, **TINY))
    assert evaluate_split(restored, digits.test, torch.device("cpu")) == scores["test"]


def test_load_run_gives_back_the_finished_run(trained_run: Path, tmp_path: Path) -> None:
    run = tk.load_run(trained_run)
    assert run.run_dir == trained_run and run.history == rows(trained_run)
    assert run.summary["final"]["test"] == tk.evaluate(run.model, "digits")["test"]["accuracy"]
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "metrics.jsonl").write_text((trained_run / "metrics.jsonl").read_text())
    with pytest.raises(CheckpointError, match=r"model.pt, summary.json missing.*--resume"):
        tk.load_run(partial)
