"""Index plans for in-memory tensors: no DataLoader, no worker processes.

Each epoch's order is a permutation drawn from a generator seeded by ``(seed, epoch)``, so a
resumed run sees exactly the batches an uninterrupted one would. Under DDP every rank draws
the same permutation and takes its own contiguous slice of each global batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed((seed * 1_000_003 + epoch * 7919 + stream) % (2**63 - 1))
    return gen


def epoch_batches(
    n: int, batch_size: int, steps: int, seed: int, epoch: int, stream: int = 0
) -> Tensor:
    """``steps x batch_size`` indices into ``n`` rows: whole permutations, concatenated."""
    gen = epoch_generator(seed, epoch, stream)
    needed = steps * batch_size
    perms = [torch.randperm(n, generator=gen) for _ in range(-(-needed // n))]
    return torch.cat(perms)[:needed].view(steps, batch_size)


def rank_slice(indices: Tensor, rank: int, world: int) -> Tensor:
    """This rank's share of each global batch (columns split as evenly as possible)."""
    if world == 1:
        return indices
    return indices.tensor_split(world, dim=1)[rank]
