"""What the data file readers share: the record of what a reader found (:class:`_Raw`), how it
is asked to read (:class:`_Side`), arrays given in memory as one more thing to read
(:class:`InMemory`), and the wording of their messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import Tensor

from transferkit.data.inputs import InputSpec

UNIT = InputSpec(mean=0.0, std=1.0)  # image folders: pixels in [0, 1]


@dataclass
class _Raw:
    """What a reader found: inputs and labels as stored, before classes and splits."""

    name: str
    where: str  # the file or folder, for messages
    title: str  # its name, for the description
    x: Tensor
    labels: np.ndarray | None  # None: an unlabelled adaptation target
    x_test: Tensor | None = None
    labels_test: np.ndarray | None = None
    own_test: str = ""  # how to describe the file's own test split
    read_note: str = ""  # what reading left out or changed (unused test arrays, column order)
    image_note: str = ""  # image folders: "images 3x32x32" and resizing
    image_read: dict[str, int] | None = None  # image folders: the size/channels options given
    inputs: InputSpec | None = None
    columns: tuple[str, ...] | None = None  # a CSV's feature column names (its header)
    label_column: str | None = None  # the header name of a CSV's label column
    row_names: list[str] | None = None  # an image folder's training files, in row order
    test_row_names: list[str] | None = None  # and its test/ files


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _preview(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"{shown}, ... ({len(values)} in all)" if len(values) > limit else shown


@dataclass(frozen=True)
class _Side:
    """How a file is read: alone, or as a pair's source or target. Only a target may have no
    labels; a CSV target is recognised as unlabelled by the source's feature count."""

    role: str = "alone"  # "alone", "source", "target" or "predict" (inputs only)
    source_width: int | None = None  # a pair's flat source: its feature count

    @property
    def labels_optional(self) -> bool:
        return self.role == "target"


_ALONE = _Side()


@dataclass(frozen=True, eq=False)
class InMemory:
    """Arrays given in memory (``from_arrays``), read once as an ``.npz`` holding them is read,
    and kept to be built again wherever a file is read again: a pair's target with the
    source's classes, rows predicted or scored with a model's classes and normalisation."""

    name: str | None  # as given; None: named by its role ("arrays", "source", "target")
    raw: _Raw
    options: dict[str, Any]  # the data options given with the arrays (test, seed, normalize)
    sha256: str  # of the arrays' roles, dtypes, shapes and bytes, and of the options

    def label(self, role: str = "alone") -> str:
        """Its name: as given, else its role's (a pair's sides are "source" and "target")."""
        return self.name or (role if role in ("source", "target") else "arrays")

    def read(self, role: str = "alone") -> _Raw:
        """A copy of the record, named for ``role`` (building a dataset edits the record)."""
        name = self.label(role)
        where = f"from_arrays ({name})" if self.name or name != "arrays" else "from_arrays"
        return replace(self.raw, name=name, where=where, title=name)
