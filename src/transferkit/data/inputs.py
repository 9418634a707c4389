"""Input conventions: on which scale a dataset stores its inputs and a saved model expects them.

A model trained on inputs in [0, 1] and fed the same images in [-1, 1] loses accuracy without
any error, so every registered dataset records its convention as an :class:`InputSpec` and
every saved model keeps the one of its training data. Where both are known the toolkit converts
the data to the model's convention (or, for a teacher, wraps it in :class:`InputConverted`);
where the shapes differ it refuses in one line. Data built by hand without ``inputs`` has an
unknown convention: it is used as given, and no mismatch can be detected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from transferkit.errors import ConfigError, DataError

# The attribute ``load_model`` sets on the modules it returns (an InputSpec or None).
INPUTS_ATTR = "transferkit_inputs"
# The input shape a loaded model was trained on, set even when its convention is unknown
# (a float .npz records none): a model is never fed inputs of another shape.
SHAPE_ATTR = "transferkit_input_shape"
CLASSES_ATTR = "transferkit_classes"  # a loaded model's class names, when its data had them
# The feature normalisation (a transferkit.data.normalize.Normalization) fitted on the rows a
# model trained on, when its data was read with ``normalize``: its predictions reuse it.
NORMALIZATION_ATTR = "transferkit_normalization"
# The CSV header names a model trained on: {"features": [...], "label": name or None}, so its
# predictions read a field file's columns by name, in any order.
COLUMNS_ATTR = "transferkit_columns"
# The image-folder read options a model's training images were read with, those the user gave
# ({"size": 32, "channels": 3}, either key alone): its predictions read a field folder alike.
IMAGE_READ_ATTR = "transferkit_image_read"
# Set on an exported file whose graph applies the training normalisation to raw rows.
RAW_ROWS_ATTR = "transferkit_takes_raw_rows"


def check_raw_rows(model: nn.Module, data: Any, who: str) -> None:
    """An exported graph that normalises raw rows itself must not get normalised ones (they
    would be normalised twice)."""
    if not getattr(model, RAW_ROWS_ATTR, False):
        return
    sides = [data.source, data.target] if hasattr(data, "target") else [data]
    if any(getattr(side, "normalization", None) is not None for side in sides):
        student = (" (the student then trains on raw rows too; for a student on normalised "
                   "rows, give the exported run's model.pt as the teacher: it is fed them as in "
                   "its training)") if who == "the teacher" else ""
        raise DataError(f"{who} normalises raw rows in its graph (an export of a --normalize "
                        f"run), and {data.name} is read normalised: read it without --normalize"
                        f"{student}")


def _num(value: float) -> str:
    return f"{value:g}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class InputSpec:
    """Stored value = ``(raw - mean) / std``, where raw pixel or feature values lie in [0, 1].

    ``mean 0, std 1`` is [0, 1] itself (the standalone datasets); ``mean 0.5, std 0.5`` is
    [-1, 1] (the domain pairs). ``shape`` is one input's shape; a Dataset fills it when None.
    """

    mean: float = 0.0
    std: float = 1.0
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
            ):
                raise DataError(f"InputSpec {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.std <= 0:
            raise DataError(f"InputSpec std must be positive, got {self.std:g}")
        if self.shape is not None:
            dims = tuple(self.shape) if isinstance(self.shape, tuple | list) else None
            if not dims or not all(
                isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
                for d in dims
            ):
                raise DataError(
                    f"InputSpec shape must be a tuple of positive ints, got {self.shape!r}"
                )
            object.__setattr__(self, "shape", tuple(int(d) for d in dims))

    @property
    def range(self) -> tuple[float, float]:
        """Where raw values 0 and 1 land once stored."""
        return (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std

    def scale(self) -> str:
        """E.g. ``[0, 1]`` or ``[-1, 1] (mean 0.5, std 0.5)``."""
        lo, hi = self.range
        text = f"[{_num(lo)}, {_num(hi)}]"
        if (self.mean, self.std) != (0.0, 1.0):
            text += f" (mean {_num(self.mean)}, std {_num(self.std)})"
        return text

    def describe(self) -> str:
        """E.g. ``1x28x28 in [0, 1]``."""
        where = f"in {self.scale()}"
        return where if self.shape is None else f"{_shape(self.shape)} {where}"

    def same_scale(self, other: InputSpec) -> bool:
        return (self.mean, self.std) == (other.mean, other.std)

    def convert(self, x: Tensor, to: InputSpec) -> Tensor:
        """``x`` stored in this convention, stored in ``to``'s instead (a new tensor)."""
        return x.mul(self.std).add_(self.mean).sub_(to.mean).div_(to.std)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only: model files are read with ``torch.load(weights_only=True)``."""
        shape = None if self.shape is None else list(self.shape)
        return {"shape": shape, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, record: Any) -> InputSpec:
        """The inverse of :meth:`to_dict`; a malformed record raises DataError."""
        if not isinstance(record, Mapping) or not {"mean", "std"} <= set(record) or not set(
            record
        ) <= {"shape", "mean", "std"}:
            raise DataError(f"input convention {record!r} is not a dict of shape, mean and std")
        shape = record.get("shape")
        return cls(record["mean"], record["std"], None if shape is None else tuple(shape))


def model_inputs(model: nn.Module) -> InputSpec | None:
    """The convention a module records (set by ``load_model``), None when unknown."""
    spec = getattr(model, INPUTS_ATTR, None)
    return spec if isinstance(spec, InputSpec) else None


def needs_conversion(
    model: InputSpec | None,
    data: InputSpec | None,
    data_shape: tuple[int, ...],
    data_name: str,
    who: str,
) -> bool:
    """Whether the data must be converted to the model's convention before the model sees it.

    False when either convention is unknown or both agree. A shape that differs from the one
    the model was trained on raises ConfigError (there is no safe conversion).
    """
    if model is None:
        return False
    if model.shape is not None and tuple(data_shape) != model.shape:
        gives = _shape(tuple(data_shape)) + ("" if data is None else f" in {data.scale()}")
        raise ConfigError(
            f"{who} expects inputs {model.describe()} but data {data_name!r} gives {gives}; "
            f"use data of its input shape {_shape(model.shape)}{_resize_hint(who, model.shape)}"
        )
    return data is not None and not data.same_scale(model)


def conversion_note(data: InputSpec, model: InputSpec) -> str:
    """One line saying how inputs were converted."""
    return f"converted from {data.scale()} to {model.scale()}"


def fit_teacher(
    teacher: nn.Module, data: InputSpec | None, shape: tuple[int, ...], data_name: str
) -> tuple[nn.Module, str]:
    """The teacher fed batches in the data's convention, and one line for the run record."""
    check_trained_shape(teacher, shape, data_name, "teacher")
    spec = model_inputs(teacher)
    if needs_conversion(spec, data, shape, data_name, "teacher"):
        assert spec is not None and data is not None
        return InputConverted(teacher, data, spec), conversion_note(data, spec)
    if spec is None:
        return teacher, "unknown (the teacher records no input convention); used as given"
    if data is None:
        return teacher, f"the teacher expects {spec.scale()}; the data's are unknown; used as given"
    return teacher, f"same as the data: {spec.scale()}"


