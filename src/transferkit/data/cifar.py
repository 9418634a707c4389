"""``cifar10`` and ``cifar100``: the official *python* releases of CIFAR-10 and CIFAR-100.

Files (in ``<data dir>/cifar10/`` resp. ``<data dir>/cifar100/``, see ``paths.py`` for the
search order), either of

* the archive as published, ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``
  (downloaded into the cache and checked against its published MD5 when absent), or
* the archive extracted there: the folder ``cifar-10-batches-py/`` (``data_batch_1`` ..
  ``data_batch_5``, ``test_batch``) resp. ``cifar-100-python/`` (``train``, ``test``).

In each data folder (in search order) a complete extracted folder wins over the archive.

Format of each batch: a pickled dict (written by Python 2, so read with ``encoding="bytes"``)
with ``b"data"``, a uint8 array ``N x 3072`` holding each image as its red, then green, then
blue 32x32 plane, row-major, and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100, the
100 fine classes; the 20 coarse ones are not used), a list of ``N`` ints. The loaders return
x float32 ``N x 3 x 32 x 32`` = pixel / 255 in [0, 1] (``x[n, c, y, x] = data[n, 1024 c + 32 y
+ x] / 255``), y int64, recorded as ``InputSpec(mean=0, std=1)`` like the other standalone
datasets. Class names (in ``batches.meta`` / ``meta``) are not read: a Dataset has no place
for them.

The batches are pickles, and unpickling an arbitrary pickle can run arbitrary code. They are
read with :class:`RestrictedUnpickler`, which resolves only the few globals a NumPy array
needs (and a latin-1-only ``codecs.encode``); a file asking for anything else is refused with
a DataError before anything is called. Nothing from the archive is written to disk.

Checks on what is read, each a one-line DataError naming the file or member and the fix: a
member holds a dict with a uint8 ``N x 3072`` array and ``N`` integer labels in
``0..num_classes-1``, and ``N`` is the official count (:data:`ROWS`: 50000 train / 10000 test
rows, split evenly over the members of a split, i.e. 10000 per CIFAR-10 batch). ``ROWS`` is a
module constant so that tests can check the loaders on tiny fake archives in the official
layout. The rows are converted batch by batch into the preallocated float32 splits (about 614
MB for a train split), so the largest extra copy is one member's uint8 data.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.base import Dataset, Split
from transferkit.data.datasets import DATASETS, UNIT, PathLike
from transferkit.data.paths import Remote, locate, resolve_data_dirs
from transferkit.errors import DataError

PIXELS = 3 * 32 * 32
SHAPE = (3, 32, 32)
# Official (train, test) row counts; tests patch these to read tiny fake archives.
ROWS: dict[str, tuple[int, int]] = {"cifar10": (50000, 10000), "cifar100": (50000, 10000)}
# Pickle overhead allowed per row beyond its pixels (labels, file names: ~30 bytes in the
# official files), plus a fixed allowance; a larger member is refused before it is read.
_SLACK_PER_ROW = 1024
_SLACK = 1 << 20
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR release lives and what it holds."""

    name: str
    archive: str
    folder: str
    url: str
    md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int
    description: str


CIFAR10 = CifarSpec(
    name="cifar10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    label_key=b"labels",
    num_classes=10,
    description="CIFAR-10 natural images, 3x32x32, 10 classes, 50000 train / 10000 test",
)
CIFAR100 = CifarSpec(
    name="cifar100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train=("train",),
    test=("test",),
    label_key=b"fine_labels",
    num_classes=100,
    description="CIFAR-100 natural images, 3x32x32, 100 fine classes, 50000 train / 10000 test",
)


# --- restricted unpickling ------------------------------------------------------------------


