"""What a teacher trained elsewhere expects, and the batch converted to it (``--teacher-input``).

A teacher from another project usually wants other inputs than transferkit's data give:
ImageNet's per-channel mean/std, 3 channels where the data has 1, 32x32 where it has 28x28.
:class:`TeacherInput` states that convention on the raw scale (pixel values in [0, 1]):

    teacher input = (resize(channels(raw)) - mean[c]) / std[c],  raw = stored * std_d + mean_d

where ``mean_d, std_d`` is the data's own convention (:class:`InputSpec`). Only the teacher
sees the converted batch; the student keeps the data as it is, so teacher and student may
even see different sizes. A size or channel count that cannot match the teacher (its recorded
input shape, or an ONNX graph's fixed dimensions) is refused in one line before training.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.data.inputs import INPUTS_ATTR, InputConverted, InputSpec, model_inputs
from transferkit.errors import ConfigError

KEYS = ("mean", "std", "size", "channels", "range")
MAX_SIDE = 4096  # a larger side is a typo, and would allocate gigabytes per batch
# ITU-R BT.601 luma: 3 channels -> 1 the way image libraries convert to greyscale.
LUMA = (0.299, 0.587, 0.114)
EXAMPLE = "'mean=[0.1307],std=[0.3081],size=28'"


def _error(message: str) -> ConfigError:
    return ConfigError(f"--teacher-input: {message} (e.g. {EXAMPLE})")


def _numbers(name: str, value: Any) -> tuple[float, ...]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or len(values) > MAX_SIDE or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        for v in values
    ):
        raise _error(f"{name} must be a finite number or a list of them, got {value!r}")
    return tuple(float(v) for v in values)


def _side(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
        0 < value <= MAX_SIDE
    ):
        raise _error(f"{name} must be a whole number from 1 to {MAX_SIDE}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TeacherInput:
    """``mean``/``std`` per channel (one value: every channel) on raw values in [0, 1];
    ``size`` (height, width) to resize images to; ``channels`` to repeat 1 -> 3 or take the
    luma of 3 -> 1. ``None`` keeps the data's size and channels."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    size: tuple[int, int] | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        mean, std = _numbers("mean", self.mean), _numbers("std", self.std)
        if any(s <= 0 for s in std):
            raise _error(f"std must be positive, got {list(std)}")
        if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
            raise _error(f"mean has {len(mean)} values and std {len(std)}; give one per "
                         "channel for both, or one value for all")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.size is not None:
            size = self.size
            sides = list(size) if isinstance(size, list | tuple) else [size, size]
            if len(sides) != 2:
                raise _error(f"size is one side or [height, width], got {size!r}")
            object.__setattr__(self, "size", (_side("size", sides[0]), _side("size", sides[1])))
        if self.channels is not None:
            object.__setattr__(self, "channels", _side("channels", self.channels))
        per_channel = max(len(mean), len(std))
        if self.channels is not None and per_channel > 1 and per_channel != self.channels:
            raise _error(f"channels={self.channels} but mean/std give {per_channel} values")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for config.yaml (a resume with another conversion is refused)."""
        return {"mean": list(self.mean), "std": list(self.std),
                "size": None if self.size is None else list(self.size),
                "channels": self.channels}

    def describe(self) -> str:
        parts = [f"mean {_list(self.mean)}", f"std {_list(self.std)}"]
        if self.size is not None:
            parts.append(f"size {self.size[0]}x{self.size[1]}")
        if self.channels is not None:
            parts.append(f"{self.channels} channels")
        return ", ".join(parts)


def _list(values: Sequence[float]) -> str:
    return f"{values[0]:g}" if len(values) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _split_top_level(text: str) -> list[str]:
    """``mean=[0.5,0.5],size=28`` -> ``['mean=[0.5,0.5]', 'size=28']`` (commas in brackets
    stay)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
            if depth < 0:
                raise _error(f"unbalanced brackets in {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise _error(f"unbalanced brackets in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _value(key: str, text: str) -> Any:
    try:
        return json.loads(text.replace("(", "[").replace(")", "]"))
    except ValueError:
        raise _error(f"{key}={text!r} is not a number or a list of numbers") from None


def parse_teacher_input(value: str | Mapping[str, Any] | TeacherInput) -> TeacherInput:
    """A TeacherInput from ``'mean=[...],std=[...],size=28'``, a mapping of the same keys, or
    itself. ``range=[lo, hi]`` is the same as ``mean=-lo/(hi-lo), std=1/(hi-lo)``."""
    if isinstance(value, TeacherInput):
        return value
    if isinstance(value, str):
        fields: dict[str, Any] = {}
        for part in _split_top_level(value):
            key, sep, text = part.partition("=")
            key = key.strip()
            if not sep:
                raise _error(f"{part!r} is not KEY=VALUE")
            if key in fields:
                raise _error(f"{key} is given twice")
            fields[key] = _value(key, text.strip())
    elif isinstance(value, Mapping):
        fields = dict(value)
    else:
        raise _error(f"expected text or a mapping, got {type(value).__name__}")
    if not fields:
        raise _error("nothing given")
    unknown = sorted(set(fields) - set(KEYS))
    if unknown:
        raise _error(f"unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    if "range" in fields:
        if "mean" in fields or "std" in fields:
            raise _error("give range or mean/std, not both")
        bounds = _numbers("range", fields.pop("range"))
        if len(bounds) != 2 or not bounds[1] > bounds[0]:
            raise _error(f"range is [low, high] with high > low, got {list(bounds)}")
        low, high = bounds
        fields["mean"], fields["std"] = -low / (high - low), 1.0 / (high - low)
    fields = {k: v for k, v in fields.items() if v is not None}
    return TeacherInput(**fields)


class TeacherInputConverted(InputConverted):
    """The teacher fed batches in the data's convention, converted to ``spec`` first.

    ``state_dict`` is the teacher's own (inherited): digests name the same weights.
    """

    def __init__(self, model: nn.Module, spec: TeacherInput, data: InputSpec | None,
                 data_shape: tuple[int, ...]) -> None:
        raw = data or InputSpec()
        super().__init__(model, raw, InputSpec(shape=converted_shape(spec, data_shape)))
        self.spec = spec
        self.data_shape = tuple(data_shape)
        image, vector = len(data_shape) == 3, len(data_shape) == 1
        assert self.target.shape is not None
        channels = self.target.shape[0] if image else data_shape[0] if vector else 1
        shape = (1, -1, 1, 1) if image else (1, -1) if vector else (1,) * (len(data_shape) + 1)
        self.register_buffer("_mean", _per_channel(spec.mean, channels).view(shape),
                             persistent=False)
        self.register_buffer("_std", _per_channel(spec.std, channels).view(shape),
                             persistent=False)
        setattr(self, INPUTS_ATTR, InputSpec(raw.mean, raw.std, self.data_shape))

    def forward(self, x: Tensor) -> Tensor:
        x = x.mul(self.source.std).add_(self.source.mean)  # raw values in [0, 1]
        if x.dim() == 4:
            want = self.target.shape
            assert want is not None
            if x.shape[1] == 1 and want[0] > 1:
                x = x.expand(-1, want[0], -1, -1)
            elif x.shape[1] == 3 and want[0] == 1:
                weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                x = (x * weights).sum(dim=1, keepdim=True)
            if tuple(x.shape[2:]) != tuple(want[1:]):
                shrink = want[1] < x.shape[2] or want[2] < x.shape[3]
                x = F.interpolate(x, size=tuple(want[1:]), mode="bilinear",
                                  align_corners=False, antialias=shrink)
        return self.model((x - self._mean) / self._std)

    def extra_repr(self) -> str:
        return self.spec.describe()


def _per_channel(values: tuple[float, ...], channels: int) -> Tensor:
    if len(values) not in (1, channels):
        raise _error(f"mean/std give {len(values)} values for {channels} channels")
    return torch.tensor(values if len(values) == channels else values * channels,
                        dtype=torch.float32)


def converted_shape(spec: TeacherInput, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """One input's shape as the teacher sees it; size/channels apply to C x H x W images."""
    shape = tuple(data_shape)
    if len(shape) != 3:
        if spec.size is not None or spec.channels is not None:
            raise _error(f"size and channels apply to images (C x H x W); the data gives inputs "
                         f"of shape {_shape(shape)}")
        per_feature = shape[0] if len(shape) == 1 else 1
        if max(len(spec.mean), len(spec.std)) not in (1, per_feature):
            raise _error(f"mean/std give {max(len(spec.mean), len(spec.std))} values for "
                         f"inputs of shape {_shape(shape)}; give one value, or one per feature "
                         "of a feature vector")
        return shape
    channels, height, width = shape
    want = spec.channels or channels
    if want != channels and {want, channels} != {1, 3}:
        raise _error(f"the data has {channels} channels and the teacher wants {want}; only "
                     "1 -> 3 (repeat) and 3 -> 1 (luma) are converted")
    size = spec.size or (height, width)
    if max(len(spec.mean), len(spec.std)) not in (1, want):
        raise _error(f"mean/std give {max(len(spec.mean), len(spec.std))} values for {want} "
                     "channels; give one per channel or one for all")
    return (want, *size)


def _shape(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def declared_shape(teacher: nn.Module) -> tuple[int | None, ...] | None:
    """The input shape the teacher states: its recorded convention, else an ONNX graph's
    dimensions (None where symbolic). None when it states nothing."""
    spec = model_inputs(teacher)
    if spec is not None and spec.shape is not None:
        return spec.shape
    dims = getattr(teacher, "input_dims", None)
    return None if dims is None else tuple(dims)


def check_declared(teacher: nn.Module, shape: tuple[int, ...], how: str) -> None:
    """Refuse a batch shape the teacher says it cannot take (channels, size), in one line."""
    declared = declared_shape(teacher)
    if declared is None:
        return
    fits = len(declared) == len(shape) and all(
        d is None or d == s for d, s in zip(declared, shape, strict=True))
    if not fits:
        fix = ("set --teacher-input size=... / channels=... to its shape" if len(declared) == 3
               else "give the teacher data of its input shape")
        raise ConfigError(f"the teacher expects inputs {_shape(declared)} but {how} gives "
                          f"{_shape(shape)}; {fix}")


def with_teacher_input(
    teacher: nn.Module, spec: TeacherInput, data: InputSpec | None,
    data_shape: tuple[int, ...],
) -> tuple[nn.Module, str]:
    """The teacher behind the conversion, and one line for the run record."""
    wrapped = TeacherInputConverted(teacher, spec, data, data_shape)
    assert wrapped.target.shape is not None
    check_declared(teacher, wrapped.target.shape, f"--teacher-input ({spec.describe()})")
    source = "unknown, taken as raw [0, 1]" if data is None else data.scale()
    line = (f"converted by --teacher-input from {_shape(data_shape)} in {source} to "
            f"{_shape(wrapped.target.shape)} with {spec.describe()}")
    recorded = model_inputs(teacher)
    if recorded is not None:
        line += f" (the teacher's own record, {recorded.describe()}, is overridden)"
    return wrapped, line
