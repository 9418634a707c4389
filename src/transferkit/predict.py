"""Predictions of a trained model on data, row by row: what a user of an adapted model wants
for the field data that has no labels.

The rows: a data file's every row in file order (read with ``test=all`` unless the options
say otherwise), an image folder's every image (named by its path), a pair's target, or a
registered dataset's training split (``split="test"`` for its test split). Each row gets the
predicted class (its original label when the data records one, e.g. ``"dog"``), the softmax
confidence of that class and, on request, every class's probability. No label is read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.data import Dataset, DomainPair
from transferkit.data.inputs import CLASSES_ATTR
from transferkit.errors import CheckpointError, ConfigError
from transferkit.files import write_text

SPLITS = ("train", "test")


@dataclass
class Predictions:
    """One entry per row: ``rows`` (names or indices), ``labels`` (predicted class names),
    ``predicted`` (class indices), ``confidence`` and ``probs`` (rows x classes)."""

    data: str
    rows: list[str]
    classes: list[Any]
    predicted: Tensor
    confidence: Tensor
    probs: Tensor

    @property
    def labels(self) -> list[Any]:
        return [self.classes[i] for i in self.predicted.tolist()]

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[Any, int]:
        """How many rows each class was predicted for (a collapse shows as one large count)."""
        found = torch.bincount(self.predicted, minlength=len(self.classes)).tolist()
        return {name: n for name, n in zip(self.classes, found, strict=True) if n}

    def to_csv(self, path: str | Path, probs: bool = False) -> Path:
        """``row,class,confidence`` (and ``p_<class>`` per class with ``probs``), written
        atomically: a kill leaves the old file or the new one, never half of it."""
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(["row", "class", "confidence", *([f"p_{c}" for c in self.classes]
                                                      if probs else [])])
        for i, (row, label) in enumerate(zip(self.rows, self.labels, strict=True)):
            extra = [f"{p:.6g}" for p in self.probs[i].tolist()] if probs else []
            out.writerow([row, label, f"{float(self.confidence[i]):.6g}", *extra])
        target = check_out(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"predict --out {target}: cannot make its folder "
                              f"({exc.strerror or exc}); give a writable .csv path") from None
        write_text(target, text.getvalue())
        return target


def check_out(path: str | Path, reads: Sequence[str | Path] = ()) -> Path:
    """The CSV path ``predict`` may write (checked before any work): not a folder, not named
    like one (``out/``), not under a file, and none of the files it ``reads`` (the data, the
    model and its run's records) nor inside a data folder it reads."""
    text = str(path)
    target = Path(text)
    _check_not_read(target, reads)
    if not text.strip():
        raise ConfigError("predict --out is empty; give a .csv file name, e.g. predictions.csv")
    if target.is_dir() or text.endswith(("/", "\\")):
        raise ConfigError(f"predict --out {text!r} is a folder; give a .csv file name, e.g. "
                          f"{target / 'predictions.csv'}")
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"predict --out {target}: {parent} is a file, not a folder")
    return target


def _check_not_read(target: Path, reads: Sequence[str | Path]) -> None:
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):  # a link loop or a name too long: the write says so
        return
    for read in reads:
        source = Path(read)
        try:
            if not source.exists():
                continue
            same = source.resolve()
        except (OSError, RuntimeError):
            continue
        if same == resolved or (source.is_dir() and same in resolved.parents):
            what = "inside the folder" if same != resolved else "the file"
            raise ConfigError(f"predict --out {target} is {what} {source} that it reads; "
                              "give another file name, e.g. predictions.csv")


def rows_to_predict(data: Dataset | DomainPair, split: str) -> tuple[Dataset, str]:
    """The dataset whose rows are predicted (a pair's target) and which split of it."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return (data.target if isinstance(data, DomainPair) else data), split


def predictions(model: nn.Module, dataset: Dataset, x: Tensor, split: str,
                device: torch.device, batch_size: int) -> Predictions:
    """Softmax of ``model`` on ``x`` (the split's inputs, already in the model's convention)."""
    from transferkit.engine.evaluate import predict as logits_of

    with torch.no_grad():
        logits = logits_of(model, x, device, batch_size).float()
    check_finite_outputs(model, logits, dataset.name)
    probs = torch.softmax(logits, dim=1)
    confidence, predicted = probs.max(dim=1)
    names = dataset.row_names if split == "train" else None
    rows = list(names) if names is not None else [str(i) for i in range(len(x))]
    recorded = getattr(model, CLASSES_ATTR, None)  # the names the model trained on
    indices = list(range(logits.shape[1]))
    own = list(dataset.classes) if dataset.classes is not None else indices
    if own == indices and isinstance(recorded, list) and len(recorded) == len(indices):
        own = recorded  # data without names of its own (a lone file without labels)
    classes = own
    return Predictions(dataset.name, rows, classes, predicted, confidence, probs)


def check_finite_outputs(model: nn.Module, logits: Tensor, data: str) -> None:
    """Refuse outputs that are NaN or infinite (softmax would make them "nan" confidences and
    argmax class 0) in one line: the weights are damaged or diverged, or the rows overflow."""
    bad = int((~torch.isfinite(logits)).any(dim=1).sum()) if logits.numel() else 0
    if not bad:
        return
    damaged = any(t.is_floating_point() and not bool(torch.isfinite(t).all())
                  for t in [*model.parameters(), *model.buffers()])
    why = ("its weights hold NaN or infinite values (a damaged or diverged model): use another "
           "checkpoint or train it again") if damaged else (
           "its weights are finite, so the rows overflow it (values far larger than those it "
           "was trained on?) or the model is damaged or diverged")
    raise CheckpointError(f"the model's outputs are not finite (NaN or inf) for {bad} of "
                          f"{len(logits)} rows of {data}: {why}")
