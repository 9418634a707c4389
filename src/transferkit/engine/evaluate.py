"""Accuracy and loss of a classifier on in-memory data, reduced across ranks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.data.base import Split
from transferkit.engine import distributed
from transferkit.errors import DataError
from transferkit.models.base import eval_mode


@torch.no_grad()
def evaluate_split(
    model: nn.Module, split: Split, device: torch.device, batch_size: int = 1024
) -> dict[str, float]:
    """``accuracy``, mean cross-entropy ``loss``, ``n``, and the most predicted class with its
    share of the predictions (``top_class``, ``top_class_share``: a collapse shows as ~1);
    each rank scores its share of rows."""
    if len(split) and int(split.y.min()) < 0:  # a path that forgot Dataset.labelled
        raise DataError("these rows have no labels (an unlabelled target): there is no "
                        "accuracy to compute on them")
    with eval_mode(model):
        rows = torch.arange(len(split)).tensor_split(distributed.world_size())[distributed.rank()]
        totals = torch.zeros(3, dtype=torch.float64)
        predicted: Tensor | None = None
        for chunk in rows.split(batch_size):
            x = split.x[chunk].to(device, non_blocking=True)
            y = split.y[chunk].to(device, non_blocking=True)
            logits = model(x)
            guess = logits.argmax(1)
            counts = torch.bincount(guess.cpu(), minlength=logits.shape[1]).double()
            predicted = counts if predicted is None else predicted + counts
            totals += torch.tensor(
                [
                    (guess == y).sum().item(),
                    F.cross_entropy(logits, y, reduction="sum").item(),
                    len(chunk),
                ],
                dtype=torch.float64,
            )
        if predicted is None:  # this rank had no rows; the sum over ranks needs the same size
            classes = model(split.x[:1].to(device)).shape[1] if len(split) else 1
            predicted = torch.zeros(classes, dtype=torch.float64)
    correct, loss, count = distributed.all_reduce_sum(totals).tolist()
    predicted = distributed.all_reduce_sum(predicted)
    return {
        "accuracy": correct / max(count, 1),
        "loss": loss / max(count, 1),
        "n": int(count),
        "top_class": int(predicted.argmax()),
        "top_class_share": float(predicted.max()) / max(count, 1),
    }


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, device: torch.device, batch_size: int = 1024) -> Tensor:
    """Logits for ``x`` in eval mode, on the CPU."""
    with eval_mode(model):
        return torch.cat([model(chunk.to(device)).cpu() for chunk in x.split(batch_size)])
