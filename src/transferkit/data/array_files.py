"""``.npz`` and ``.mat`` files: which arrays hold the inputs, labels and test split, read
without unpickling anything; and the checks the arrays of every feature file pass (finite
numeric inputs, images as ``N x C x H x W``, one whole-number or string label per row)."""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from transferkit.data.file_options import OPT, FileOptions
from transferkit.data.file_records import _ALONE, UNIT, _first_line, _Raw, _Side
from transferkit.errors import DataError

# ``x_train``/``y_train``: Keras' own .npz files (mnist.npz); ``target``: scikit-learn's Bunch
X_KEYS = ("x", "X", "x_train", "X_train", "inputs", "features", "fts", "data")
Y_KEYS = ("y", "Y", "y_train", "Y_train", "labels", "label", "targets", "target")
X_TEST_KEYS = ("x_test", "X_test")
Y_TEST_KEYS = ("y_test", "Y_test")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KEY_DEFAULTS = {"x": X_KEYS, "y": Y_KEYS, "x_test": X_TEST_KEYS, "y_test": Y_TEST_KEYS}
# A lone file without labels could be an adaptation target: said where that helps.
_TARGET_HINT = " (inputs without labels are an adaptation target: adapt --data SOURCE->{path})"
_INPUT_ROLES = ("x", "x_test")
# What a .npz member or .mat variable can fail with when the file is damaged or foreign
# (RuntimeError: an encrypted zip member; NotImplementedError: an unknown compression).
_DAMAGED = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, RuntimeError,
            NotImplementedError)
# Bytes per element of the MATLAB classes scipy reads as numbers (sparse: read dense, float64).
_MAT_BYTES = {"double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2,
              "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "logical": 1, "char": 4,
              "sparse": 8}


class _Arrays(dict[str, np.ndarray]):
    """The arrays read, by role (``x``, ``y``, ``x_test``, ``y_test``), with the file's own name
    for each: a message names the array the user wrote (``'fts'``), not the role."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, str] = {}

    def name(self, role: str) -> str:
        return self.names.get(role, role)


def _size(nbytes: float) -> str:
    """``7.3 TiB``, ``512 MiB``: sizes in a message."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _free_memory() -> int | None:
    """Bytes this process could allocate (MemAvailable, at most a cgroup's limit), or None
    where unknown: a file is refused before an allocation the machine cannot hold. The
    cgroup's usage is not subtracted: it counts page cache, which is given back on demand."""
    free: int | None = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        free = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free = int(limit) if free is None else min(free, int(limit))
    except (OSError, ValueError):
        pass
    return free


