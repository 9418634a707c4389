"""The ``--data-opt`` options of data files (see :mod:`transferkit.data.files`): each checked
in :class:`FileOptions`, and refused where its format does not take it; and which paths are
data (:func:`is_data_path`) and of which kind."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from transferkit.data.datasets import DATASETS
from transferkit.data.normalize import STEPS as NORMALIZE_STEPS
from transferkit.errors import ConfigError, DataError

FEATURE_SUFFIXES = (".npz", ".mat", ".csv")
COMPRESSED_CSV = ".csv.gz"  # read as a .csv (csv_file decompresses what gzip wrote)
OPT = "--data-opt"  # how messages tell the user to set an option
# Which formats each format-specific option applies to, and how to say so.
_APPLIES = {
    "x": ({"npz", "mat", "csv"}, ".npz/.mat arrays and .csv columns"),
    "y": ({"npz", "mat", "csv"}, ".npz/.mat arrays and .csv columns"),
    "x_test": ({"npz", "mat"}, ".npz and .mat files"),
    "y_test": ({"npz", "mat"}, ".npz and .mat files"),
    "size": ({"images"}, "image folders"),
    "channels": ({"images"}, "image folders"),
}
_KIND_WORDS = {"npz": "an .npz file", "mat": "a .mat file", "csv": "a CSV file",
               "images": "an image folder", "memory": "arrays in memory"}


def _bad(name: str, value: Any, want: str, example: str) -> ConfigError:
    return ConfigError(
        f"data option {name} must be {want}, got {value!r}; e.g. {OPT} {name}={example}"
    )


def _name_option(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(name, value, "an array or column name", "NAME")
    if isinstance(value, numbers.Integral):
        return str(int(value))  # a CSV column index read as a number
    if name == "x" and isinstance(value, list | tuple) and value:
        return ",".join(str(_name_option(name, v)) for v in value)  # several CSV columns
    if not isinstance(value, str) or not value.strip():
        raise _bad(name, value, "an array or column name", "NAME")
    return value.strip()


MAX_IMAGE_SIDE = 4096  # as --teacher-input size: larger allocates gigabytes per batch


def _int_option(name: str, value: Any, minimum: int) -> int:
    number: int | None = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < minimum:
        raise _bad(name, value, f"an integer >= {minimum}", str(max(minimum, 1)))
    return number


def _test_option(value: Any) -> float | str | None:
    want = "a fraction in (0, 1), or 'all' (test on the training rows)"
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return "all"
        try:
            number = float(text)
        except ValueError:
            raise _bad("test", value, want, "0.2") from None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or not 0.0 < number < 1.0:
        raise _bad("test", value, want, "0.2")
    return number


def _normalize_option(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise _bad("normalize", value, "a list of steps", "log,zscore")
    steps: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _bad("normalize", value, "a list of steps", "log,zscore")
        step = item.strip().lower()
        if not step:
            continue
        if step not in NORMALIZE_STEPS:
            raise ConfigError(
                f"data option normalize: unknown step {item.strip()!r}; steps: "
                f"{', '.join(NORMALIZE_STEPS)}, applied in order (e.g. normalize=log,zscore)"
            )
        if step in steps:
            raise ConfigError(f"data option normalize: step {step!r} is given twice; give it once")
        steps.append(step)
    return tuple(steps)


@dataclass(frozen=True)
class FileOptions:
    """How to read a data file; see :mod:`transferkit.data.files`. Values are checked and normalised
    (numbers given as text are read, ``normalize`` may be ``"log,zscore"`` or a list)."""

    x: str | None = None
    y: str | None = None
    x_test: str | None = None
    y_test: str | None = None
    test: float | str | None = None
    seed: int = 0
    size: int | None = None
    channels: int | None = None
    normalize: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("x", "y", "x_test", "y_test"):
            object.__setattr__(self, name, _name_option(name, getattr(self, name)))
        object.__setattr__(self, "test", _test_option(self.test))
        object.__setattr__(self, "seed", _int_option("seed", self.seed, 0))
        if self.size is not None:
            size = _int_option("size", self.size, 1)
            if size > MAX_IMAGE_SIDE:
                raise _bad("size", self.size, f"an integer from 1 to {MAX_IMAGE_SIDE} (a larger "
                           "side is a typo: 5000 makes 25M inputs per image)", "224")
            object.__setattr__(self, "size", size)
        if self.channels is not None:
            channels = _int_option("channels", self.channels, 1)
            if channels not in (1, 3):
                raise _bad("channels", self.channels, "1 (grey) or 3 (RGB)", "3")
            object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "normalize", _normalize_option(self.normalize))
        given = [n for n in ("x_test", "y_test") if getattr(self, n) is not None]
        if given and self.test is not None:
            raise ConfigError(
                f"data options {given[0]} and test={self.test} both choose the test split: "
                f"{given[0]} names the file's test arrays, test splits the training rows; set one"
            )


FILE_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(FileOptions))


def parse_file_options(options: Mapping[str, Any] | None) -> FileOptions:
    """FileOptions from a dict such as ``{"x": "fts", "test": 0.2, "normalize": "log,zscore"}``.

    An unknown key or a bad value raises ConfigError naming it and the fix.
    """
    if options is None:
        return FileOptions()
    if isinstance(options, FileOptions):
        return options
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"data options must be a mapping of option names to values, got "
            f"{type(options).__name__}; valid options: {', '.join(FILE_OPTIONS)}"
        )
    unknown = sorted(str(k) for k in options if k not in FILE_OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown data option {unknown[0]!r}; valid options: {', '.join(FILE_OPTIONS)}"
        )
    return FileOptions(**{str(k): v for k, v in options.items()})


def is_data_path(spec: str) -> bool:
    """True for an existing folder, any name ending in .npz, .mat, .csv or .csv.gz, or any name
    with a path separator (existing or not, so that a missing file or folder gets a clear error,
    not "unknown dataset"). A folder that has the name of a registered dataset (e.g. ``mnist`` in
    the working directory) is not taken for data: write ``./mnist``.
    """
    text = str(spec)
    if text.lower().endswith((*FEATURE_SUFFIXES, COMPRESSED_CSV)):
        return True
    if text in DATASETS:
        return False
    return "/" in text or os.sep in text or Path(text).is_dir()


def _check_applicable(options: FileOptions, kinds: set[str], what: str) -> None:
    for name, (formats, words) in _APPLIES.items():
        if getattr(options, name) is not None and not kinds & formats:
            raise ConfigError(f"data option {name} applies to {words}, not to {what}; remove it")


def _kind(path: Path) -> str:
    """``npz``, ``mat``, ``csv`` (also ``.csv.gz``: gzip is what a user compresses a CSV with)
    or ``images``; a missing path or a file of another kind is refused in one line."""
    suffix = ".csv" if path.name.lower().endswith(COMPRESSED_CSV) else path.suffix.lower()
    if suffix in FEATURE_SUFFIXES:
        if not path.is_file():
            why = "is a folder" if path.is_dir() else "does not exist"
            raise DataError(f"data file {path} {why}; give the path of a {suffix} file")
        return suffix[1:]
    if path.is_dir():
        return "images"
    if path.exists():
        raise DataError(
            f"data file {path} has an unknown format; give a .npz, .mat or .csv (or .csv.gz) "
            "file or a folder of images with one sub-folder per class"
        )
    raise DataError(f"data path {path} does not exist")
