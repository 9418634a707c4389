"""Data held in memory: ``from_arrays(x, y)`` gives a :class:`Dataset` and ``pair(source,
target)`` a :class:`DomainPair`, for users who have arrays rather than files.

The arrays are read as an ``.npz`` holding them under the names ``x``, ``y``, ``x_test`` and
``y_test`` is read (one function turns either into the reader's record): the same checks (one
label per row, finite numbers, whole-number or string labels), images ``N x H x W`` or
channels-last made ``N x C x H x W`` and 8-bit ones scaled to [0, 1], classes the sorted
distinct labels, the held-out split ``test`` (else ``x_test``/``y_test``, else 20% of each
class), ``normalize`` and ``seed``. Messages start with ``from_arrays`` and name the argument.

NumPy arrays, torch tensors (on any device, with gradients or not: detached, copied to the
CPU) and nested lists are taken; a pandas object, a DataLoader, a dict or a path is refused
in one line with the call that gives an array (``frame.to_numpy()``: a frame's column names
and dtypes are the user's to choose, not guessed here). The arrays are copied, so changing
them later changes nothing.

Without ``y`` the inputs are an adaptation target (with ``x_test``/``y_test``: scored on those
rows only). Its classes are not known alone: ``pair`` gives it the source's, ``predict``,
``evaluate``, ``distill`` and source-free ``adapt`` the model's (they read it again as they
read a file); alone it shows the classes of ``y_test``, else one placeholder class.

A run records the sha256 of what was read from the arrays (the float32 inputs, the labels as
read, the 8-bit scaling) and of the options (``Dataset.origin.sha256``), so ``resume=True``
with other values is refused, and the same values in another container resume (int32 or int64
labels, float64 inputs of the same float32 values, a tensor or a list).

``name`` names the data in run records, where ``report``, ``export`` and a command-line resume
read data by name: a registered dataset's name, a data file's path or a name holding ``->``
(which joins a pair's sides) is refused, so no record points at other data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import data as torch_data

from transferkit.data.array_files import _Arrays, raw_from_arrays
from transferkit.data.base import Dataset, DomainPair, with_origin
from transferkit.data.datasets import DATASETS
from transferkit.data.file_options import (
    FILE_OPTIONS,
    FileOptions,
    _check_applicable,
    is_data_path,
    parse_file_options,
)
from transferkit.data.file_records import InMemory, _Raw
from transferkit.data.files import load_file_dataset, load_file_pair
from transferkit.errors import ConfigError, DataError

WHERE = "from_arrays"  # how messages about arrays being read begin
ROLES = ("x", "y", "x_test", "y_test")  # the argument names, and an .npz's names for them
OPTIONS = ("test", "seed", "normalize")  # the data options that apply to arrays


def _refusal(value: Any, argument: str) -> str | None:
    """Why ``value`` is not taken as an array, and the fix; None when it is taken."""
    kind = type(value)
    if isinstance(value, np.ndarray | np.generic | torch.Tensor | list | tuple):
        return None
    if kind.__module__.split(".")[0] == "pandas":  # not imported: it may not be installed
        return f"is a pandas {kind.__name__}; give its values with .to_numpy(), e.g. " \
            "from_arrays(frame[features].to_numpy(), frame['label'].to_numpy()) (a frame's " \
            "columns are yours to choose: none is dropped or converted for you)"
    if isinstance(value, torch_data.DataLoader | torch_data.Dataset):
        return f"is a torch {kind.__name__}; give the tensors themselves (a DataLoader's " \
            "batches joined: torch.cat([batch[0] for batch in loader]))"
    if isinstance(value, Mapping):
        return "is a mapping; give its arrays one by one: from_arrays(d['x'], d['y'])"
    if isinstance(value, str | os.PathLike):
        return "is a path or a name; a file is read by tk.load_data(path), or given as data=path"
    return f"is a {kind.__name__}; give a NumPy array, a torch tensor or a nested list"


def _refuse_mixed(value: list | tuple, argument: str) -> None:
    """A list NumPy made text of although it holds numbers too (``[1, "1", 2]`` would read
    1 and "1" as one class "1"): refused, as a MATLAB cell array mixing them is."""
    try:
        items = np.array(value, dtype=object).reshape(-1)
    except (TypeError, ValueError):
        return
    text = [v for v in items if isinstance(v, str | bytes)]
    numbers = [v for v in items if isinstance(v, int | float | np.number | np.bool_)]
    if text and numbers:
        raise DataError(f"{WHERE}: {argument} mixes strings and numbers (e.g. {text[0]!r} and "
                        f"{numbers[0]!r}), which NumPy would all make text ({numbers[0]!r} read "
                        f"as {str(numbers[0])!r}); give all numbers or all strings")


def _array(value: Any, argument: str) -> np.ndarray:
    """A NumPy copy of ``value`` (a tensor detached and moved to the CPU), so that later
    changes to the caller's array change nothing read from it."""
    why = _refusal(value, argument)
    if why is not None:
        raise DataError(f"{WHERE}: {argument} {why}")
    array = _array_of(value, argument)
    if isinstance(value, list | tuple) and array.dtype.kind in "US":
        _refuse_mixed(value, argument)
    return array


