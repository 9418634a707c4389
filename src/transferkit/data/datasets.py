"""Standalone datasets: ``load_dataset(name)`` returns a :class:`Dataset`.

Format of every standalone dataset: images are float32 ``N x C x H x W`` with values in
[0, 1] (pixel / 255 for 8-bit files), labels int64 in ``0..9``. Domain pairs (``pairs.py``)
resize and renormalise these to a shared input space.
Each records that convention as ``inputs=InputSpec(mean=0, std=1)``.

| name | shape | source |
| --- | --- | --- |
| digits | 1x8x8 | scikit-learn's bundled copy of the UCI optical digits (no download) |
| mnist | 1x28x28 | official IDX files |
| fashion_mnist | 1x28x28 | official IDX files (also found in a Debian package's folder) |
| usps | 1x16x16 | ESL book's ``zip.{train,test}.gz``, values mapped from [-1, 1] |
| mnist_m | 3x32x32 | ``mnist_m_{train,test}.npz`` decoded from the PNG release |
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from transferkit.data.base import Dataset, Split
from transferkit.data.idx import read_images, read_labels
from transferkit.data.inputs import InputSpec
from transferkit.data.paths import Remote, locate
from transferkit.errors import DataError
from transferkit.registry import Registry

PathLike = str | Path | None
Loader = Callable[[PathLike, bool], Dataset]

DATASETS: Registry[Loader] = Registry("dataset")

NUM_CLASSES = 10
UNIT = InputSpec(mean=0.0, std=1.0)  # every standalone dataset: inputs in [0, 1]
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

_MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# SHA-256 of the original gzipped files (9,912,422 / 28,881 / 1,648,877 / 4,542 bytes).
_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}
_FASHION_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# MD5 sums published in the Fashion-MNIST README.
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_USPS_URL = "https://hastie.su.domains/ElemStatLearn/datasets/"
# The ESL page publishes no checksum. These SHA-256 sums are of the release files as kept in
# the project's shared data (their gzip headers keep the original names and 2001/2007
# timestamps, so they look unmodified); should the page serve other bytes, the download fails
# with a DataError instead of loading unverified data.
_USPS_SHA256 = {
    "zip.train.gz": "66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16",
    "zip.test.gz": "8dacc3c6e136af6c3488de9e5113a7daf140c8c2f1f0b61c54ee02f03f1a962f",
}
_MNIST_M_NOTE = (
    "the official MNIST-M release is a PNG archive; the .npz files (x uint8 N x 32 x 32 x 3, "
    "y labels) are decoded from it"
)


def load_dataset(name: str, data_dir: PathLike = None, download: bool = True) -> Dataset:
    """Load a registered dataset; an unknown name raises UnknownNameError listing valid ones."""
    return DATASETS.get(name)(data_dir, download)


def _check(
    name: str, split: str, x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...]
) -> Split:
    """Check shape, row count and label range (cheap checks only), then wrap as a Split."""
    if tuple(x.shape[1:]) != shape:
        raise DataError(f"{name} {split}: images have shape {tuple(x.shape[1:])}, expected {shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{name} {split}: {x.shape[0]} images but {y.shape[0]} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
        raise DataError(
            f"{name} {split}: labels span {int(y.min())}..{int(y.max())}, "
            f"expected 0..{NUM_CLASSES - 1}"
        )
    return Split(x.contiguous(), y)


def _labels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))


# --- digits ---------------------------------------------------------------------------------


def digits_arrays(
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of scikit-learn's digits; x float32 N x 8 x 8 in [0, 1].

    Pixels are counts 0..16, so x = count / 16. ``transform`` (if any) maps all 1797 images in
    their original order before the split. The split is a fixed stratified 75/25 split (seed 0),
    so every run and every shifted copy puts the same images in the same split.
    """
    from sklearn.datasets import load_digits as _sk_load_digits  # slow import: only here
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    if transform is not None:
        x = transform(x).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return x_tr, y_tr, x_te, y_te


def digits_dataset(
    name: str, arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], description: str
) -> Dataset:
    """Wrap 8x8 digit arrays (N x 8 x 8) as a 1x8x8 Dataset."""
    x_tr, y_tr, x_te, y_te = arrays
    train = _check(name, "train", torch.from_numpy(x_tr).unsqueeze(1), _labels(y_tr), (1, 8, 8))
    test = _check(name, "test", torch.from_numpy(x_te).unsqueeze(1), _labels(y_te), (1, 8, 8))
    return Dataset(name, train, test, NUM_CLASSES, description, UNIT)


_DIGITS_DESC = "scikit-learn 8x8 digits (bundled, no download), 1347 train / 450 test"


