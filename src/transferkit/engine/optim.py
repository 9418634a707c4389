"""Optimizers and learning-rate schedules, set per step so resume needs only the step."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from transferkit.config import OptimConfig
from transferkit.models.layers import resolve_layer


def build_optimizer(
    params: list[nn.Parameter] | list[dict[str, Any]], cfg: OptimConfig, fused: bool = False
) -> torch.optim.Optimizer:
    """SGD or Adam over ``params`` (parameters, or groups that may carry an ``lr_factor``);
    ``fused``: one kernel for the whole update (CUDA parameters only)."""
    extra = {"fused": True} if fused else {}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        **extra,
    )


def weight_matrices(model: nn.Module) -> list[nn.Parameter]:
    """Weights of linear and convolution layers: row ``i`` holds unit ``i``'s incoming weights."""
    return [
        m.weight for m in model.modules()
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd) and m.weight.requires_grad
    ]


@torch.no_grad()
def apply_max_norm(weights: list[nn.Parameter], max_norm: float) -> None:
    """Rescale every unit whose incoming weight vector is longer than ``max_norm`` onto it."""
    for weight in weights:
        weight.renorm_(2, 0, max_norm)


def learning_rate(cfg: OptimConfig, step: int, epoch: int, total_steps: int) -> float:
    """The rate for global ``step`` (0-based) in ``epoch`` (0-based).

    ``multistep`` decays once for every milestone ``m <= epoch``: with ``[150, 180, 210]`` the
    epoch with index 150 (the 151st) is the first at ``lr * gamma``, as RepDistiller's
    ``epoch > m`` on its 1-based epochs.
    """
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(m <= epoch for m in cfg.milestones)
    if cfg.schedule == "inverse":
        return cfg.lr * (1.0 + cfg.inv_alpha * step) ** (-cfg.inv_beta)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))
    return cfg.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's rate: ``lr`` times the group's ``lr_factor`` (1 when it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)


def resolve_lr_factors(model: nn.Module, factors: dict[str, float]) -> dict[str, float]:
    """``{layer: factor}`` with each student layer resolved to its objective path
    (``features`` -> ``model.features``); ``methods.<name>`` keys name a method's modules."""
    resolved = {}
    for key, factor in factors.items():
        path = key if key.startswith("methods.") else "model." + resolve_layer(model, key)
        resolved[path] = float(factor)
    return resolved


def lr_factor(name: str, factors: dict[str, float]) -> float:
    """The factor of the longest prefix of parameter ``name`` in ``factors`` (else 1)."""
    best, factor = -1, 1.0
    for prefix, value in factors.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, factor = len(prefix), value
    return factor