class _Memory:
    """The memory the arrays read so far need, against what is free: a header (or a zip bomb)
    declaring 10**12 elements is refused in one line, not met with a MemoryError or the
    kernel's OOM killer. Inputs also need their float32 copy, labels their int64 one."""

    def __init__(self, path: Path) -> None:
        self.path, self.free, self.needed = path, _free_memory(), 0

    def take(self, key: str, role: str, shape: tuple[int, ...], dtype: str,
             itemsize: int) -> None:
        count = math.prod(shape)
        need = count * (itemsize + (4 if role in _INPUT_ROLES else 8))
        self.needed += need
        if self.free is not None and self.needed > self.free:
            dims = "x".join(str(d) for d in shape)
            before = need < self.needed and f" ({_size(self.needed)} with the arrays before it)"
            raise DataError(
                f"{self.path}: array {key!r} ({dims} {dtype}) needs about {_size(need)} of "
                f"memory to read{before or ''}, more than the {_size(self.free)} free; keep "
                "fewer rows in the file (e.g. np.savez(path, x=x[:n], y=y[:n])) or free memory"
            )


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
              side: _Side = _ALONE) -> tuple[_Arrays, str]:
    """The arrays of an .npz archive, each member's .npy header checked before its data is
    read (never unpickled; a declared shape the member cannot hold or memory cannot take is
    refused before anything is allocated)."""
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
        archive = zipfile.ZipFile(path)
    except _DAMAGED as exc:
        raise DataError(
            f"{path}: cannot read the .npz archive ({_first_line(exc)}; truncated or damaged?); "
            "save it again with np.savez"
        ) from None
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()
                   if not info.is_dir()}
        keys, unused = _pick_keys(path, list(members), options, side)
        arrays, memory = _Arrays(), _Memory(path)
        for role, key in keys.items():
            if key is not None:
                arrays[role] = _read_member(path, archive, members[key], key, role, memory)
                arrays.names[role] = key
    return arrays, unused


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str,
                 role: str, memory: _Memory) -> np.ndarray:
    """One member's array: its header first, so that an object dtype (pickle), a shape larger
    than the member's bytes (a crafted or truncated file) or than free memory is refused
    before NumPy allocates it (it allocates the declared shape, then reads)."""
    fix = "the file may be truncated or damaged: save it again with np.savez"
    try:
        with archive.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
            except ValueError:
                raise DataError(
                    f"{path}: {key!r} in the archive is not a NumPy array (no .npy header); "
                    "save the arrays with np.savez(path, x=x, y=y)"
                ) from None
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            offset = member.tell()
        if dtype.hasobject:
            raise DataError(
                f"{path}: array {key!r} is a pickled object array; transferkit does not "
                "unpickle data (it could run code): save numeric or string arrays"
            )
        stored, dims = info.file_size - offset, "x".join(str(d) for d in shape)
        declared = math.prod(shape) * dtype.itemsize
        if min(shape, default=0) < 0:
            raise DataError(f"{path}: array {key!r} declares shape {dims}, which no array has; "
                            f"{fix}")
        if declared > stored:
            raise DataError(
                f"{path}: array {key!r} declares shape {dims} ({dtype}, {_size(declared)}) but "
                f"the archive holds {_size(max(stored, 0))} of it; {fix}"
            )
        memory.take(key, role, tuple(shape), str(dtype), dtype.itemsize)
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read array {key!r}; keep fewer rows in "
                        "the file or free memory") from None
    except _DAMAGED as exc:
        if info.flag_bits & 0x1:  # zipfile's message holds a ZipInfo repr
            raise DataError(f"{path}: array {key!r} is encrypted (a password-protected zip); "
                            "save it again with np.savez") from None
        raise DataError(f"{path}: cannot read array {key!r} ({_first_line(exc)}); {fix}") from None


def _read_mat(path: Path, options: FileOptions,
              side: _Side = _ALONE) -> tuple[_Arrays, str]:
    """The arrays of a MATLAB v4-v7 file: the variables listed first (``whosmat`` reads their
    headers only), so a struct, a cell of features or a size memory cannot take is refused
    before loading, and only the variables used are loaded."""
    v73 = (
        f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it with -v7 "
        "(save(file, 'fts', 'labels', '-v7')) or as .npz"
    )
    with path.open("rb") as f:
        head = f.read(520)
    if head.startswith(_HDF5_MAGIC) or head[512:520] == _HDF5_MAGIC or b"MATLAB 7.3" in head[:128]:
        raise DataError(v73)
    from scipy.io import loadmat, whosmat  # slow import: only here
    from scipy.sparse import issparse

    def cannot(exc: BaseException) -> DataError:
        if isinstance(exc, NotImplementedError):
            return DataError(v73)
        if isinstance(exc, MemoryError):
            return DataError(f"{path}: not enough memory to read it; keep fewer rows in the "
                             "file or free memory")
        return DataError(f"{path}: cannot read as a MATLAB file ({_first_line(exc)}); save it "
                         "with -v7 or as .npz")

    try:
        listing = {name: (tuple(shape), kind) for name, shape, kind in whosmat(str(path))}
    except Exception as exc:  # scipy raises many types for a damaged or foreign file
        raise cannot(exc) from None
    keys, unused = _pick_keys(path, list(listing), options, side)
    memory = _Memory(path)
    for role, key in keys.items():
        if key is not None:
            shape, kind = listing[key]
            _check_mat_class(path, key, role, shape, kind)
            if kind in _MAT_BYTES:
                memory.take(key, role, shape, "sparse, read dense" if kind == "sparse" else kind,
                            _MAT_BYTES[kind])
    try:
        contents = loadmat(str(path), variable_names=[k for k in keys.values() if k])
        arrays = _Arrays()
        for role, key in keys.items():
            if key is not None:
                value = contents[key]
                if issparse(value):
                    value = value.toarray()
                elif role not in _INPUT_ROLES and value.dtype.kind == "U":
                    value = np.char.rstrip(value)  # a char matrix pads its rows with spaces
                arrays[role], arrays.names[role] = value, key
    except Exception as exc:
        raise cannot(exc) from None
    return arrays, unused


