"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018).

Two or more students learn the task together and teach each other: each network ``k`` of
the cohort (the student and ``peers`` extra networks) minimises

``L_k = CE(z_k, y) + weight * mean_{j != k} T^2 * KL(softmax(z_j/T) || softmax(z_k/T))``

with the other networks' predictions ``softmax(z_j/T)`` detached (targets, not paths for
gradients). The paper alternates the updates (network 1, then network 2 on the new
predictions ...); like most implementations, every network here is updated simultaneously
in one step from the predictions of the same forward pass. ``T = 1`` and ``weight = 1`` are
the paper's setting (its KL has no temperature; ``T^2 = 1`` then).

The peers share the student's architecture: each is a deep copy of the student whose
submodules with a ``reset_parameters`` method (linear, convolution and normalisation
layers) are re-initialised from the global torch RNG, so a seed reproduces them. That is
PyTorch's default initialisation, which may differ from the student's own scheme (the CIFAR
models' kaiming-normal convolutions), and parameters of modules without ``reset_parameters``
(a custom ``nn.Parameter``) start as copies of the student's. The peers are submodules of
the method (``peer_nets.peer1`` ...), so the optimizer, checkpoints and DDP see them; the
engine runs each once per step and evaluates each after every epoch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import soft_target_loss
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    Tap,
    check_count_at_most,
    check_flag,
    check_nonnegative,
    check_scale,
)
from transferkit.methods.registry import METHODS
from transferkit.models.base import copy_module

STUDENT = "student"

# Each peer is a full copy of the student, held in memory, run forward and backward every step
# and evaluated every epoch, and the mutual terms grow with the square of the cohort. The paper
# trains cohorts of 2 networks (peers=1) and at most 5 (peers=4); 32 peers is 8x that, and
# peers=10**9 would copy the student until memory runs out instead of training.
MAX_PEERS = 32
PEERS_WHY = "copies of the student trained beside it; the paper uses 1, at most 4"


@METHODS.register("dml", "deep mutual learning: the student and peer copies of it teach each "
                  "other (Zhang et al., CVPR 2018)")
class DeepMutualLearning(Method):
    name = "dml"
    own_label_term = True  # each network's CE is part of the loss (ce=False: none at all)

    def __init__(
        self,
        peers: int = 1,
        temperature: float = 1.0,
        weight: float = 1.0,
        ce: bool = True,
    ) -> None:
        super().__init__()
        self.peers = check_count_at_most(self.name, "peers", peers, MAX_PEERS, PEERS_WHY)
        self.temperature = check_scale("temperature", temperature)
        self.weight = check_nonnegative("weight", weight)
        check_flag(self.name, "ce", ce)
        self.ce = ce
        self.peer_nets = nn.ModuleDict()

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        return self.ce

    def networks(self, student: nn.Module) -> dict[str, nn.Module]:
        """``peers`` fresh copies of the student's architecture, built on the first call."""
        if not self.peer_nets:
            for k in range(1, self.peers + 1):
                self.peer_nets[f"peer{k}"] = copy_module(student, fresh=True)
        return dict(self.peer_nets.items())

    def cohort_logits(self, batch: Batch, out: Outputs) -> dict[str, Tensor]:
        """Every network's logits on the source rows: the engine's, or run here on its own."""
        if not self.peer_nets:
            raise ConfigError("dml has no peers yet: call networks(student) before losses()")
        logits = {STUDENT: out.logits}
        for name, net in self.peer_nets.items():
            tap = Tap(name, "logits")
            logits[name] = out.get(tap, "source") if out.has(tap, "source") else net(batch.x)
        return logits

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        logits = self.cohort_logits(batch, out)
        if self.ce and batch.y is None:
            raise ConfigError("dml with ce=true needs labels")
        terms: dict[str, Tensor] = {}
        for name, z in logits.items():
            if self.ce:
                assert batch.y is not None
                terms[f"{name}.ce"] = F.cross_entropy(z, batch.y)
            others = [
                soft_target_loss(z, other.detach(), self.temperature)
                for j, other in logits.items() if j != name
            ]
            terms[f"{name}.mutual"] = self.weight * (sum(others) / len(others))
        return terms
