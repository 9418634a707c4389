"""Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": soft targets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_same_shape


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T))``.

    ``KL(p || q) = sum_c p_c (log p_c - log q_c)``, computed from ``log_softmax`` for stability;
    classes with ``p_c = 0`` contribute 0. The soft targets' gradients scale as ``1/T^2``, so
    the ``T^2`` factor keeps their magnitude comparable across temperatures (Hinton et al.).
    """
    if isinstance(temperature, bool) or not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be a finite number > 0, got {temperature!r}")
    check_same_shape(student_logits, teacher_logits)
    log_q = torch.log_softmax(student_logits / temperature, dim=1)
    log_p = torch.log_softmax(teacher_logits / temperature, dim=1)
    p = log_p.exp()
    # where() keeps 0 * (-inf) from turning into NaN when the teacher masks a class out.
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_q))
    kl = (p * diff).sum(dim=1)
    return temperature**2 * kl.mean()
