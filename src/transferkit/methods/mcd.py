"""MCD (Saito et al., CVPR 2018): maximum classifier discrepancy, three phases per step.

A second head ``F2`` (a fresh copy of the student's head ``F1``) reads the same features.
Per step: (A) features and both heads learn the source labels; (B) the heads alone learn the
source labels while *maximising* their discrepancy on target,
``CE_1 + CE_2 - d(F1, F2)``; (C) the feature extractor alone, ``num_k`` times, minimises
``d``, with ``d = mean |softmax(F1(f_t)) - softmax(F2(f_t))|``
(:func:`~transferkit.losses.classifier_discrepancy`). The student keeps ``F1``; ``F2`` is
saved with the method. Phase A's ``CE_1`` is the ``supervised`` term ``adapt`` adds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import classifier_discrepancy
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    Phase,
    TrainInfo,
    check_count_at_most,
    check_nonnegative,
)
from transferkit.methods.registry import METHODS
from transferkit.models.base import copy_module, eval_mode

# Phase C runs num_k times per step, each a forward and backward pass: the paper uses 4 on
# digits; 100 (25x that) is already far past any published setting, and num_k=10**6 would
# sit in the first step for hours with no progress shown.
MAX_NUM_K = 100
NUM_K_WHY = "generator steps per batch; the paper uses 4, more only slows every step"


@METHODS.register("mcd", "two heads, maximum classifier discrepancy in three phases, num_k "
                  "generator steps (Saito et al., CVPR 2018)")
class MCD(Method):
    name = "mcd"
    needs_features = True
    needs_target = True
    needs_labels = True

    def __init__(self, num_k: int = 4, trade_off: float = 1.0) -> None:
        super().__init__()
        self.num_k = check_count_at_most(self.name, "num_k", num_k, MAX_NUM_K, NUM_K_WHY)
        self.trade_off = check_nonnegative("trade_off", trade_off)
        self.head2: nn.Module | None = None
        self._heads: list[nn.Module] = []  # the student's head, not registered here
        self._phases: tuple[Phase, ...] = ()
        self._discrepancy: float | Tensor = 0.0

    def setup(self, info: TrainInfo) -> None:
        if info.student is None or info.feature_layer is None:
            raise ConfigError("mcd needs a student with a head (the layer the features feed)")
        modules = dict(info.student.named_modules())
        head = modules[info.feature_layer]
        self._heads = [head]
        if self.head2 is None:
            self.head2 = copy_module(head, fresh=True)
        self._check_classifier(info, head)
        prefix = f"model.{info.feature_layer}"
        body = tuple(f"model.{name}" for name, p in info.student.named_parameters()
                     if p.requires_grad and not (name + ".").startswith(info.feature_layer + "."))
        if not body:
            raise ConfigError("mcd needs trainable layers below the head; the student has none")
        own = f"methods.{self.name}.head2"
        self._phases = (
            Phase("source", trains=None),
            Phase("heads", trains=(prefix, own)),
            Phase("features", trains=body, repeat=self.num_k),
        )

    def _check_classifier(self, info: TrainInfo, head: nn.Module) -> None:
        """The copied layer is a second classifier only if it maps the feature vector to the
        logits; a middle layer or a convolution named as ``feature_layer`` would fail in the
        first step, deep in torch, or train a copy of a hidden layer as a "classifier"."""
        assert self.head2 is not None and info.feature_layer is not None
        features = torch.zeros(2, info.feature_dim or 1, device=info.device)
        try:
            with torch.no_grad(), eval_mode(self.head2):
                second = self.head2.to(info.device)(features)
            shape = tuple(second.shape) if isinstance(second, Tensor) else type(second).__name__
        except Exception as exc:
            shape = f"an error ({(str(exc).splitlines() or [''])[0][:120]})"
        if shape != (2, info.num_classes):
            raise ConfigError(
                f"mcd copies layer {info.feature_layer!r} ({type(head).__name__}) as its second "
                f"classifier, so it must map the {info.feature_dim}-value feature vector to the "
                f"{info.num_classes} logits; on 2 rows it gives {shape}; set feature_layer "
                "(--feature-layer) to the classifier layer")

    def phases(self) -> tuple[Phase, ...]:
        return self._phases

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert self.head2 is not None, "call setup() first"
        assert out.features is not None and out.target_features is not None
        second = self.head2(out.features)
        if out.phase == "source":  # F1's cross-entropy is the supervised term
            return {"ce2": F.cross_entropy(second, batch.y)}
        d = classifier_discrepancy(out.target_logits.softmax(1),
                                   self.head2(out.target_features).softmax(1))
        self._discrepancy = d.detach()  # read at metrics(): no sync per step
        if out.phase == "heads":
            ce = F.cross_entropy(out.logits, batch.y) + F.cross_entropy(second, batch.y)
            return {"ce": ce, "discrepancy": -self.trade_off * d}
        return {"discrepancy": self.trade_off * d}

    def metrics(self) -> dict[str, float]:
        """The two heads' discrepancy on the last target batch."""
        return {"discrepancy": float(self._discrepancy)}