def _array_of(value: Any, argument: str) -> np.ndarray:
    """``value`` (taken by :func:`_refusal`) as a NumPy copy, or one line saying why not."""
    if np.ma.isMaskedArray(value) and np.ma.getmaskarray(value).any():
        raise DataError(f"{WHERE}: {argument} is a masked array with "
                        f"{int(np.ma.getmaskarray(value).sum())} masked values; fill them "
                        f"({argument}.filled(...)) or drop those rows")
    try:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
            if tensor.layout != torch.strided:  # sparse
                tensor = tensor.to_dense()
            if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16
                tensor = tensor.float()
            return np.array(tensor.resolve_conj().resolve_neg().numpy())
        return np.array(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{WHERE}: {argument} cannot be read as one array ({reason[:200]}); give "
                        "a NumPy array, a torch tensor or a nested list of rows of one shape") \
            from None


def _sha256(raw: _Raw, options: FileOptions) -> str:
    """The digest a run records: what was read, by role (the float32 inputs, the labels as
    read: whole numbers as int64, text as str), the 8-bit scaling, and the options (as
    checked: ``test=0.2`` and ``test="0.2"`` read alike). The values a run learns from, not
    their container: int32 and int64 labels, or float64 inputs of the same float32 values,
    are the same data (the dtype a platform or a loader happens to pick refuses no resume)."""
    digest = hashlib.sha256()
    read = {"x": raw.x, "y": raw.labels, "x_test": raw.x_test, "y_test": raw.labels_test}
    for role, value in read.items():
        if value is None:
            continue
        array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.dtype.kind == "U":  # the strings, not the width NumPy keeps them in
            digest.update(f"{role}\0str\0{array.shape}\0".encode())
            digest.update(json.dumps(array.tolist()).encode())
        else:
            digest.update(f"{role}\0{array.dtype.str}\0{array.shape}\0".encode())
            digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    digest.update(repr((raw.inputs, options)).encode())
    return digest.hexdigest()


def _check_name(name: Any) -> None:
    """A name runs may record: not a registered dataset's, a data path or with ``->``, which
    ``report``, ``export`` and a command-line resume would read as that data (a report's
    confusion matrix drawn on another file), or as a pair."""
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ConfigError(f"{WHERE}: name must be a non-empty string of one line, got "
                          f"{name!r}")
    text = name.strip()
    what = "holds '->', which joins a pair's two sides in run records (source->target)" \
        if "->" in name else "is a registered dataset's name" if text in DATASETS \
        else "is a data file or folder path" if is_data_path(text) else None
    if what is not None:
        raise ConfigError(f"{WHERE}: name {name!r} {what}; run records name the data by it, and "
                          "report, export and a resume from the command line would read that "
                          "instead of these arrays: choose another name (e.g. 'my-data')")


