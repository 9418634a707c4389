"""Data layer: bundled and real loaders, IDX reader, file lookup and download, shift, pairs.

Real-data tests read the shared datasets from ``$TRANSFERKIT_DATA_DIR`` or
``<repo>/../shared/datasets`` (Fashion-MNIST also from its Debian package folder) and are
skipped when the files are absent. No test touches the network: downloads use ``file://`` URLs
or a fake opener, and everything written goes to pytest's temporary folders.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import urllib.error
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from transferkit.data import (
    DATASETS,
    PAIRS,
    Dataset,
    Split,
    load_dataset,
    load_pair,
    paths,
    resolve_data_dirs,
)
from transferkit.data.datasets import FASHION_SYSTEM_DIR, read_usps
from transferkit.data.idx import read_images, read_labels
from transferkit.errors import DataError, UnknownNameError

REPO = Path(__file__).resolve().parents[1]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
USPS_TRAIN_COUNTS = [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
USPS_TEST_COUNTS = [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]
MNIST_FILES = [
    f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
]


def shared_dir() -> Path:
    env = os.environ.get(paths.ENV_VAR)
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def require(folder: str, files: list[str], extra: Path | None = None) -> Path:
    """The data root holding ``folder/files`` (or ``extra``), else skip with the reason."""
    root = shared_dir()
    if all((root / folder / f).is_file() for f in files):
        return root
    if extra is not None and all((extra / f).is_file() for f in files):
        return root
    pytest.skip(f"shared datasets not found at {root / folder} (set {paths.ENV_VAR})")


def counts(y: torch.Tensor) -> list[int]:
    return torch.bincount(y, minlength=10).tolist()


def check_standalone(data: Dataset, shape: tuple[int, ...]) -> None:
    assert data.input_shape == shape
    assert data.num_classes == 10
    for split in (data.train, data.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.is_contiguous()
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Refuse every non-file URL and point the user cache at a temporary folder."""
    real = paths.urlopen

    def guarded(url: str, timeout: float) -> BinaryIO:
        if not url.startswith("file:"):
            raise urllib.error.URLError("network disabled in tests")
        return real(url, timeout)

    monkeypatch.setattr(paths, "urlopen", guarded)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# --- real data (read once per module) -------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist", require("mnist", MNIST_FILES), download=False)


@pytest.fixture(scope="module")
def usps() -> Dataset:
    return load_dataset("usps", require("usps", ["zip.train.gz", "zip.test.gz"]), download=False)


@pytest.fixture(scope="module")
def mnist_m() -> Dataset:
    root = require("mnist_m", ["mnist_m_train.npz", "mnist_m_test.npz"])
    return load_dataset("mnist_m", root, download=False)


def test_mnist_counts_and_pixel_stats(mnist: Dataset) -> None:
    check_standalone(mnist, (1, 28, 28))
    assert counts(mnist.train.y) == MNIST_TRAIN_COUNTS
    assert counts(mnist.test.y) == MNIST_TEST_COUNTS
    x = mnist.train.x.double()
    assert float(x.mean()) == pytest.approx(0.1307, abs=5e-4)
    assert float(x.std()) == pytest.approx(0.3081, abs=5e-4)


def test_usps_counts(usps: Dataset) -> None:
    check_standalone(usps, (1, 16, 16))
    assert counts(usps.train.y) == USPS_TRAIN_COUNTS
    assert counts(usps.test.y) == USPS_TEST_COUNTS
    assert float(usps.train.x.min()) == 0.0 and float(usps.train.x.max()) == 1.0


def test_mnist_m_counts_and_labels_match_mnist(mnist_m: Dataset, mnist: Dataset) -> None:
    check_standalone(mnist_m, (3, 32, 32))
    assert (len(mnist_m.train), len(mnist_m.test)) == (59001, 9001)
    assert torch.equal(mnist_m.train.y, mnist.train.y[:59001])
    assert torch.equal(mnist_m.test.y, mnist.test.y[:9001])


def test_fashion_mnist_balanced() -> None:
    root = require("fashion_mnist", MNIST_FILES, extra=FASHION_SYSTEM_DIR)
    data = load_dataset("fashion_mnist", root, download=False)
    check_standalone(data, (1, 28, 28))
    assert counts(data.train.y) == [6000] * 10
    assert counts(data.test.y) == [1000] * 10


# --- bundled digits and the shifted copy ----------------------------------------------------


