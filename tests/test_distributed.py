"""Two ranks under torchrun (gloo on CPU): the CLI trains, rank 0 alone writes the run."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import yaml

import transferkit as tk
from conftest import FAST, HELPERS, TINY, run_process
from transferkit import run_dir
from transferkit.engine import distributed
from transferkit.engine.checkpoint import load_torch

RUN_FILES = [".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt", "summary.json"]
STEPS, BATCH = 4, 32


def torchrun(*argv: str, monitor_s: float = 0.1) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            f"--monitor-interval={monitor_s}", "-m", "transferkit.cli", *argv, "--device", "cpu",
            "--no-progress", "--steps-per-epoch", str(STEPS), "--batch-size", str(BATCH)]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def check_run_dir(out: Path, epochs: int) -> list[dict]:
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES  # no temporary files either
    metrics = rows(out)
    assert [r["epoch"] for r in metrics] == list(range(1, epochs + 1))  # one line per epoch
    assert [r["step"] for r in metrics] == [STEPS * (e + 1) for e in range(epochs)]
    for row in metrics:
        assert all(math.isfinite(v) for v in row["train"].values())
        for scores in row["eval"].values():
            assert scores["n"] == 450  # both ranks' halves of the test set
            assert math.isfinite(scores["loss"]) and 0.0 <= scores["accuracy"] <= 1.0
    return metrics


@pytest.mark.slow
def test_two_rank_train_matches_one_process(tmp_path: Path, sub_env: dict) -> None:
    out = tmp_path / "ddp"
    proc = run_process(torchrun("train", "--data", "digits", "--model", "mlp", "--model-opt",
                                "widths=[16]", "--epochs", "2", "--out", str(out)), sub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    metrics = check_run_dir(out, epochs=2)
    assert json.loads((out / "summary.json").read_text())["steps"] == 2 * STEPS

    # Each rank takes half of every global batch and DDP averages the gradients: the same
    # run as one process on whole batches, up to float rounding.
    alone = tk.train("mlp", "digits", model_options=TINY,
                     **{**FAST, "epochs": 2, "steps_per_epoch": STEPS, "batch_size": BATCH})
    for ddp_row, row in zip(metrics, alone.history, strict=True):
        assert ddp_row["train"]["supervised.ce"] == pytest.approx(
            row["train"]["supervised.ce"], rel=1e-4)
        assert ddp_row["eval"]["test"]["loss"] == pytest.approx(
            row["eval"]["test"]["loss"], rel=1e-4
        )
    assert tk.load_model(out).features[1].out_features == 16


@pytest.mark.slow
def test_two_rank_adapt_dann(tmp_path: Path, sub_env: dict) -> None:
    out = tmp_path / "ddp"
    proc = run_process(torchrun("adapt", "--data", "digits->digits_shifted", "--model", "mlp",
                                "--model-opt", "widths=[16]", "--method", "dann", "--opt",
                                "hidden=16", "--epochs", "1", "--out", str(out)), sub_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (row,) = check_run_dir(out, epochs=1)
    assert set(row["train"]) == {"supervised.ce", "dann.domain", "loss"}
    assert set(row["eval"]) == {"source_test", "target_test"}
    assert 0.0 < row["dann.grl_coeff"] < 1.0
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "dann"


@pytest.mark.slow
def test_ranks_draw_their_own_random_numbers_and_resume_them(
    tmp_path: Path, sub_env: dict
) -> None:
    """Dropout masks and shifts differ between ranks (rows differ, so must masks), and a
    resumed run gives every rank back its own random stream."""

    def launch(name: str, *extra: str) -> tuple[int, list[list[str]]]:
        probe = tmp_path / name
        proc = run_process(torchrun("train", "--data", "digits", "--model",
                                    f"{HELPERS}:random_probe", "--model-opt", f"path={probe}",
                                    "--epochs", "2", "--out", str(tmp_path / f"{name}-run"),
                                    *extra), sub_env)
        draws = [Path(f"{probe}.{rank}").read_text().splitlines() for rank in (0, 1)]
        return proc.returncode, draws

    code, whole = launch("whole")
    assert code == 0
    assert [len(draws) for draws in whole] == [2 * STEPS, 2 * STEPS]
    assert not set(whole[0]) & set(whole[1])
    # Both ranks are killed at their 6th step (epoch 2), then the run resumes from epoch 1.
    code, _ = launch("parts", "--model-opt", f"kill_at={STEPS + 2}")
    assert code != 0
    code, parts = launch("parts", "--model-opt", f"kill_at={STEPS + 2}", "--resume")
    assert code == 0
    for rank in (0, 1):  # 4 + 1 lines before the kill, then all of epoch 2
        assert len(parts[rank]) == 2 * STEPS + 1
        assert parts[rank][:STEPS] + parts[rank][STEPS + 1:] == whole[rank]


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_cleanly(tmp_path: Path, sub_env: dict) -> None:
    """A NaN in one rank's half of a batch: all ranks stop at that step with the one-line
    error, none is left to crash in the next all-reduce."""
    out = tmp_path / "ddp"
    proc = run_process(torchrun("train", "--data", "digits", "--model", f"{HELPERS}:nan_on_rank",
                                "--model-opt", "calls=6", "--epochs", "3", "--out", str(out),
                                monitor_s=5.0),  # time for both ranks to report before a kill
                       sub_env)
    assert proc.returncode != 0
    err = proc.stderr
    assert "[rank0]: Traceback" not in err and "[rank1]: Traceback" not in err, err[-3000:]
    assert err.count("transferkit: error: loss became non-finite at epoch 2, step 2") == 2
    assert "(supervised.ce=nan)" in err and "(on another rank; here supervised.ce=" in err
    # The first rank out exits with status 2. On a loaded machine torchrun may stop the other
    # with SIGTERM while its interpreter is still tearing down, after it has printed its error.
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", err)
    assert "2" in codes and set(codes) <= {"2", "-15"}, codes
    state = load_torch(out / "checkpoint.pt")
    assert state["epoch"] == 1
    assert [r["epoch"] for r in rows(out)] == [1]


def test_only_rank_zero_writes_before_the_process_group_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_dir`` prepares the run directory before the Trainer joins the process group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()
    out = tmp_path / "run"
    assert run_dir.prepare_run_dir(out, {"command": "train"}, resume=False) == (out, None)
    run_dir.write_config(out, {"command": "train"})
    assert not out.exists()
    monkeypatch.setenv("RANK", "0")
    assert distributed.is_main()
    _, lock = run_dir.prepare_run_dir(out, {"command": "train"}, resume=False)
    run_dir.write_config(out, {"command": "train"})
    assert lock is not None  # only rank 0 holds the run directory's lock
    lock.release()
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.yaml"]