def _check_roles(given: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Arguments that would be left unread are refused (a file's arrays of other names are
    only noted: there nobody chose them)."""
    has = {role for role, value in given.items() if value is not None}
    for one, other in (("x_test", "y_test"), ("y_test", "x_test")):
        if one in has and other not in has:
            raise DataError(f"{WHERE}: {one} without {other}; give both (the test rows and "
                            "their labels), or neither (test= holds out training rows)")
    split = options.get("test")
    if "x_test" in has and split is not None:
        raise DataError(f"{WHERE}: x_test/y_test and test={split!r} both choose the test "
                        "split; give one")
    if "y" not in has and split is not None:
        raise DataError(f"{WHERE}: test={split!r} splits labelled rows for testing, and y is "
                        "None (an adaptation target: every row adapted to, none scored); "
                        "remove test")


def read_arrays(x: Any, y: Any = None, x_test: Any = None, y_test: Any = None,
                name: str | None = None, options: Mapping[str, Any] | None = None) -> InMemory:
    """The arrays read and checked once, as an ``.npz`` of them is (see the module docstring),
    kept with their options and digest."""
    if name is not None:
        _check_name(name)
    given = {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
    if x is None:
        raise DataError(f"{WHERE}: x is None; give the inputs, one row per example")
    options = dict(options or {})
    unknown = [str(k) for k in options if k not in FILE_OPTIONS]
    if unknown:
        raise ConfigError(f"{WHERE}: unknown data option {unknown[0]!r}; the options of arrays: "
                          f"{', '.join(OPTIONS)}")
    parsed = parse_file_options(options)  # bad values: one line
    _check_applicable(parsed, {"memory"}, "arrays in memory (from_arrays takes the arrays "
                      "themselves)")
    _check_roles(given, options)
    arrays = _Arrays()
    for role in ROLES:
        if given[role] is not None:
            arrays[role] = _array(given[role], role)
    for role in ("x", "x_test"):  # before the dataset's own check, which names no argument
        shape = arrays[role].shape if role in arrays else ()
        if shape and shape[0] == 0:
            raise DataError(f"{WHERE}: {role} has no rows (shape {shape}); give at least one "
                            "example")
    raw = raw_from_arrays(WHERE if name is None else f"{WHERE} ({name})", arrays,
                          name or "arrays", name or "arrays", test_words="x_test/y_test")
    return InMemory(name, raw, options, _sha256(raw, parsed))


def from_arrays(x: Any, y: Any = None, *, x_test: Any = None, y_test: Any = None,
                name: str | None = None, **data_options: Any) -> Dataset:
    """A Dataset of arrays in memory (NumPy, torch tensors, nested lists), read exactly as an
    ``.npz`` holding ``x``, ``y``, ``x_test``, ``y_test`` is; ``data_options``: ``test``
    (a held-out fraction, or ``"all"``), ``normalize`` (``zscore``, ``l1``, ``log``) and
    ``seed``, as for files. Without ``y``: an adaptation target for :func:`pair` (or rows to
    predict). ``name`` names it in messages and run records (default ``arrays``; in a pair,
    ``source`` and ``target``); not a registered dataset's name, a data path or a name with
    ``->``, which records would read as other data."""
    memory = read_arrays(x, y, x_test, y_test, name, data_options)
    if memory.raw.labels is not None:
        return load_file_dataset(memory, parse_file_options(memory.options))
    test = memory.raw.labels_test  # no training labels: the classes are the source's, later
    shown = None if test is None else tuple(v.item() for v in np.unique(test))
    data = load_file_dataset(memory, parse_file_options(memory.options), shown,
                             unlabelled_classes=lambda _: 1)
    if shown is None:
        data = replace(data, classes=None, description=f"{data.description}; its classes are "
                       "the source's in tk.pair, or those of the model that reads it")
    return with_origin(data, memory)


def _side(value: Any, role: str) -> InMemory | str:
    """One side of :func:`pair`: arrays from ``from_arrays``, or a file path or registered
    name as ``data=`` takes them."""
    if isinstance(value, Dataset):
        if value.origin is None:
            raise ConfigError(f"pair: the {role} {value.name!r} is a Dataset not read from "
                              "arrays; give tk.from_arrays(...), a file path or a registered "
                              "dataset name")
        return value.origin
    if isinstance(value, str | os.PathLike):
        return "->".join(part.strip() for part in os.fspath(value).split("->"))
    raise ConfigError(f"pair: the {role} is a {type(value).__name__}; give tk.from_arrays(...) "
                      "of its arrays, a file path or a registered dataset name")


def pair(source: Dataset | str | Path, target: Dataset | str | Path, *,
         data_dir: str | Path | None = None, **data_options: Any) -> DomainPair:
    """A DomainPair for ``adapt`` from a labelled source and a target (without ``y``: no
    labels), each from :func:`from_arrays` (read with its own options) or a file path or
    registered dataset name (read with ``data_options``). As for a pair of files, the
    target's labels are mapped to the source's classes, and a label the source lacks is
    refused. Both sides are normalised by the same steps (each with the statistics of its own
    training rows, as a pair of files is), or the pair is refused."""
    sides = {"source": _side(source, "source"), "target": _side(target, "target")}
    if data_options and all(isinstance(s, InMemory) for s in sides.values()):
        raise ConfigError(f"pair: data options ({', '.join(data_options)}) apply to files; "
                          "arrays keep those given to tk.from_arrays")
    if any(isinstance(s, str) and "->" in s for s in sides.values()):
        raise ConfigError("pair: each side is one dataset; a->b names a pair already")
    joined = load_file_pair(sides["source"], sides["target"], data_options, data_dir=data_dir)
    _check_same_steps(joined, sides)
    return joined


def _check_same_steps(joined: DomainPair, sides: Mapping[str, InMemory | str]) -> None:
    """A pair whose sides are normalised by other steps is refused: a pair of files has one
    ``normalize`` for both, while arrays bring their own (``normalize=`` given to one
    ``from_arrays`` only, or to ``pair`` for its file side, left the other side raw)."""
    steps = {role: () if side.normalization is None else side.normalization.steps
             for role, side in (("source", joined.source), ("target", joined.target))}
    if steps["source"] == steps["target"]:
        return

    def said(role: str) -> str:
        how = f"normalised by {','.join(steps[role])}" if steps[role] else "not normalised"
        given = "its tk.from_arrays" if isinstance(sides[role], InMemory) else "tk.pair's"
        return f"the {role} is {how} ({given} options)"

    wanted = ",".join(steps["source"] or steps["target"])
    raise ConfigError(f"pair: {said('source')}, {said('target')}; the two domains would be "
                      f"fed on other scales: give both sides normalize={wanted!r} (each is "
                      "fitted on its own training rows, as in a pair of files), or neither")