_LATIN1 = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``codecs.encode`` as pickles of bytes (protocol < 3) use it: latin-1 text only.

    The encoding is compared with fixed names rather than looked up, so no codec module is
    imported on a pickle's behalf.
    """
    if not isinstance(obj, str) or not isinstance(encoding, str) or encoding.lower() not in _LATIN1:
        raise RefusedPickle(f"codecs.encode with encoding {encoding!r}")
    return obj.encode("latin-1", "strict")


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_reconstruct()
    allowed: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "ndarray")] = np.ndarray
        allowed[(module, "dtype")] = np.dtype
    for module in ("_codecs", "codecs"):
        allowed[(module, "encode")] = _latin1_encode
    return allowed


_ALLOWED = _allowed_globals()


class RefusedPickle(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy arrays, and refuses everything else.

    ``find_class`` answers from a fixed table of objects (NumPy's array reconstruction
    helpers and a latin-1-only ``codecs.encode``) and never imports anything, so a pickle
    asking for e.g. ``os.system`` fails before any call. Persistent ids are refused too.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle(f"persistent id {pid!r}")


def restricted_loads(data: bytes, where: str, fix: str) -> Any:
    """Unpickle ``data`` (a Python 2 pickle) with :class:`RestrictedUnpickler`.

    ``where`` names the file in the one-line DataError, ``fix`` says what to do about it.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedPickle as exc:
        raise DataError(
            f"{where}: refused to unpickle {exc}: a CIFAR batch holds only arrays, lists and "
            f"dicts, and this file could run code when loaded; {fix}"
        ) from None
    except MemoryError:
        raise DataError(f"{where}: pickle asks for more memory than there is; {fix}") from None
    except Exception as exc:  # any malformed pickle; the message is kept to one line
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{where}: not a readable CIFAR batch ({reason}); {fix}") from None


# --- reading and checking batches -----------------------------------------------------------


@dataclass
class _Target:
    """Preallocated output of one split and the member that fills each block of rows."""

    x: torch.Tensor
    y: torch.Tensor
    members: tuple[str, ...]
    rows_each: int


def _rows_each(spec: CifarSpec, part: str, members: tuple[str, ...]) -> int:
    total = ROWS[spec.name][0 if part == "train" else 1]
    if total % len(members):
        raise ValueError(f"ROWS[{spec.name!r}] {part} {total} is not a multiple of {len(members)}")
    return total // len(members)


def _targets(spec: CifarSpec) -> dict[str, _Target]:
    out: dict[str, _Target] = {}
    for part, members in (("train", spec.train), ("test", spec.test)):
        rows = _rows_each(spec, part, members)
        n = rows * len(members)
        out[part] = _Target(
            torch.empty(n, *SHAPE, dtype=torch.float32),
            torch.empty(n, dtype=torch.int64),
            members,
            rows,
        )
    return out


def _max_bytes(rows: int) -> int:
    return rows * (PIXELS + _SLACK_PER_ROW) + _SLACK