def test_digits_shapes_and_split() -> None:
    data = load_dataset("digits")
    check_standalone(data, (1, 8, 8))
    assert (len(data.train), len(data.test)) == (1347, 450)
    per_class = torch.tensor(counts(data.train.y)) + torch.tensor(counts(data.test.y))
    assert (torch.tensor(counts(data.test.y)) - 0.25 * per_class).abs().max() <= 1  # stratified
    assert torch.equal(data.train.x, load_dataset("digits").train.x)


def test_digits_shifted_deterministic_and_different() -> None:
    digits, a, b = (
        load_dataset("digits"),
        load_dataset("digits_shifted"),
        load_dataset("digits_shifted"),
    )
    check_standalone(a, (1, 8, 8))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert torch.equal(a.train.y, digits.train.y) and torch.equal(a.test.y, digits.test.y)
    assert float((a.train.x - digits.train.x).abs().mean()) > 0.1


def test_digits_shift_hurts_but_is_learnable() -> None:
    src, tgt = load_dataset("digits"), load_dataset("digits_shifted")

    def flat(s: Split) -> tuple[np.ndarray, np.ndarray]:
        return s.x.reshape(len(s), -1).numpy(), s.y.numpy()

    on_src = LogisticRegression(max_iter=2000).fit(*flat(src.train))
    on_tgt = LogisticRegression(max_iter=2000).fit(*flat(tgt.train))
    assert on_src.score(*flat(src.test)) > 0.93
    assert 0.45 < on_src.score(*flat(tgt.test)) < 0.8
    assert on_tgt.score(*flat(tgt.test)) > 0.9


# --- pairs ----------------------------------------------------------------------------------


def check_pair_range(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(x.min()) == pytest.approx(-1.0) and float(x.max()) == pytest.approx(1.0, abs=0.05)


def test_digits_pair() -> None:
    pair = load_pair("digits->digits_shifted")
    assert pair.input_shape == (1, 8, 8) and pair.num_classes == 10
    for data in (pair.source, pair.target):
        check_pair_range(data.train.x)
    standalone = load_dataset("digits").train.x
    assert torch.allclose(pair.source.train.x, (standalone - 0.5) / 0.5)


def test_mnist_usps_pairs(mnist: Dataset, usps: Dataset) -> None:
    forward = PAIRS.get("mnist->usps").build(mnist, usps)
    backward = PAIRS.get("usps->mnist").build(usps, mnist)
    assert forward.input_shape == backward.input_shape == (1, 28, 28)
    assert len(forward.target.train) == len(usps.train) and len(forward.source.test) == 10000
    for split in (forward.source.train, forward.target.train, backward.source.test):
        check_pair_range(split.x)
    assert torch.equal(forward.target.test.x, backward.source.test.x)
    assert float(mnist.train.x.min()) == 0.0  # the standalone data is left unchanged


def test_mnist_mnist_m_pair(mnist: Dataset, mnist_m: Dataset) -> None:
    def head(d: Dataset, n: int) -> Dataset:  # a slice keeps memory and time down
        return Dataset(d.name, d.train.subset(n), d.test.subset(n), d.num_classes)

    pair = PAIRS.get("mnist->mnist_m").build(head(mnist, 2000), head(mnist_m, 2000))
    assert pair.input_shape == (3, 32, 32)
    src = pair.source.train.x
    check_pair_range(src)
    check_pair_range(pair.target.train.x)
    assert torch.equal(src[:, 0], src[:, 2])  # grey repeated to RGB
    assert bool((src[:, :, :2, :] == -1.0).all())  # zero padding is background
    assert torch.equal(src[:, 0, 2:30, 2:30], (mnist.train.x[:2000, 0] - 0.5) / 0.5)


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"valid datasets: .*digits, digits_shifted"):
        load_dataset("minst")
    with pytest.raises(UnknownNameError, match="mnist->usps"):
        load_pair("mnist->svhn")
    assert set(DATASETS) >= {"digits", "digits_shifted", "mnist", "fashion_mnist", "usps"}
    assert all(DATASETS.describe().values()) and all(PAIRS.describe().values())


# --- IDX reader -----------------------------------------------------------------------------


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


