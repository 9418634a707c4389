"""Distillation from several teachers: soft targets from their (weighted) ensemble.

``p_ens = sum_i w_i softmax(t_i/T)`` (``average="probs"``, the default; You et al., KDD 2017,
"Learning from Multiple Teacher Networks", and Hinton et al. 2015, who already distil an
ensemble) or ``p_ens = softmax(sum_i w_i t_i / T)`` (``average="logits"``), and

``L = alpha * T^2 * KL(p_ens || softmax(s/T)) + (1 - alpha) * CE(s, y)``

as in ``kd``, which is the one-teacher case exactly. ``weights`` are normalised to sum to 1
(uniform when not given). Without labels only the soft term is used.

Every teacher is frozen like ``kd``'s (eval mode, no grad, not a registered submodule: out
of the optimizer, the checkpoints and DDP) and moved with the method; :meth:`close` gives
each back its train/eval modes, ``requires_grad`` flags and device. The engine runs each
teacher once per step under the role ``teacher1``, ``teacher2`` ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import soft_target_loss
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    Tap,
    check_fraction,
    check_scale,
)
from transferkit.methods.registry import METHODS
from transferkit.models.base import module_modes, restore_modes

AVERAGES = ("probs", "logits")


def check_weights(weights: Any, count: int) -> list[float]:
    """``weights`` normalised to sum 1 (uniform for None); one finite number >= 0 a teacher."""
    if weights is None:
        return [1.0 / count] * count
    ok = isinstance(weights, list | tuple) and all(
        not isinstance(w, bool) and isinstance(w, int | float) and math.isfinite(w) and w >= 0
        for w in weights
    )
    if not ok or len(weights) != count or sum(weights) <= 0:
        raise ConfigError(
            f"weights must be {count} finite numbers >= 0 (one per teacher) with a positive "
            f"sum, got {weights!r}"
        )
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def ensemble_soft_loss(
    student: Tensor, teachers: Sequence[Tensor], weights: Sequence[float], temperature: float,
    average: str = "probs",
) -> Tensor:
    """``T^2 * mean_i KL(p_ens || softmax(s/T))`` for the ensemble of ``teachers``' logits.

    One teacher (weight 1) is :func:`soft_target_loss` itself. The mean of probabilities is
    formed in log space (``logsumexp(log w_i + log_softmax(t_i/T))``) for stability.
    """
    if len(teachers) == 1:
        return soft_target_loss(student, teachers[0], temperature)
    if average == "logits":
        mixed = sum(w * t for w, t in zip(weights, teachers, strict=True))
        assert isinstance(mixed, Tensor)
        return soft_target_loss(student, mixed, temperature)
    log_w = torch.tensor(weights, dtype=student.dtype, device=student.device).log()
    log_probs = torch.stack([torch.log_softmax(t / temperature, dim=1) for t in teachers])
    log_p = torch.logsumexp(log_probs + log_w[:, None, None], dim=0)
    log_q = torch.log_softmax(student / temperature, dim=1)
    p = log_p.exp()
    # where() keeps 0 * (-inf) from turning into NaN where every teacher masks a class out.
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_q))
    return temperature**2 * (p * diff).sum(dim=1).mean()


@METHODS.register("ensemble", "multi-teacher kd: soft targets from the (weighted) mean of the "
                  "teachers' softened probabilities (You et al., KDD 2017; Hinton et al. 2015)")
class EnsembleDistillation(Method):
    name = "ensemble"
    own_label_term = True

    def __init__(
        self,
        teachers: Sequence[nn.Module],
        weights: list[float] | None = None,
        temperature: float = 4.0,
        alpha: float = 0.9,
        average: str = "probs",
    ) -> None:
        super().__init__()
        if isinstance(teachers, nn.Module):
            teachers = [teachers]
        if not isinstance(teachers, list | tuple) or not teachers:
            raise ConfigError(f"teachers must be a list of torch.nn.Module, got {teachers!r}")
        for net in teachers:
            if not isinstance(net, nn.Module):
                raise ConfigError(
                    f"each teacher must be a torch.nn.Module, got {type(net).__name__}"
                )
        if average not in AVERAGES:
            raise ConfigError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
        self.weights = check_weights(weights, len(teachers))
        self.temperature = check_scale("temperature", temperature)
        self.alpha = check_fraction("alpha", alpha)
        self.average = average
        # What close() gives back, recorded for every teacher before any is frozen (the same
        # module may be listed twice): each submodule's mode, requires_grad and device.
        self._teachers_were = [
            (
                module_modes(net),
                [(p, p.requires_grad, p.device) for p in net.parameters()],
                [(b, b.device) for b in net.buffers()],
            )
            for net in teachers
        ]
        # A plain list, not a ModuleList: the teachers stay out of the optimizer, the
        # checkpoints and DDP's buckets (as kd's teacher does).
        self.teacher_nets: list[nn.Module] = [net.eval().requires_grad_(False) for net in teachers]

    def teachers(self) -> dict[str, nn.Module]:
        return {f"teacher{k}": net for k, net in enumerate(self.teacher_nets, start=1)}

    def _apply(self, fn, recurse=True):  # mirrors nn.Module._apply: the teachers move too
        for net in self.teacher_nets:
            net._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> EnsembleDistillation:
        super().train(mode)
        for net in self.teacher_nets:
            net.eval()
        return self

    def close(self) -> None:
        """Give every teacher back as it came: train/eval modes, ``requires_grad``, device."""
        for net, (modes, params, buffers) in reversed(
            list(zip(self.teacher_nets, self._teachers_were, strict=True))
        ):
            devices = {d for _, _, d in params} | {d for _, d in buffers}
            if len(devices) == 1:  # moved with the method: move it back
                net.to(devices.pop())
            for param, requires_grad, _ in params:
                param.requires_grad_(requires_grad)
            restore_modes(modes)

    def teacher_logits(self, batch: Batch, out: Outputs) -> list[Tensor]:
        """Each teacher's logits on the source rows: the engine's, or run here on its own."""
        found = []
        for role, net in self.teachers().items():
            tap = Tap(role, "logits")
            if out.has(tap, "source"):
                found.append(out.get(tap, "source"))
            else:
                with torch.no_grad():
                    found.append(net(batch.x))
        return found

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        teachers = self.teacher_logits(batch, out)
        soft = ensemble_soft_loss(
            out.logits, teachers, self.weights, self.temperature, self.average
        )
        if batch.y is None or self.alpha == 1.0:
            return {"ensemble": soft}
        hard = F.cross_entropy(out.logits, batch.y)
        return {"ensemble": self.alpha * soft, "ce": (1.0 - self.alpha) * hard}
