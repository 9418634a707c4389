"""ADDA (Tzeng et al., CVPR 2017): adversarial discriminative adaptation, in two stages.

Stage 1 (the first ``source_epochs`` epochs): the student learns the source labels (ADDA's
own cross-entropy; ``adapt`` adds no ``supervised`` beside it). Stage 2: a frozen copy of
the stage-1 model is the *source encoder*; the student becomes the *target encoder*,
initialised from it, and its head (the classifier) is no longer trained. Each step has two
phases: the discriminator ``D`` learns ``BCE(D(f_src(x_s)), 1) + BCE(D(f(x_t)), 0)``; then
the target encoder learns the inverted label ``BCE(D(f(x_t)), 1)`` (the GAN loss, not a
reversed gradient). During stage 1 the discriminator phase idles (a zero loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.methods.base import Batch, Method, Outputs, Phase, TrainInfo, check_count
from transferkit.methods.dann import build_discriminator, check_discriminator_spec, check_hidden
from transferkit.methods.registry import METHODS
from transferkit.models.base import copy_module, eval_mode
from transferkit.models.features import FeatureTap


@METHODS.register("adda", "two stages: source training, then a target encoder against a "
                  "discriminator with inverted labels, head fixed (Tzeng et al., CVPR 2017)")
class ADDA(Method):
    name = "adda"
    needs_features = True
    needs_target = True
    needs_labels = True
    replaces_supervised = True

    def __init__(self, source_epochs: int | None = None, hidden: int | list[int] = 500,
                 discriminator: nn.Module | str | None = None) -> None:
        super().__init__()
        self.source_epochs = None if source_epochs is None else check_count("source_epochs",
                                                                            source_epochs)
        self.hidden = check_hidden(hidden, self.name)
        # Not a registered submodule: a module given here is registered once, at setup,
        # as ``discriminator`` (no duplicate in the state_dict).
        object.__setattr__(self, "discriminator_spec", check_discriminator_spec(discriminator))
        self.discriminator: nn.Module | None = None
        self.source_encoder: nn.Module | None = None  # frozen; saved, so a resume keeps it
        self._tap: FeatureTap | None = None
        self._student: list[nn.Module] = []
        self._stage = 1
        self._domain_acc: float | Tensor = float("nan")

    def setup(self, info: TrainInfo) -> None:
        if info.student is None or info.feature_dim is None or info.feature_layer is None:
            raise ConfigError("adda needs a student with a head (the layer features feed)")
        epochs = info.epochs
        if self.source_epochs is None:
            self.source_epochs = max(1, epochs // 2)
        if self.source_epochs >= epochs:
            fix = ("adda trains in two stages (source, then target): give at least 2 epochs"
                   if epochs < 2 else "lower it or train more epochs")
            raise ConfigError(f"adda: source_epochs={self.source_epochs} leaves no epoch of "
                              f"{epochs} for adaptation; {fix}")
        self._student = [info.student]
        if self.discriminator is None:
            self.discriminator = build_discriminator(self.discriminator_spec, self.hidden,
                                                     info.feature_dim, self.name)
        if self.source_encoder is None:
            self.source_encoder = copy_module(info.student).requires_grad_(False)
            self._tap = FeatureTap(self.source_encoder, info.feature_layer, detach=True)

    def phases(self) -> tuple[Phase, ...]:
        return (Phase("discriminator", trains=(f"methods.{self.name}.discriminator",)),
                Phase("encoder", trains=("model",)))

    def start_epoch(self, epoch: int) -> None:
        """Stage 2 from epoch ``source_epochs``: freeze the stage-1 model as source encoder."""
        assert self.source_encoder is not None and self.source_epochs is not None
        stage = 1 if epoch < self.source_epochs else 2
        if stage == 2 and (self._stage == 1 and epoch == self.source_epochs):
            self.source_encoder.load_state_dict(self._student[0].state_dict())
        self._stage = stage

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert self.discriminator is not None and self.source_encoder is not None
        assert out.target_features is not None and self._tap is not None
        if self._stage == 1:
            if out.phase == "discriminator":  # idle: D waits for stage 2
                return {"idle": out.logits.sum() * 0.0}
            return {"ce": F.cross_entropy(out.logits, batch.y)}
        if out.phase == "discriminator":
            with torch.no_grad(), eval_mode(self.source_encoder):
                self.source_encoder(batch.x)
            source = self._tap.value
            assert source is not None
            d_source = self.discriminator(source)
            d_target = self.discriminator(out.target_features.detach())
            self._domain_acc = (((d_source > 0).float().mean()  # read at metrics()
                                 + (d_target < 0).float().mean()) / 2).detach()
            loss = (F.binary_cross_entropy_with_logits(d_source, torch.ones_like(d_source))
                    + F.binary_cross_entropy_with_logits(d_target, torch.zeros_like(d_target)))
            return {"discriminator": loss / 2}
        d_target = self.discriminator(out.target_features)
        return {"encoder": F.binary_cross_entropy_with_logits(d_target,
                                                              torch.ones_like(d_target))}

    def metrics(self) -> dict[str, float]:
        """The stage, and the discriminator's accuracy on the last batch (stage 2)."""
        return {"stage": float(self._stage), "domain_acc": float(self._domain_acc)}

    def close(self) -> None:
        if self._tap is not None:
            self._tap.remove()
