"""Gradient reversal (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by
Backpropagation"): identity forward, gradient times ``-coeff`` backward, so the features
below it are trained to *increase* the domain classifier's loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, autograd, nn


class GradientReversalFunction(autograd.Function):
    """``forward(x) = x``; ``backward(g) = -coeff * g`` (no gradient for ``coeff``).

    ``coeff`` is a float, or a 0-d tensor (a compiled step computes it from the progress
    tensor, so the graph does not change with it).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float | Tensor) -> Tensor:
        if isinstance(coeff, Tensor):
            ctx.save_for_backward(coeff.detach())
            ctx.coeff = None
        else:
            ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        coeff = ctx.saved_tensors[0].to(grad_output.dtype) if ctx.coeff is None else ctx.coeff
        return -coeff * grad_output, None


def grad_reverse(x: Tensor, coeff: float | Tensor = 1.0) -> Tensor:
    """Apply :class:`GradientReversalFunction` with coefficient ``coeff``."""
    return GradientReversalFunction.apply(x, coeff)


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; set ``coeff`` (lambda) during training."""

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff: float | Tensor = float(coeff)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={float(self.coeff):g}"


def dann_warmup(progress: float | Tensor, gamma: float = 10.0) -> float | Tensor:
    """``lambda(p) = 2 / (1 + exp(-gamma * p)) - 1`` for training progress ``p`` in [0, 1].

    Rises from 0 to about 1 so the noisy early discriminator does not disturb the features
    (Ganin & Lempitsky 2015 use gamma = 10). ``p`` is clamped to [0, 1]. A 0-d tensor ``p``
    (a compiled step) gives a tensor, computed without leaving the device.
    """
    if isinstance(progress, Tensor):
        p = progress.clamp(0.0, 1.0)
        return 2.0 / (1.0 + torch.exp(-gamma * p)) - 1.0
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0
