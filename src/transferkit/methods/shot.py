"""SHOT (Liang et al., ICML 2020): source hypothesis transfer, without the source data.

The source model's head (the hypothesis) is frozen; its feature extractor is trained on
unlabelled target rows with information maximisation, ``mean_i H(p_i) - H(mean_i p_i)``
(confident and diverse predictions, :func:`~transferkit.losses.information_maximization`),
plus ``beta`` times the cross-entropy with self-supervised pseudo-labels recomputed at the
start of every epoch: class centroids of the target features weighted by the predictions,
then nearest-centroid labels by cosine distance, refined ``rounds`` times
(:func:`~transferkit.losses.shot_cluster_labels`). The paper's ``beta = 0.3`` (0.1 on digits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import information_maximization, shot_cluster_labels
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    TrainInfo,
    check_count_at_most,
    check_flag,
    check_nonnegative,
)
from transferkit.methods.registry import METHODS
from transferkit.models.features import features_and_logits

# k-means rounds over the whole target set at each epoch start: SHOT does one (the default);
# the labels settle in a few, so 100 is generous, and rounds=10**6 would hang the epoch.
MAX_ROUNDS = 100
ROUNDS_WHY = "k-means rounds per epoch; SHOT uses 1 and labels settle within a few"


@METHODS.register("shot", "source-free: frozen source head, information maximisation + "
                  "clustering pseudo-labels (Liang et al., ICML 2020)")
class SHOT(Method):
    name = "shot"
    source_free = True
    needs_features = True  # the head's input: frozen head, clustered features

    def __init__(
        self,
        beta: float = 0.3,
        diversity_weight: float = 1.0,
        rounds: int = 1,
        freeze_head: bool = True,
    ) -> None:
        super().__init__()
        self.beta = check_nonnegative("beta", beta)
        self.diversity_weight = check_nonnegative("diversity_weight", diversity_weight)
        self.rounds = check_count_at_most(self.name, "rounds", rounds, MAX_ROUNDS, ROUNDS_WHY, 0)
        self.freeze_head = check_flag(self.name, "freeze_head", freeze_head)
        self._student: list[nn.Module] = []  # not registered: the engine owns the student
        self._frozen: list[nn.Parameter] = []
        self._x: Tensor | None = None
        self._layer: str | None = None
        self._device = torch.device("cpu")
        self.labels: Tensor | None = None
        self._changed = 0.0

    def setup(self, info: TrainInfo) -> None:
        if info.student is None or info.x is None or info.feature_layer is None:
            raise ConfigError("shot needs the student, its head and the target rows")
        self._student, self._x, self._layer = [info.student], info.x, info.feature_layer
        self._device = info.device
        if self.freeze_head and not self._frozen:
            head = dict(info.student.named_modules())[info.feature_layer]
            self._frozen = [p for p in head.parameters() if p.requires_grad]
            for param in self._frozen:
                param.requires_grad_(False)
            if not any(p.requires_grad for p in info.student.parameters()):
                for param in self._frozen:  # given back: the run is refused
                    param.requires_grad_(True)
                self._frozen = []
                raise ConfigError(
                    f"shot freezes the classifier ({info.feature_layer!r}) and trains the "
                    "layers below it, but none of them is trainable (frozen before the run?); "
                    "unfreeze the backbone, or give shot freeze_head=false")

    def start_epoch(self, epoch: int) -> None:
        """Pseudo-labels for every target row from the current model (same on every rank)."""
        assert self._x is not None, "call setup() first"
        features, logits = features_and_logits(self._student[0], self._x, self._layer,
                                               self._device)
        labels = shot_cluster_labels(features, logits.softmax(1), self.rounds)
        self._changed = float((labels != logits.argmax(1)).float().mean())
        self.labels = labels

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        im = information_maximization(out.logits, self.diversity_weight)
        if self.beta == 0 or self.labels is None or batch.index is None:
            return {"im": im}
        labels = self.labels[batch.index.cpu()].to(out.logits.device)
        return {"im": im, "ce": self.beta * F.cross_entropy(out.logits, labels)}

    def metrics(self) -> dict[str, float]:
        """Share of target rows whose cluster label differs from the model's own guess."""
        return {"relabelled": self._changed}

    def close(self) -> None:
        for param in self._frozen:
            param.requires_grad_(True)
        self._frozen = []
