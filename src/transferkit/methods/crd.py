"""CRD (Tian, Krishnan & Isola, ICLR 2020): contrastive representation distillation.

The student's and the teacher's feature vectors (``features``: the embedding the head reads,
RepDistiller's ``feat[-1]``) are embedded into ``feat_dim`` on the unit sphere and scored
against memory banks of every training row's embeddings: row ``i`` is the positive, ``nce_k``
rows drawn uniformly are negatives (:mod:`transferkit.losses.crd`). Defaults are
RepDistiller's: ``feat_dim=128``, ``nce_k=16384`` (clamped to ``n_data - 1``),
``nce_t=0.07``, ``nce_m=0.5``, ``weight=0.8`` (its ``-b 0.8``); the hard-label term is
``supervised``, added by ``distill``.

The banks are indexed by the batch's row positions (:attr:`Batch.index`), so they hold one
entry per training row (``n_data`` = the number of training rows); they are buffers, saved
in checkpoints with the normalisation constants ``Z``.

Under DDP every rank gathers the row positions and both embeddings of every rank's batch
(padded to the largest batch, then trimmed by the gathered row counts) and applies the same
update, so the banks stay identical on every rank. ``Z`` is fixed on the first step from the
scores of the whole global batch: every rank sums its own ``Z * cells`` and ``cells``
(``cells`` = its number of scores) and the all-reduced ratio is exactly the ``Z`` one process
would compute from the gathered first batch; the rank's first scores are rescaled to it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from transferkit.engine import distributed
from transferkit.errors import ConfigError
from transferkit.losses.crd import CRDLoss, nce_loss
from transferkit.methods.base import (
    Batch,
    Outputs,
    TrainInfo,
    check_count_at_most,
    check_fraction,
    check_scale,
)
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS

# The two memory banks hold n_data x feat_dim floats each: the paper's (and RepDistiller's)
# feat_dim is 128; 4096 is 32x that and twice the widest ResNet feature vector (2048), and the
# banks are already 42 GB at 4096 on ImageNet's 1.28M rows. feat_dim=10**9 would try to
# allocate petabytes.
MAX_FEAT_DIM = 4096
FEAT_DIM_WHY = "32x the paper's 128; the memory banks hold n_data x feat_dim floats each"
# Every row is scored against nce_k negatives gathered from each bank, N x (nce_k + 1) x
# feat_dim floats a step: the paper uses 16384 (the most in its ablation); 131072 is 8x that
# (twice MoCo's 65536 queue). Smaller datasets clamp nce_k to n_data - 1 as before; on
# ImageNet's 1.28M rows nce_k=10**9 would gather some 80 GB a step (batch 64, feat_dim 128).
MAX_NCE_K = 131072
NCE_K_WHY = "negatives per row; the paper uses 16384, more only allocates absurd memory"


def gather_rows(*tensors: Tensor) -> list[Tensor]:
    """Each tensor's rows from every rank, concatenated in rank order (ranks may hold
    different row counts: each pads to the largest, the gathered counts trim the padding).
    Alone, the tensors themselves."""
    if distributed.world_size() <= 1:
        return list(tensors)
    world, device = distributed.world_size(), tensors[0].device
    count = torch.tensor([tensors[0].shape[0]], dtype=torch.long, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    most = max(sizes)
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((most, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]))
    return gathered


@METHODS.register("crd", "contrastive representation distillation: NCE against memory banks "
                  "of student/teacher embeddings (Tian et al., ICLR 2020)")
class CRDDistillation(LayerMethod):
    name = "crd"
    default = "embedding"
    flatten = True

    def __init__(
        self,
        teacher: nn.Module,
        weight: float = 0.8,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
        student_layers: Any = None,
        teacher_layers: Any = None,
    ) -> None:
        super().__init__(teacher, weight, student_layers, teacher_layers)
        self.feat_dim = check_count_at_most(self.name, "feat_dim", feat_dim, MAX_FEAT_DIM,
                                            FEAT_DIM_WHY)
        self.nce_k = check_count_at_most(self.name, "nce_k", nce_k, MAX_NCE_K, NCE_K_WHY)
        self.nce_t = check_scale("nce_t", nce_t)
        self.nce_m = check_fraction("nce_m", nce_m)
        if self.nce_m == 1.0:
            raise ConfigError("nce_m must be in [0, 1): with 1 the memory banks never change")
        self.crd: CRDLoss | None = None
        self._z_ready = False  # a cache of "Z is set", to skip the check's host sync

    def setup_connectors(
        self, shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], info: TrainInfo
    ) -> None:
        if len(shapes) != 1:
            raise ConfigError(f"crd compares one student layer with one teacher layer, got "
                              f"{len(shapes)} pairs; give one layer to each")
        if info.x is None:
            raise ConfigError("crd needs the training rows (TrainInfo.x) to size its memory")
        (s_shape, t_shape), = shapes
        s_dim, t_dim = math.prod(s_shape), math.prod(t_shape)
        self.crd = CRDLoss(s_dim, t_dim, len(info.x), self.feat_dim, self.nce_k, self.nce_t,
                           self.nce_m)
        self._z_ready = False

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        if self.crd is None:
            raise ConfigError("crd reads layers through the engine; train it with Trainer / "
                              "transferkit.distill")
        if batch.index is None:
            raise ConfigError("crd needs each batch's row positions (Batch.index) to index its "
                              "memory bank; train it with Trainer / transferkit.distill")
        (fs, ft), = self.captures(out)
        crd, memory = self.crd, self.crd.memory
        v_s, v_t = crd.embed_s(fs), crd.embed_t(ft)
        first = not self._z_ready and bool(memory.z_s < 0)  # the same on every rank
        out_s, out_t = memory(v_s, v_t, batch.index)
        self._z_ready = True
        if first and distributed.world_size() > 1:
            out_s, out_t = self._share_z(out_s, out_t)
        loss = nce_loss(out_s, crd.n_data) + nce_loss(out_t, crd.n_data)
        if self.training:
            index = batch.index.to(memory.memory_s.device)
            # One gather for both embeddings (same dtype), then split them again.
            all_index, both = gather_rows(index, torch.cat([v_s.detach(), v_t.detach()], 1))
            memory.update(all_index, both[:, : self.feat_dim], both[:, self.feat_dim :])
        return {self.name: self.weight * loss}

    def _share_z(self, out_s: Tensor, out_t: Tensor) -> tuple[Tensor, Tensor]:
        """Replace each rank's first-batch ``Z`` by the global batch's; rescale the scores."""
        memory = self.crd.memory  # type: ignore[union-attr]
        with torch.no_grad():
            cells = float(out_s.numel())
            local = torch.stack([memory.z_s, memory.z_t]).double()
            stats = torch.cat([local * cells, local.new_tensor([cells])])
            distributed.all_reduce_sum(stats)
            shared = stats[:2] / stats[2]
            scale = (local / shared).to(out_s.dtype)
            memory.z_s.copy_(shared[0])
            memory.z_t.copy_(shared[1])
        return out_s * scale[0], out_t * scale[1]

    def self_synced_buffers(self) -> list[str]:
        """The memory banks and Z: every rank applies the same gathered update."""
        return [name for name, _ in self.named_buffers() if name.startswith("crd.memory.")]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._z_ready = False  # loaded buffers may hold an unset Z again
        super()._load_from_state_dict(*args, **kwargs)
