"""FixMatch-style consistency (Sohn et al., NeurIPS 2020) on unlabelled target inputs.

The target batch as the engine gives it is the weak view; a strong view
(:func:`~transferkit.data.augment.strong_augment`: contrast, brightness, shift, cutout)
runs through the student once more. ``L = trade_off * mean_i m_i CE(strong_i, y_i)`` with
labels and mask from the weak view (``max softmax >= threshold``), no gradient through them.
``warmup`` (0 = off, the paper's setting) multiplies ``L`` by a ramp rising linearly to 1 over
that fraction of training, as :mod:`~transferkit.methods.pseudo_label` does: in adaptation
the network is trained from scratch, and its early confident target guesses are the least
reliable.
"""

from __future__ import annotations

from torch import Tensor, nn

from transferkit.data.augment import strong_augment
from transferkit.errors import ConfigError
from transferkit.losses import fixmatch_loss
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    TrainInfo,
    capped,
    check_count_at_most,
    check_fraction,
    check_nonnegative,
)
from transferkit.methods.registry import METHODS

# The strong view pads each image by ``shift`` pixels on every side: FixMatch translates by
# up to 30% of the side (67 px on 224 px images); past the image's own size the view is
# blank, and shift=10**6 would try to allocate terabytes for the padding.
MAX_SHIFT = 256
SHIFT_WHY = "pixels; FixMatch shifts by up to 30% of the side, and more than the side blanks it"


@METHODS.register("fixmatch", "weak/strong consistency on confident target predictions "
                  "(Sohn et al., NeurIPS 2020)")
class FixMatch(Method):
    name = "fixmatch"
    needs_target = True

    def __init__(
        self,
        trade_off: float = 1.0,
        threshold: float = 0.95,
        shift: int = 4,
        cutout: float = 0.5,
        jitter: float = 0.5,
        warmup: float = 0.0,
    ) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)
        self.threshold = check_fraction("threshold", threshold)
        self.shift = check_count_at_most(self.name, "shift", shift, MAX_SHIFT, SHIFT_WHY, 0)
        self.cutout = check_fraction("cutout", cutout)
        self.jitter = check_fraction("jitter", jitter)
        self.warmup = check_fraction("warmup", warmup)
        if self.cutout >= 1 or self.jitter >= 1:
            raise ConfigError(f"cutout and jitter must be below 1, got {cutout!r}, {jitter!r}")
        self._student: list[nn.Module] = []  # a plain list: not registered as a submodule
        self._mask_rate: float | Tensor = 0.0

    def setup(self, info: TrainInfo) -> None:
        if info.student is None:
            raise ConfigError("fixmatch needs the student network")
        shape = None if info.x_target is None else tuple(info.x_target.shape[1:])
        if shape is not None and len(shape) not in (1, 3):
            raise ConfigError(f"fixmatch's strong view needs images (C x H x W) or vectors, "
                              f"and the target inputs are {shape}; use pseudo_label instead")
        if shape is not None and len(shape) == 3 and self.shift >= min(shape[1:]):
            raise ConfigError(f"fixmatch: shift={self.shift} pixels is not below the target "
                              f"images' side ({shape[1]}x{shape[2]}), so the strong view could be "
                              f"blank; give at most {max(min(shape[1:]) * 3 // 10, 1)} (30% of "
                              "the side, as the paper)")
        self._student = [info.student]

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.target_logits is not None and batch.x_target is not None
        strong = strong_augment(batch.x_target, self.shift, self.cutout, self.jitter)
        loss, rate = fixmatch_loss(out.target_logits, self._student[0](strong), self.threshold)
        self._mask_rate = rate.detach() if isinstance(rate, Tensor) else rate  # no sync here
        ramp = capped(progress / self.warmup) if self.warmup > 0 else 1.0
        return {"fixmatch": self.trade_off * ramp * loss}

    def metrics(self) -> dict[str, float]:
        """The share of the last target batch confident enough to teach its strong view."""
        return {"mask_rate": float(self._mask_rate)}
