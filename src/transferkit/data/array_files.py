"""``.npz`` and ``.mat`` files: which arrays hold the inputs, labels and test split, read
without unpickling anything; and the checks the arrays of every feature file pass (finite
numeric inputs, images as ``N x C x H x W``, one whole-number or string label per row)."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from transferkit.data.file_options import OPT, FileOptions
from transferkit.data.file_records import _ALONE, _first_line, _Raw, _Side
from transferkit.errors import DataError

X_KEYS = ("x", "X", "inputs", "features", "fts", "data")
Y_KEYS = ("y", "Y", "labels", "label", "targets")
X_TEST_KEYS = ("x_test", "X_test")
Y_TEST_KEYS = ("y_test", "Y_test")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KEY_DEFAULTS = {"x": X_KEYS, "y": Y_KEYS, "x_test": X_TEST_KEYS, "y_test": Y_TEST_KEYS}
# A lone file without labels could be an adaptation target: said where that helps.
_TARGET_HINT = " (inputs without labels are an adaptation target: adapt --data SOURCE->{path})"


def _pick_keys(
    path: Path, names: Sequence[str], options: FileOptions, side: _Side = _ALONE
) -> tuple[dict[str, str | None], str]:
    """Which arrays hold x, y and the test split; the second item names unused arrays.

    A pair's target (``side``) may have no labels: then ``y`` is None and it has no test split;
    an explicit ``y`` option it lacks makes it unlabelled too (the option serves the source),
    and the note names the arrays left unread, so a labels array of another name is seen.
    Rows read for predictions (role ``predict``) read ``x`` and ``x_test`` only."""
    present = ", ".join(repr(n) for n in names) or "none"
    if side.role == "predict":
        return _input_keys(path, names, options, present), ""

    def pick(option: str, required: bool) -> str | None:
        explicit = getattr(options, option)
        if explicit is not None:
            if explicit in names:
                return explicit
            if option == "y" and side.labels_optional:
                return None
            raise DataError(
                f"{path}: no array {explicit!r} (option {option}); arrays present: {present}; "
                f"set {OPT} {option}=NAME"
            )
        found = next((k for k in _KEY_DEFAULTS[option] if k in names), None)
        if found is None and required:
            looked = ", ".join(_KEY_DEFAULTS[option])
            what = "inputs" if option == "x" else "labels"
            hint = _TARGET_HINT.format(path=path) if option == "y" and side.role == "alone" \
                else ""
            test = next((k for k in _KEY_DEFAULTS[f"{option}_test"] if k in names), None)
            if test is not None:  # a file of test rows alone: say how to read them
                hint = f" (to read the test array {test!r} as the rows: {OPT} {option}={test})"
            raise DataError(
                f"{path}: no {what} array (looked for {looked}); arrays present: {present}; "
                f"set {OPT} {option}=NAME{hint}"
            )
        return found

    keys = {"x": pick("x", True), "y": pick("y", not side.labels_optional), "x_test": None,
            "y_test": None}
    x_test, y_test = pick("x_test", False), pick("y_test", False)
    if keys["y"] is None:  # unlabelled training rows: all there is to adapt to
        if options.test is None and x_test is not None and y_test is not None:
            keys["x_test"], keys["y_test"] = x_test, y_test  # scored on its labelled test rows
            return keys, ""
        if options.test is None and y_test is not None:
            raise DataError(
                f"{path}: has test labels ({y_test!r}) but no test inputs (x_test) and no "
                f"training labels; arrays present: {present}; set {OPT} x_test=NAME"
            )
        others = [n for n in names if n != keys["x"]]
        unread = f"arrays not read: {', '.join(map(repr, others))} (set {OPT} y=NAME if " \
            "one holds labels)" if others else ""
        return keys, unread
    if options.test is not None:
        unused = "/".join(k for k in (x_test, y_test) if k)
        return keys, f"the file's {unused} not used" if unused else ""
    if (x_test is None) != (y_test is None):
        have, lack = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise DataError(
            f"{path}: has test array {x_test or y_test!r} but no {lack} array; arrays present: "
            f"{present}; set {OPT} {lack}=NAME, or {OPT} test=0.2 to split the training rows "
            f"instead ({have} is then unused)"
        )
    keys["x_test"], keys["y_test"] = x_test, y_test
    return keys, ""


def _input_keys(path: Path, names: Sequence[str], options: FileOptions,
                present: str) -> dict[str, str | None]:
    """The arrays of inputs (``x``, required) and test inputs (``x_test``, when present) that
    predictions read; label arrays are never named, so never read."""
    keys: dict[str, str | None] = {}
    alone = options.x is None and not any(k in names for k in X_KEYS)
    tests = [k for k in X_TEST_KEYS if k in names]
    if alone and tests and options.x_test is None:  # test rows alone: they are the rows
        return {"x": tests[0], "x_test": None}
    for option, required in (("x", True), ("x_test", False)):
        explicit = getattr(options, option)
        if explicit is not None and explicit not in names:
            raise DataError(
                f"{path}: no array {explicit!r} (option {option}); arrays present: {present}; "
                f"set {OPT} {option}=NAME"
            )
        found = explicit or next((k for k in _KEY_DEFAULTS[option] if k in names), None)
        if found is None and required:
            raise DataError(
                f"{path}: no inputs array (looked for {', '.join(X_KEYS)}); arrays present: "
                f"{present}; set {OPT} x=NAME"
            )
        keys[option] = None if option == "x_test" and found == keys["x"] else found
    return keys


def _read_npz(path: Path, options: FileOptions,
              side: _Side = _ALONE) -> tuple[dict[str, np.ndarray], str]:
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        raise DataError(
            f"{path} holds a single .npy array, not an .npz archive; save inputs and labels "
            "together with np.savez(path, x=x, y=y)"
        )
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(
            f"{path} is not an .npz archive (no zip header); save it with np.savez(path, x=x, y=y)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: cannot read the .npz archive ({_first_line(exc)}); save it again "
            "with np.savez"
        ) from None
    with archive:
        keys, unused = _pick_keys(path, list(archive.files), options, side)
        arrays: dict[str, np.ndarray] = {}
        for role, key in keys.items():
            if key is None:
                continue
            try:
                arrays[role] = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc) or "pickled" in str(exc):
                    raise DataError(
                        f"{path}: array {key!r} is a pickled object array; transferkit does not "
                        "unpickle data (it could run code): save numeric or string arrays"
                    ) from None
                raise DataError(f"{path}: cannot read array {key!r} ({_first_line(exc)})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataError(
                    f"{path}: cannot read array {key!r} ({_first_line(exc)}); the file may be "
                    "truncated: save it again"
                ) from None
    return arrays, unused


def _read_mat(path: Path, options: FileOptions,
              side: _Side = _ALONE) -> tuple[dict[str, np.ndarray], str]:
    v73 = (
        f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it with -v7 "
        "(save(file, 'fts', 'labels', '-v7')) or as .npz"
    )
    with path.open("rb") as f:
        head = f.read(520)
    if head.startswith(_HDF5_MAGIC) or head[512:520] == _HDF5_MAGIC or b"MATLAB 7.3" in head[:128]:
        raise DataError(v73)
    from scipy.io import loadmat  # slow import: only here

    try:
        contents = loadmat(str(path))
    except NotImplementedError:
        raise DataError(v73) from None
    except Exception as exc:  # scipy raises many types for a damaged or foreign file
        raise DataError(
            f"{path}: cannot read as a MATLAB file ({_first_line(exc)}); save it with -v7 "
            "or as .npz"
        ) from None
    names = [k for k in contents if not k.startswith("__")]
    keys, unused = _pick_keys(path, names, options, side)
    arrays = {}
    for role, key in keys.items():
        if key is not None:
            value = contents[key]
            arrays[role] = value.toarray() if hasattr(value, "toarray") else value  # sparse
    return arrays, unused


def _features(path: Path, key: str, value: Any) -> Tensor:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: inputs {key!r} are {array.dtype} ({array.dtype.kind}); give a numeric array"
        )
    if array.ndim < 2:
        raise DataError(
            f"{path}: inputs {key!r} have shape {array.shape}; give one row per example "
            "(N x features, or N x C x H x W)"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: counted below
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DataError(
            f"{path}: inputs {key!r} hold {bad} NaN or infinite values (or values too large for "
            "float32); drop or fill them"
        )
    return x


def _eight_bit(value: Any) -> bool:
    """8-bit image arrays, which :func:`_image_array` divides by 255."""
    array = np.asarray(value)
    return array.ndim in (3, 4) and array.dtype == np.uint8


def _image_array(value: Any) -> tuple[np.ndarray, str]:
    """Arrays of images as ``N x C x H x W``, and how they were read ("" for feature rows).

    ``N x H x W`` gets one channel; ``N x H x W x C`` with C in (1, 3, 4) and H over 4 (too many
    for channels: channels-last, as Keras and PIL store images) is moved to channels-first;
    8-bit images are divided by 255 (as image folders are).
    """
    array = np.asarray(value)
    if array.ndim not in (3, 4) or array.dtype.kind not in "biuf":
        return array, ""
    steps = []
    if array.ndim == 3:
        array = array[:, None]
        steps.append("N x H x W read as one channel")
    elif array.shape[-1] in (1, 3, 4) and array.shape[1] > 4:
        array = np.moveaxis(array, -1, 1)
        steps.append("channels-last N x H x W x C moved to channels-first")
    if _eight_bit(array):
        array = array.astype(np.float32) / 255.0
        steps.append("8-bit pixels / 255")
    shape = "x".join(str(d) for d in array.shape[1:])
    return array, f"images {shape}" + (f" ({'; '.join(steps)})" if steps else "")


def _label_array(path: Path, key: str, value: Any) -> np.ndarray:
    """Labels as a 1-D array of int64, float64 (whole numbers) or str."""
    array = np.asarray(value)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise DataError(
            f"{path}: labels {key!r} have shape {array.shape}; give one label per row "
            "(shape N; for one-hot rows use y.argmax(1))"
        )
    kind = array.dtype.kind
    if kind == "O":  # a MATLAB cell array of strings
        try:
            array = np.array([str(np.asarray(v).reshape(-1)[0]) for v in array], dtype=str)
        except (IndexError, TypeError, ValueError):
            raise DataError(
                f"{path}: labels {key!r} are a cell array that is not one string per row; "
                "give numbers or strings"
            ) from None
    elif kind == "S":
        array = np.char.decode(array, "utf-8")
    elif kind in "biu":
        array = array.astype(np.int64)
    elif kind == "f":
        array = array.astype(np.float64)
    elif kind != "U":
        raise DataError(f"{path}: labels {key!r} are {array.dtype}; give integers or strings")
    return array


def _own_test(raw: _Raw, path: Path, arrays: dict[str, np.ndarray], eight_bit: bool) -> None:
    """The file's own test split (``x_test``, ``y_test``) onto ``raw``, checked against x."""
    raw.x_test = _test_inputs(path, arrays, eight_bit)
    raw.labels_test = _check_labels(
        path, "y_test", _label_array(path, "y_test", arrays["y_test"]), len(raw.x_test)
    )
    _check_test_shape(path, raw.x, raw.x_test)
    raw.own_test = f"the file's test arrays ({len(raw.x_test)} rows)"


