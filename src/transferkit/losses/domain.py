"""The domain classifier of DANN and its loss.

The discriminator ``D`` maps features to one logit, "source" = 1 and "target" = 0;
trained through a gradient reversal layer, it pushes the features to be domain-invariant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError


class DomainDiscriminator(nn.Module):
    """``Linear(in, h_k) -> [BN] -> ReLU -> [Dropout]`` for each hidden width ``h_k``, then
    ``Linear(h_last, 1)``; returns ``N`` logits.

    ``hidden`` is the list of widths; an int ``h`` means ``[h, h]``: two layers of ``h``, the
    1024-1024 discriminator of TLlib's DANN. ``batch_norm=True`` (default) is the digits
    discriminator of the DANN literature (Linear-BN-ReLU); without it, that literature uses
    ``dropout=0.5``. With BatchNorm the training batch needs more than one sample.
    """

    def __init__(
        self, in_features: int, hidden: int | Sequence[int] = 1024, batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [hidden, hidden] if isinstance(hidden, int) else list(hidden)
        if in_features < 1 or not widths or any(w < 1 for w in widths):
            raise ConfigError(
                f"discriminator sizes must be >= 1, got in_features={in_features}, hidden={hidden}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"discriminator dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_features
        for out in widths:
            layers.append(nn.Linear(width, out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features.flatten(1)).squeeze(1)


def domain_adversarial_loss(source_domain_logits: Tensor, target_domain_logits: Tensor) -> Tensor:
    """``(mean_i BCE(d_s_i, 1) + mean_j BCE(d_t_j, 0)) / 2`` with BCE on logits.

    ``BCE(z, y) = -(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z)))``. Averaging the two means
    gives both domains equal weight whatever their batch sizes.
    """
    if source_domain_logits.numel() == 0 or target_domain_logits.numel() == 0:
        raise ConfigError("domain loss needs at least one source and one target sample")
    source = source_domain_logits.flatten()
    target = target_domain_logits.flatten()
    loss_s = F.binary_cross_entropy_with_logits(source, torch.ones_like(source))
    loss_t = F.binary_cross_entropy_with_logits(target, torch.zeros_like(target))
    return 0.5 * (loss_s + loss_t)


@torch.no_grad()
def domain_accuracy(source_domain_logits: Tensor, target_domain_logits: Tensor) -> float:
    """``(mean_i [d_s_i > 0] + mean_j [d_t_j < 0]) / 2``; 0.5 means the domains look alike.

    A logit of exactly 0 counts as wrong for both domains.
    """
    if source_domain_logits.numel() == 0 or target_domain_logits.numel() == 0:
        raise ConfigError("domain accuracy needs at least one source and one target sample")
    acc_s = (source_domain_logits > 0).float().mean()
    acc_t = (target_domain_logits < 0).float().mean()
    return float(0.5 * (acc_s + acc_t))