def test_idx_roundtrip_gz_and_raw(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(2051, (2, 3, 4), images.tobytes())
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "a").write_bytes(raw)
    assert np.array_equal(read_images(tmp_path / "a.gz"), images)
    assert np.array_equal(read_images(tmp_path / "a"), images)
    (tmp_path / "l").write_bytes(idx_bytes(2049, (3,), bytes([1, 2, 9])))
    assert read_labels(tmp_path / "l").tolist() == [1, 2, 9]


def test_idx_truncated_gz(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(2051, (5, 28, 28), bytes(5 * 784)))
    bad = tmp_path / "cut-images-idx3-ubyte.gz"
    bad.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"cut-images-idx3-ubyte\.gz"):
        read_images(bad)


def test_idx_short_payload(tmp_path: Path) -> None:
    bad = tmp_path / "short.gz"
    bad.write_bytes(gzip.compress(idx_bytes(2051, (5, 28, 28), bytes(4 * 784))))
    with pytest.raises(DataError, match=r"short\.gz: truncated"):
        read_images(bad)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    labels = tmp_path / "labels.gz"
    labels.write_bytes(gzip.compress(idx_bytes(2049, (3,), bytes(3))))
    with pytest.raises(DataError, match=r"labels\.gz: magic number 2049 is not the expected 2051"):
        read_images(labels)


def test_usps_wrong_row_length(tmp_path: Path) -> None:
    bad = tmp_path / "zip.train.gz"
    bad.write_bytes(gzip.compress(b"3 " + b"0.5 " * 255 + b"\n"))
    with pytest.raises(DataError, match="257 values"):
        read_usps(bad)


# --- lookup and download --------------------------------------------------------------------


def test_resolve_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "env"))
    dirs = resolve_data_dirs(tmp_path / "arg")
    assert dirs == [tmp_path / "arg", tmp_path / "env", tmp_path / "cache" / "transferkit"]
    monkeypatch.delenv(paths.ENV_VAR)
    assert resolve_data_dirs() == [tmp_path / "cache" / "transferkit"]


def test_missing_file_offline_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "empty", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("mnist: train-images-idx3-ubyte.gz not found in ")
    assert "download disabled" in message and str(tmp_path / "empty" / "mnist") in message
    with pytest.raises(DataError, match=r"no automatic download.*PNG archive") as info:
        load_dataset("mnist_m", tmp_path / "empty")
    assert "\n" not in str(info.value)


def test_download_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    with pytest.raises(DataError) as info:  # the autouse guard refuses the https URLs
        load_dataset("usps", tmp_path / "empty", download=True)
    message = str(info.value)
    assert "\n" not in message and "zip.train.gz" in message
    assert "network disabled in tests" in message and paths.ENV_VAR in message
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no partial file


def make_remote(source: Path, checksum: str | None = None) -> paths.Remote:
    digest = checksum or hashlib.sha256(source.read_bytes()).hexdigest()
    return paths.Remote((source.as_uri(),), digest, "sha256")


def test_download_verifies_and_places_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    source = tmp_path / "origin" / "zip.test.gz"
    source.parent.mkdir()
    source.write_bytes(b"payload" * 1000)
    got = paths.locate(
        "usps", "zip.test.gz", data_dir=tmp_path / "none", remote=make_remote(source)
    )
    assert got == tmp_path / "cache" / "transferkit" / "usps" / "zip.test.gz"
    assert got.read_bytes() == source.read_bytes()
    assert [p.name for p in got.parent.iterdir()] == ["zip.test.gz"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(got.stat().st_mode) == 0o666 & ~umask  # as open() would make it
    # A file already present locally is used without downloading.
    source.unlink()
    assert paths.locate("usps", "zip.test.gz", remote=make_remote(got)) == got


def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "origin.bin"
    source.write_bytes(b"not the real file")
    dest = tmp_path / "dl" / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match="does not match the published"):
        paths.download(make_remote(source, "0" * 64), dest)
    assert list(dest.parent.iterdir()) == []


def test_fake_opener_failure_cleans_up(tmp_path: Path) -> None:
    class Broken:
        def __enter__(self) -> Broken:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self, n: int) -> bytes:
            raise ConnectionResetError("connection reset mid-file")

    dest = tmp_path / "dl" / "x.gz"
    with pytest.raises(DataError, match="connection reset mid-file"):
        paths.download(
            paths.Remote(("https://example.invalid/x.gz",), "0" * 64),
            dest,
            opener=lambda url, timeout: Broken(),
        )
    assert list(dest.parent.iterdir()) == []
