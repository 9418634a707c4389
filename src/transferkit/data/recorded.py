"""What a trained model recorded about its training data, checked against the data it meets:
its class names (output ``k`` means class ``names[k]``) and its CSV feature columns (input
``j`` is column ``features[j]``).

A teacher trained on ``cat, dog`` and given data of ``dog, fox`` would have its output 1
("dog") read as the data's class 1 ("fox"); a model trained on columns ``f3, f1, f0, f2``
and given rows of ``f0, f1, f2, f3`` would read every feature in the wrong place. Both ran
without a word; names that differ are now refused, and columns in another order are put in
the model's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.data.inputs import CLASSES_ATTR, COLUMNS_ATTR
from transferkit.errors import ConfigError

SHOWN = 6


def _some(names: Sequence[Any]) -> str:
    shown = ", ".join(map(str, names[:SHOWN]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "")


def check_class_names(model: nn.Module, names: Sequence[Any] | None, data_name: str,
                      who: str) -> None:
    """Refuse data whose class names (in class-index order) are not the ones the model
    recorded; nothing to check when either side has none (classes by index)."""
    recorded = getattr(model, CLASSES_ATTR, None)
    if not recorded or not names or list(recorded) == list(names):
        return
    same = sorted(map(str, recorded)) == sorted(map(str, names))
    why = ("the same names in another order" if same else
           "other names")
    raise ConfigError(
        f"the {who}'s outputs are the classes {_some(recorded)} (in that order), and "
        f"{data_name} has {why}: {_some(names)}; its output k would be read as the data's "
        f"class k. Use data labelled with the {who}'s classes, or a {who} trained on these")


class ColumnsReordered(nn.Module):
    """``model`` fed its feature columns in its own order: input ``j`` is the data's column
    ``index[j]`` (the data's names reordered to the model's recorded ones)."""

    def __init__(self, model: nn.Module, index: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("index", torch.as_tensor(list(index), dtype=torch.long),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.index_select(1, self.index.to(x.device)))


def fit_columns(model: nn.Module, columns: Sequence[str] | None, data_name: str,
                who: str) -> tuple[nn.Module, str | None]:
    """``model`` as it is when the data's feature columns are its recorded ones in its order
    (or either side names none); wrapped to reorder them when the same names come in another
    order (with a note); refused when the names differ."""
    record = getattr(model, COLUMNS_ATTR, None)
    features = record.get("features") if isinstance(record, dict) else None
    if not features or not columns or list(features) == list(columns):
        return model, None
    if sorted(features) != sorted(columns):
        missing = [n for n in features if n not in columns]
        extra = [n for n in columns if n not in features]
        raise ConfigError(
            f"the {who} was trained on the columns {_some(features)}, and {data_name} has "
            f"{_some(list(columns))}"
            + (f" (missing: {_some(missing)})" if missing else "")
            + (f" (not trained on: {_some(extra)})" if extra else "")
            + f"; give it data with the {who}'s columns")
    position = {name: i for i, name in enumerate(columns)}
    wrapped = ColumnsReordered(model, [position[name] for name in features])
    for attr in vars(model):  # what load_model set (classes, inputs...) stays readable
        if attr.startswith("transferkit_"):
            setattr(wrapped, attr, getattr(model, attr))
    return wrapped, (f"{data_name}'s columns reordered to the {who}'s training order "
                     f"({_some(features)})")
