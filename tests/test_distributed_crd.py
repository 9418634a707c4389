"""CRD on two ranks under torchrun (gloo on CPU): every rank writes every rank's rows into
its memory banks, also when the ranks' halves of a batch differ in size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import CliRunner, run_process
from transferkit.config import TrainConfig
from transferkit.data import load_dataset
from transferkit.engine.batches import epoch_batches, rank_slice
from transferkit.engine.checkpoint import load_torch

STEPS, BATCH = 3, 33  # an odd batch: rank 0 takes 17 rows of each, rank 1 16
UNIT = 1e-5  # a written row is L2-normalised; the initial rows (uniform draws) are not


def seen_rows(n: int) -> list[set[int]]:
    """The rows each rank's batches held in epoch 0 (the engine's batch plan)."""
    plan = epoch_batches(n, BATCH, STEPS, TrainConfig().seed, 0)
    return [set(rank_slice(plan, rank, 2).flatten().tolist()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_rank_crd_writes_both_ranks_rows(
    tmp_path: Path, sub_env: dict, cli: CliRunner
) -> None:
    teacher = tmp_path / "teacher"
    code, _, err = cli("train", "--data", "digits", "--model", "resnet8x4", "--model-opt",
                       "width=0.5", "--epochs", "1", "--device", "cpu", "--no-progress",
                       "--steps-per-epoch", "2", "--batch-size", "32", "--out", teacher)
    assert code == 0, err
    out = tmp_path / "crd"
    proc = run_process(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "--monitor-interval=0.1", "-m", "transferkit.cli", "distill", "--data", "digits",
         "--teacher", str(teacher), "--model", "resnet8x4", "--model-opt", "width=0.25",
         "--method", "crd", "--opt", "feat_dim=32", "--epochs", "1", "--out", str(out),
         "--device", "cpu", "--no-progress", "--steps-per-epoch", str(STEPS),
         "--batch-size", str(BATCH)],
        sub_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    n = len(load_dataset("digits").train.x)
    rank0, rank1 = seen_rows(n)
    assert rank1 - rank0  # rows only rank 1 saw: rank 0 knows them only through the gather
    seen = rank0 | rank1
    unseen = sorted(set(range(n)) - seen)
    state = load_torch(out / "checkpoint.pt")["objective"]  # written by rank 0
    prefix = next(k for k in state if k.endswith("memory.memory_s")).rsplit(".", 1)[0]
    for bank in ("memory_s", "memory_t"):
        norms = state[f"{prefix}.{bank}"].double().norm(dim=1)
        assert norms.shape == (n,)
        off = (norms - 1).abs()
        assert off[sorted(rank0)].max() < UNIT, bank
        assert off[sorted(rank1 - rank0)].max() < UNIT, bank  # fails without the gather
        # Rows no rank saw keep their initial draws (not unit rows, but for a rare one), and
        # the padding of rank 1's shorter half wrote nothing (it would have written row 0).
        assert (off[unseen] < UNIT).double().mean() < 0.01, bank
        assert 0 in seen or off[0] > UNIT, bank
    for z in ("z_s", "z_t"):
        assert state[f"{prefix}.{z}"].item() > 0
        assert torch.isfinite(state[f"{prefix}.{z}"])