def _check_mat_class(path: Path, key: str, role: str, shape: tuple[int, ...], kind: str) -> None:
    """Inputs are numeric matrices (dense or sparse), labels numbers, text or a cell array of
    them; a struct, an object or a cell of features is named before it is loaded."""
    numbers = set(_MAT_BYTES) - {"char"}
    allowed = numbers if role in _INPUT_ROLES else numbers | {"char", "cell"}
    if kind in allowed:
        return
    what = "inputs" if role in _INPUT_ROLES else "labels"
    dims = "x".join(str(d) for d in shape)
    fix = "save the numeric matrix itself (e.g. s.fts for a struct s, cell2mat(c) for a cell)" \
        if role in _INPUT_ROLES else "save one number or string per row"
    raise DataError(f"{path}: {what} {key!r} are a MATLAB {kind} ({dims}), not a matrix of "
                    f"numbers; {fix}, or name another variable with {OPT} {role}=NAME")


def _check_rows(path: Path | str, arrays: _Arrays) -> None:
    """As many labels as input rows, said with the file's array names; inputs whose rows lie
    along the last axis (MATLAB's features x rows, or H x W x C x N images) are named as such
    (read as they are, each column would be an example)."""
    for x_role, y_role in (("x", "y"), ("x_test", "y_test")):
        if x_role not in arrays or y_role not in arrays:
            continue
        x_shape, y_shape = np.shape(arrays[x_role]), np.shape(arrays[y_role])
        labels = y_shape[0] if len(y_shape) == 1 else \
            max(y_shape) if len(y_shape) == 2 and 1 in y_shape else None
        if labels is None or len(x_shape) < 2 or x_shape[0] == labels:
            continue  # other shapes are refused by _features and _label_array, by name
        x_key, y_key = arrays.name(x_role), arrays.name(y_role)
        dims = "x".join(str(d) for d in x_shape)
        hint = "give one label per row"
        if x_shape[-1] == labels:
            hint = (f"{x_key!r} is {dims}: do its rows lie along the last axis (features x "
                    f"rows, or MATLAB's H x W x C x N images)? then put them first ({x_key}' or "
                    f"permute({x_key}, [4 3 1 2]) in MATLAB, np.moveaxis(x, -1, 0) in NumPy)")
        raise DataError(f"{path}: {x_shape[0]} input rows but {labels} labels ({y_key}); {hint}")


# What inputs of a dtype that is not numbers hold, and how to make numbers of them.
_NOT_NUMBERS = {
    "U": ("text", "convert the text to numbers"),
    "S": ("bytes", "convert them to numbers"),
    "O": ("objects (a MATLAB cell array?)", "give a plain numeric matrix"),
    "V": ("records (a MATLAB struct?)", "give a plain numeric matrix"),
    "c": ("complex numbers", "give real numbers (x.real or np.abs(x), as they mean)"),
    "M": ("dates", "convert them to numbers (e.g. seconds)"),
    "m": ("time spans", "convert them to numbers (e.g. seconds)"),
}


