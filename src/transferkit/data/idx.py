"""Reader for the IDX format of MNIST and Fashion-MNIST, gzipped or raw.

Layout (big-endian): two zero bytes, a type code (0x08 = uint8), the number of dimensions
``k``, then ``k`` uint32 sizes, then ``prod(sizes)`` values. MNIST image files therefore start
with the magic number 2051 = 0x00000803 and label files with 2049 = 0x00000801. The reader
checks the magic number and that the payload has exactly ``prod(sizes) * itemsize`` bytes, so a
truncated download is caught here rather than as a reshape error later.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from transferkit.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX type code -> big-endian numpy dtype.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when they start with the gzip magic."""
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            return gzip.decompress(raw)
        return raw
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip data ({exc}); fetch it again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Array stored in an IDX file; ``magic`` is the expected 32-bit magic number, if any."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DataError(
            f"{path}: magic number {found} is not the expected {magic}; wrong or corrupt file"
        )
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(f"{path}: magic number {found:#010x} is not an IDX header")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header
    if payload != expected:
        kind = "truncated" if payload < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {kind}: dims {dims} need {expected} data bytes, found {payload}; "
            "fetch the file again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def read_images(path: str | Path) -> np.ndarray:
    """uint8 images ``N x H x W`` from an IDX image file (magic 2051)."""
    return read_idx(path, IMAGES_MAGIC)


def read_labels(path: str | Path) -> np.ndarray:
    """uint8 labels ``N`` from an IDX label file (magic 2049)."""
    return read_idx(path, LABELS_MAGIC)
