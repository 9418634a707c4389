"""Confusion matrix of a model's predictions on a test split, and its picture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from transferkit.report.plotting import new_figure, png_bytes

ANNOTATE_UP_TO = 20  # classes; beyond that the counts would not be legible


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """``C[i, j]``: rows of true class ``i`` predicted as ``j`` (int64, classes x classes)."""
    y_true, y_pred = y_true.long().flatten(), y_pred.long().flatten()
    codes = y_true * num_classes + y_pred.clamp(0, num_classes - 1)
    return torch.bincount(codes, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def confusion_png(matrix: Tensor, title: str, labels: Sequence[Any] | None = None) -> bytes:
    """Colour: the share of each true class (rows sum to 1); numbers: the counts."""
    classes = matrix.shape[0]
    counts = matrix.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = min(9.0, 2.2 + 0.38 * classes)
    figure = new_figure(size + 0.9, size)
    ax = figure.subplots()
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("predicted class", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    if classes <= ANNOTATE_UP_TO:
        names = [str(v)[:8] for v in labels] if labels is not None else [
            str(i) for i in range(classes)]
        ax.set_xticks(range(classes), names, fontsize=7, rotation=90 if classes > 10 else 0)
        ax.set_yticks(range(classes), names, fontsize=7)
        for i in range(classes):
            for j in range(classes):
                value = int(matrix[i, j])
                if value:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=6,
                            color=colour)
    return png_bytes(figure)