def _features(path: Path | str, key: str, value: Any) -> Tensor:
    """Inputs as float32: numbers only (none NaN, infinite or beyond float32), one row per
    example, each of at least one value (a 0-wide row trains a model on nothing)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        words, fix = _NOT_NUMBERS.get(array.dtype.kind, ("not numbers", "give a numeric array"))
        raise DataError(f"{path}: inputs {key!r} are {array.dtype} ({words}); {fix}")
    if array.ndim < 2:
        raise DataError(
            f"{path}: inputs {key!r} have shape {array.shape}; give one row per example "
            "(N x features, or N x C x H x W)"
        )
    if 0 in array.shape[1:]:
        raise DataError(
            f"{path}: inputs {key!r} have shape {array.shape}: rows of no values; give at "
            "least one feature per row"
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


def _label_array(path: Path | str, key: str, value: Any) -> np.ndarray:
    """Labels as a 1-D array of int64, float64 (whole numbers) or str; numbers that int64
    cannot hold, bytes that are not UTF-8 and empty text are refused, not read as something
    else (uint64 2**64-1 wrapped to -1, '' became a class)."""
    array = np.asarray(value)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise DataError(
            f"{path}: labels {key!r} have shape {array.shape}; give one label per row "
            "(shape N; for one-hot rows use y.argmax(1))"
        )
    kind = array.dtype.kind
    if kind == "O":  # a MATLAB cell array: one number or string per cell
        array = _cells(path, key, array)
        kind = array.dtype.kind
    if kind == "S":
        try:
            array = np.char.decode(array, "utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: labels {key!r} are bytes that are not UTF-8 text ({_first_line(exc)}); "
                "save them as str (np.str_) or numbers"
            ) from None
        kind = "U"
    if kind == "U":
        empty = np.char.str_len(np.char.strip(array)) == 0
        if empty.any():
            raise DataError(
                f"{path}: {int(empty.sum())} labels {key!r} are empty text (first at row "
                f"{int(np.argmax(empty))}): missing labels? give every row its class, or drop "
                "the unlabelled rows"
            )
    elif kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
        huge = array > np.iinfo(np.int64).max
        raise DataError(
            f"{path}: {int(huge.sum())} labels {key!r} are too large for exact class numbers "
            f"(e.g. {array[huge][0]}); give the classes small integers or names"
        )
    elif kind in "biu":
        array = array.astype(np.int64)
    elif kind == "f":
        array = array.astype(np.float64)
    else:
        raise DataError(f"{path}: labels {key!r} are {array.dtype}; give integers or strings")
    return array


def _cells(path: Path | str, key: str, array: np.ndarray) -> np.ndarray:
    """A MATLAB cell array of labels: one string or one number per cell (``{1; 2}`` gives
    numbers, not the strings '1.0', '2.0'); cells of several values or none are refused."""
    items = [np.asarray(v).reshape(-1) for v in array]
    if any(item.size != 1 for item in items):
        raise DataError(
            f"{path}: labels {key!r} are a cell array that is not one string or number per "
            "row; give numbers or strings"
        )
    kinds = {item.dtype.kind for item in items}
    if kinds <= set("biuf") or kinds <= set("US"):  # np.array would make text of a mix
        return np.array([item[0] for item in items])
    raise DataError(
            f"{path}: labels {key!r} are a cell array mixing strings and numbers (or of other "
            "values); give numbers or strings"
    )


def raw_from_arrays(where: Path | str, arrays: _Arrays, name: str, title: str, note: str = "",
                    test_words: str = "the file's test arrays") -> _Raw:
    """The arrays of a file, or given in memory, by role (``x``, ``y``, ``x_test``,
    ``y_test``) read into a :class:`_Raw`: one reading for both, so arrays in memory pass every
    check an ``.npz`` holding them would (rows against labels, finite numeric inputs, images
    as ``N x C x H x W`` and 8-bit ones / 255, one label per row). Without ``y`` it is an
    unlabelled target; ``x_test`` without ``y_test`` is inputs only (rows to predict).
    Messages start with ``where`` (the file) and name ``arrays``' own names."""
    _check_rows(where, arrays)
    x, image_note = _image_array(arrays["x"])
    eight_bit = _eight_bit(arrays["x"])  # as image folders
    raw = _Raw(name, str(where), title, _features(where, arrays.name("x"), x), None,
               read_note=note, image_note=image_note, inputs=UNIT if eight_bit else None)
    if "y" in arrays:
        key = arrays.name("y")
        raw.labels = _check_labels(where, key, _label_array(where, key, arrays["y"]), len(raw.x))
    if "x_test" in arrays:
        raw.x_test = _test_inputs(where, arrays, eight_bit)
        if "y_test" in arrays:
            key = arrays.name("y_test")
            raw.labels_test = _check_labels(
                where, key, _label_array(where, key, arrays["y_test"]), len(raw.x_test)
            )
            raw.own_test = f"{test_words} ({len(raw.x_test)} rows)"
        _check_test_shape(where, raw.x, raw.x_test)
    return raw


def _test_inputs(path: Path | str, arrays: _Arrays, eight_bit: bool) -> Tensor:
    """``x_test`` as a float tensor, stored with the same type as ``x``."""
    if _eight_bit(arrays["x_test"]) != eight_bit:  # one would be scaled, not the other
        raise DataError(
            f"{path}: {arrays.name('x')} is {np.asarray(arrays['x']).dtype} but "
            f"{arrays.name('x_test')} {np.asarray(arrays['x_test']).dtype}; store both with "
            "the same type"
        )
    return _features(path, arrays.name("x_test"), _image_array(arrays["x_test"])[0])


def _check_test_shape(path: Path | str, x: Tensor, x_test: Tensor) -> None:
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(
            f"{path}: x_test has rows of shape {tuple(x_test.shape[1:])} but x "
            f"{tuple(x.shape[1:])}; give both the same features"
        )


def _check_labels(path: Path | str, what: str, labels: np.ndarray, rows: int) -> np.ndarray:
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