def _test_inputs(path: Path, arrays: dict[str, np.ndarray], eight_bit: bool) -> Tensor:
    """``x_test`` as a float tensor, stored with the same type as ``x``."""
    if _eight_bit(arrays["x_test"]) != eight_bit:  # one would be scaled, not the other
        raise DataError(
            f"{path}: x is {np.asarray(arrays['x']).dtype} but x_test "
            f"{np.asarray(arrays['x_test']).dtype}; store both with the same type"
        )
    return _features(path, "x_test", _image_array(arrays["x_test"])[0])


def _check_test_shape(path: Path, x: Tensor, x_test: Tensor) -> None:
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(
            f"{path}: x_test has rows of shape {tuple(x_test.shape[1:])} but x "
            f"{tuple(x.shape[1:])}; give both the same features"
        )


def _check_labels(path: Path, what: str, labels: np.ndarray, rows: int) -> np.ndarray:
    """Row count and whole numbers; float labels become int64."""
    if labels.shape[0] != rows:
        raise DataError(
            f"{path}: {rows} input rows but {labels.shape[0]} labels ({what}); give one label "
            "per row"
        )
    if rows == 0:
        raise DataError(f"{path}: no rows ({what}); give at least one example per class")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels)
        bad |= np.where(bad, 0.0, labels) != np.round(np.where(bad, 0.0, labels))
        if bad.any():
            raise DataError(
                f"{path}: {int(bad.sum())} labels ({what}) are not whole numbers (e.g. "
                f"{labels[bad][0]:g}); give integer or string class labels"
            )
        # float64 holds whole numbers exactly only below 2**53; 1e300 cast to int64 is garbage
        huge = np.abs(labels) >= 2.0**53
        if huge.any():
            raise DataError(
                f"{path}: {int(huge.sum())} labels ({what}) are too large for exact class "
                f"numbers (e.g. {labels[huge][0]:g}); give the classes small integers or names"
            )
        labels = labels.astype(np.int64)
    return labels