@DATASETS.register("digits", _DIGITS_DESC)
def load_digits(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """Bundled digits; ``data_dir`` and ``download`` are accepted for a uniform signature."""
    del data_dir, download
    return digits_dataset("digits", digits_arrays(), _DIGITS_DESC)


# --- MNIST and Fashion-MNIST ----------------------------------------------------------------


def _idx_dataset(
    name: str,
    urls: tuple[str, ...],
    checksums: dict[str, str],
    algorithm: str,
    description: str,
    data_dir: PathLike,
    download: bool,
    extra_dirs: tuple[Path, ...] = (),
) -> Dataset:
    """A 1x28x28 dataset stored as the four standard IDX .gz files; x = pixel / 255."""

    def fetch(filename: str) -> Path:
        remote = Remote(tuple(u + filename for u in urls), checksums[filename], algorithm)
        return locate(
            name,
            filename,
            data_dir=data_dir,
            remote=remote,
            download_ok=download,
            extra_dirs=extra_dirs,
        )

    splits = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_images(fetch(f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_labels(fetch(f"{prefix}-labels-idx1-ubyte.gz"))
        x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
        splits.append(_check(name, split, x, _labels(labels), (1, 28, 28)))
    return Dataset(name, splits[0], splits[1], NUM_CLASSES, description, UNIT)


_MNIST_DESC = "MNIST handwritten digits, 1x28x28, 60000 train / 10000 test"


@DATASETS.register("mnist", _MNIST_DESC)
def load_mnist(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """MNIST from the official IDX files."""
    return _idx_dataset(
        "mnist", _MNIST_URLS, _MNIST_SHA256, "sha256", _MNIST_DESC, data_dir, download
    )


_FASHION_DESC = "Fashion-MNIST clothing images, 1x28x28, 60000 train / 10000 test"


@DATASETS.register("fashion_mnist", _FASHION_DESC)
def load_fashion_mnist(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """Fashion-MNIST; also looks in the folder of the Debian package dataset-fashion-mnist."""
    return _idx_dataset(
        "fashion_mnist",
        _FASHION_URLS,
        _FASHION_MD5,
        "md5",
        _FASHION_DESC,
        data_dir,
        download,
        extra_dirs=(FASHION_SYSTEM_DIR,),
    )


# --- USPS -----------------------------------------------------------------------------------


def read_usps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from an ESL zip file: one row per image, label then 256 values in [-1, 1].

    Returns x float32 N x 16 x 16 mapped to [0, 1] by (v + 1) / 2, y int64.
    """
    try:
        text = gzip.decompress(path.read_bytes()).decode("ascii")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read USPS data ({exc}); fetch the file again") from None
    rows = text.split("\n")
    rows = [r for r in rows if r.strip()]
    try:
        values = np.array(" ".join(rows).split(), dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric USPS value ({exc})") from None
    if values.size != len(rows) * 257:
        raise DataError(
            f"{path}: {len(rows)} rows should hold 257 values each, found {values.size}"
        )
    table = values.reshape(len(rows), 257)
    labels = table[:, 0]
    if not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{path}: USPS labels must be whole numbers")
    x = ((table[:, 1:] + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32).reshape(-1, 16, 16)
    return x, labels.astype(np.int64)


_USPS_DESC = "USPS zip codes (ESL version), 1x16x16, 7291 train / 2007 test"


@DATASETS.register("usps", _USPS_DESC)
def load_usps(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """USPS from the ESL book's ``zip.train.gz`` / ``zip.test.gz``."""
    splits = []
    for split in ("train", "test"):
        filename = f"zip.{split}.gz"
        remote = Remote((_USPS_URL + filename,), _USPS_SHA256[filename], "sha256")
        path = locate("usps", filename, data_dir=data_dir, remote=remote, download_ok=download)
        x, y = read_usps(path)
        splits.append(
            _check("usps", split, torch.from_numpy(x).unsqueeze(1), _labels(y), (1, 16, 16))
        )
    return Dataset("usps", splits[0], splits[1], NUM_CLASSES, _USPS_DESC, UNIT)


# --- MNIST-M --------------------------------------------------------------------------------

_MNIST_M_DESC = "MNIST-M: MNIST digits blended over photo patches, 3x32x32, 59001 / 9001"


def read_mnist_m(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from an MNIST-M .npz: uint8 N x 32 x 32 x 3 -> float32 N x 3 x 32 x 32, / 255."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            x_raw, y_raw = npz["x"], npz["y"]
    except KeyError as exc:
        raise DataError(f"{path}: missing array {exc}; expected arrays 'x' and 'y'") from None
    except (OSError, ValueError, zlib.error, EOFError) as exc:
        raise DataError(f"{path}: cannot read .npz ({exc}); fetch the file again") from None
    if x_raw.dtype != np.uint8 or x_raw.ndim != 4 or x_raw.shape[1:] != (32, 32, 3):
        raise DataError(f"{path}: x is {x_raw.dtype} {x_raw.shape}, expected uint8 N x 32 x 32 x 3")
    # One pass converts dtype and layout (NHWC -> NCHW) into a contiguous float tensor.
    x = torch.empty(x_raw.shape[0], 3, 32, 32, dtype=torch.float32)
    x.copy_(torch.from_numpy(x_raw).permute(0, 3, 1, 2)).div_(255.0)
    return x, _labels(y_raw.reshape(-1))


@DATASETS.register("mnist_m", _MNIST_M_DESC)
def load_mnist_m(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """MNIST-M from ``mnist_m_{train,test}.npz``; there is no automatic download."""
    del download
    splits = []
    for split in ("train", "test"):
        path = locate(
            "mnist_m",
            f"mnist_m_{split}.npz",
            data_dir=data_dir,
            remote=None,
            no_download_reason=_MNIST_M_NOTE,
        )
        x, y = read_mnist_m(path)
        splits.append(_check("mnist_m", split, x, y, (3, 32, 32)))
    return Dataset("mnist_m", splits[0], splits[1], NUM_CLASSES, _MNIST_M_DESC, UNIT)