def _fill(
    spec: CifarSpec, target: _Target, index: int, batch: Any, where: str, fix: str
) -> None:
    """Check one unpickled batch and write its rows into block ``index`` of ``target``."""
    rows = target.rows_each
    if not isinstance(batch, dict):
        raise DataError(f"{where}: holds a {type(batch).__name__}, not a CIFAR batch dict; {fix}")
    for key in (b"data", spec.label_key):
        if key not in batch:
            raise DataError(f"{where}: no {key.decode()!r} entry, not a {spec.name} batch; {fix}")
    data, labels = batch[b"data"], batch[spec.label_key]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != PIXELS
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: data is {got}, expected uint8 N x {PIXELS}; {fix}")
    if data.shape[0] != rows:
        raise DataError(
            f"{where}: holds {data.shape[0]} images, the official {spec.name} file holds "
            f"{rows}; {fix}"
        )
    try:
        y = np.asarray(labels)
        ok = y.shape == (rows,) and (y.dtype.kind in "iu" or y.size == 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(
            f"{where}: {spec.label_key.decode()!r} is not a list of {rows} integer labels; {fix}"
        )
    y = y.astype(np.int64)
    if rows and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise DataError(
            f"{where}: labels span {int(y.min())}..{int(y.max())}, expected "
            f"0..{spec.num_classes - 1}; {fix}"
        )
    block = slice(index * rows, (index + 1) * rows)
    # One pass: uint8 -> float32 / 255 straight into the preallocated split (shared memory).
    out = target.x.view(-1, PIXELS)[block].numpy()
    np.divide(data, np.float32(255.0), out=out, dtype=np.float32)
    target.y[block] = torch.from_numpy(y)


def _fetch_again(spec: CifarSpec, archive: Path) -> str:
    return f"delete {archive} and fetch it again from {spec.url}"


def _extract_again(spec: CifarSpec, folder: Path) -> str:
    return f"replace {folder}/ with a fresh extraction of {spec.archive} (from {spec.url})"


def _read_folder(spec: CifarSpec, folder: Path, targets: dict[str, _Target]) -> None:
    fix = _extract_again(spec, folder)
    for target in targets.values():
        for index, member in enumerate(target.members):
            path = folder / member
            where = str(path)
            try:
                size = path.stat().st_size
                if size > _max_bytes(target.rows_each):
                    raise DataError(
                        f"{where}: {size} bytes is more than {target.rows_each} CIFAR images "
                        f"take; wrong or corrupt file; {fix}"
                    )
                raw = path.read_bytes()
            except OSError as exc:
                raise DataError(f"{where}: cannot read ({exc}); {fix}") from None
            _fill(spec, target, index, restricted_loads(raw, where, fix), where, fix)


def _read_archive(spec: CifarSpec, path: Path, targets: dict[str, _Target]) -> None:
    """Read the wanted members in one pass over the archive; nothing is extracted to disk.

    The gzip stream is read to its end, so its CRC and length check catch a corrupt archive
    even where the damage lies outside the members read.
    """
    fix = _fetch_again(spec, path)
    wanted = {
        f"{spec.folder}/{member}": (target, index)
        for target in targets.values()
        for index, member in enumerate(target.members)
    }
    done: set[str] = set()
    try:
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for info in tar:
                    name = info.name.removeprefix("./")
                    if name not in wanted or name in done:
                        continue
                    target, index = wanted[name]
                    where = f"{path} member {name}"
                    if not info.isfile():
                        raise DataError(f"{where}: is not a regular file; {fix}")
                    if info.size > _max_bytes(target.rows_each):
                        raise DataError(
                            f"{where}: {info.size} bytes is more than {target.rows_each} CIFAR "
                            f"images take; wrong or corrupt archive; {fix}"
                        )
                    handle = tar.extractfile(info)
                    raw = handle.read() if handle is not None else b""
                    if len(raw) != info.size:
                        raise EOFError(f"member {name} ends early")
                    _fill(spec, target, index, restricted_loads(raw, where, fix), where, fix)
                    done.add(name)
            while gz.read(1 << 20):  # to the end, so that gzip checks its CRC and length
                pass
    except DataError:
        raise
    except _READ_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: truncated or corrupt archive ({reason}); {fix}") from None
    missing = [name for name in wanted if name not in done]
    if missing:
        raise DataError(
            f"{path}: no member {missing[0]}, not the official {spec.archive}; {fix}"
        )


# --- finding the files ----------------------------------------------------------------------


def _find(spec: CifarSpec, data_dir: PathLike, download: bool) -> Path:
    """The extracted folder or the archive, in search order; downloads the archive if neither.

    In each data folder a complete extracted folder is used first, then the archive. An
    incomplete extracted folder with no archive anywhere is reported, not downloaded over.
    """
    members = spec.train + spec.test
    incomplete: tuple[Path, str] | None = None
    for root in resolve_data_dirs(data_dir):
        folder = root / spec.name / spec.folder
        if folder.is_dir():
            absent = [m for m in members if not (folder / m).is_file()]
            if not absent:
                return folder
            if incomplete is None:
                incomplete = (folder, absent[0])
        archive = root / spec.name / spec.archive
        if archive.is_file():
            return archive
    if incomplete is not None:
        folder, member = incomplete
        raise DataError(
            f"{spec.name}: {folder / member} is missing; extract all of {spec.archive} (from "
            f"{spec.url}) into {folder.parent}/, or put the archive itself there"
        )
    remote = Remote((spec.url,), spec.md5, "md5")
    try:
        return locate(spec.name, spec.archive, data_dir=data_dir, remote=remote,
                      download_ok=download)
    except DataError as exc:
        root = resolve_data_dirs(data_dir)[0] / spec.name
        raise DataError(
            f"{exc}; get it from {spec.url} (or put its extracted folder {spec.folder}/ "
            f"in {root}/)"
        ) from None


def load_cifar(spec: CifarSpec, data_dir: PathLike = None, download: bool = True) -> Dataset:
    """The Dataset of ``spec`` from its extracted folder or archive (see the module docstring)."""
    source = _find(spec, data_dir, download)
    targets = _targets(spec)
    if source.is_dir():
        _read_folder(spec, source, targets)
    else:
        _read_archive(spec, source, targets)
    train, test = (Split(targets[p].x, targets[p].y) for p in ("train", "test"))
    return Dataset(spec.name, train, test, spec.num_classes, spec.description, UNIT)


@DATASETS.register("cifar10", CIFAR10.description)
def load_cifar10(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """CIFAR-10 from ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``."""
    return load_cifar(CIFAR10, data_dir, download)


@DATASETS.register("cifar100", CIFAR100.description)
def load_cifar100(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """CIFAR-100 (fine labels) from ``cifar-100-python.tar.gz`` or ``cifar-100-python/``."""
    return load_cifar(CIFAR100, data_dir, download)