def _resize_hint(who: str, shape: tuple[int, ...]) -> str:
    """For a teacher of square images: the conversion that resizes each batch for it."""
    if who != "teacher" or len(shape) != 3 or shape[1] != shape[2]:
        return ""
    return (f", or resize each batch for it: --teacher-input size={shape[2]},channels="
            f"{shape[0]} (teacher_input= in the API)")


def check_trained_shape(model: nn.Module, data_shape: tuple[int, ...], data_name: str,
                        who: str) -> None:
    """Refuse data of another shape than a loaded model was trained on, when the model records
    no input convention (with one, :func:`needs_conversion` checks the shape)."""
    shape = getattr(model, SHAPE_ATTR, None)
    if model_inputs(model) is None and shape is not None and tuple(data_shape) != tuple(shape):
        raise ConfigError(
            f"{who} was trained on inputs {_shape(tuple(shape))} but data {data_name!r} gives "
            f"{_shape(tuple(data_shape))}; use data of its input shape {_shape(tuple(shape))}"
            f"{_resize_hint(who, tuple(shape))}"
        )


def fit_data(model: nn.Module, data: Any, who: str) -> tuple[Any, str | None]:
    """``data`` (a Dataset or DomainPair) in the model's convention, with a note if converted."""
    check_trained_shape(model, data.input_shape, data.name, who)
    check_raw_rows(model, data, who)
    spec = model_inputs(model)
    if not needs_conversion(spec, data.inputs, data.input_shape, data.name, who):
        return data, None
    assert spec is not None
    return data.with_inputs(spec), _data_note(data, spec, who)


def fit_splits(
    model: nn.Module, data: Any, splits: dict[str, Any], who: str
) -> tuple[dict[str, Any], str | None]:
    """Like :func:`fit_data` for some of ``data``'s splits only (evaluation needs no copy of
    the training splits)."""
    check_trained_shape(model, data.input_shape, data.name, who)
    check_raw_rows(model, data, who)
    spec = model_inputs(model)
    if not needs_conversion(spec, data.inputs, data.input_shape, data.name, who):
        return splits, None
    assert spec is not None
    split_type = type(next(iter(splits.values())))
    converted = {
        name: split_type(data.inputs.convert(split.x, spec), split.y)
        for name, split in splits.items()
    }
    return converted, _data_note(data, spec, who)


def _data_note(data: Any, spec: InputSpec, who: str) -> str:
    return f"inputs of {data.name!r} {conversion_note(data.inputs, spec)}, as the {who} expects"


class InputConverted(nn.Module):
    """``model`` fed inputs in another convention: each batch is converted before it sees it.

    Distillation wraps a teacher in it so that the student trains in the data's convention.
    """

    def __init__(self, model: nn.Module, source: InputSpec, target: InputSpec) -> None:
        super().__init__()
        self.model = model
        self.source = source
        self.target = target
        setattr(self, INPUTS_ATTR, InputSpec(source.mean, source.std, target.shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.source.convert(x, self.target))

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The model's own: the wrapper adds no state, so digests name the same weights."""
        return self.model.state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return conversion_note(self.source, self.target)
