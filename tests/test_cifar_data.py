"""CIFAR-10/100 loaders on tiny fake releases in the official layout, and the CIFAR augmentation.

The fake batches are written the way the official Python 2 files are (every string a
``BINSTRING``, the array rebuilt by ``numpy.core.multiarray._reconstruct``), as a ``.tar.gz``
and as its extracted folder; ``cifar.ROWS`` is patched down to their few rows. No test touches
the network, and everything written goes to pytest's temporary folders.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import torch

from transferkit.data import DATASETS, InputSpec, cifar, load_dataset, paths
from transferkit.data.augment import random_crop_flip, random_flip, random_translate
from transferkit.errors import DataError

FAKE_ROWS = {"cifar10": (20, 6), "cifar100": (12, 5)}  # 5 x 4 train rows for CIFAR-10
MARK = (2, 5, 7)  # (c, y, x) of a marker pixel: blue plane, row 5, column 7


# --- writing fake releases ------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2 as Python 2's cPickle wrote it: str and bytes alike as ``BINSTRING``."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if getattr(obj, "__name__", "") == "_reconstruct":  # where NumPy 1 and the files have it
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def fake_batch(rows: int, spec: cifar.CifarSpec, seed: int, name: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(rows, cifar.PIXELS), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, spec.num_classes, size=rows)]
    labels[0], labels[-1] = 0, spec.num_classes - 1  # both ends of the label range
    batch: dict[str, Any] = {"batch_label": name, "data": data,
                             "filenames": [f"img_{seed}_{i}.png" for i in range(rows)]}
    if spec.name == "cifar10":
        batch["labels"] = labels
    else:
        batch["fine_labels"] = labels
        batch["coarse_labels"] = [v // 5 for v in labels]
    return batch


def fake_members(spec: cifar.CifarSpec) -> dict[str, dict[str, Any]]:
    """The batches of a fake release by member name, in the official split order."""
    train_rows, test_rows = FAKE_ROWS[spec.name]
    names = spec.train + spec.test
    rows = [train_rows // len(spec.train)] * len(spec.train) + [test_rows]
    pairs = enumerate(zip(names, rows, strict=True))
    return {name: fake_batch(r, spec, seed, name) for seed, (name, r) in pairs}


def meta(spec: cifar.CifarSpec) -> tuple[str, dict[str, Any]]:
    if spec.name == "cifar10":
        return "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                "num_cases_per_batch": 10000, "num_vis": 3072}
    return "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                    "coarse_label_names": [f"coarse{i}" for i in range(20)]}


def member_bytes(spec: cifar.CifarSpec, batches: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    files = {name: py2_dumps(batch) for name, batch in batches.items()}
    meta_name, meta_dict = meta(spec)
    files[meta_name] = py2_dumps(meta_dict)
    return files


def write_folder(root: Path, spec: cifar.CifarSpec, files: dict[str, bytes]) -> Path:
    folder = root / spec.name / spec.folder
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def write_archive(root: Path, spec: cifar.CifarSpec, files: dict[str, bytes]) -> Path:
    path = root / spec.name / spec.archive
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(spec.folder)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name in reversed(list(files)):  # not in split order, as in the official archive
            data = files[name]
            info = tarfile.TarInfo(f"{spec.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def expected(spec: cifar.CifarSpec, batches: dict[str, dict[str, Any]], part: str):
    members = spec.train if part == "train" else spec.test
    key = "labels" if spec.name == "cifar10" else "fine_labels"
    data = np.concatenate([batches[m]["data"] for m in members])
    labels = np.concatenate([batches[m][key] for m in members]).astype(np.int64)
    return data, labels


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, a temporary cache, no $TRANSFERKIT_DATA_DIR, and the fake row counts."""
    def refuse(url: str, timeout: float) -> BinaryIO:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(paths, "urlopen", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(cifar, "ROWS", dict(FAKE_ROWS))


SPECS = [cifar.CIFAR10, cifar.CIFAR100]


def one_line_error(name: str, root: Path, **kw: Any) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(name, root, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- loading --------------------------------------------------------------------------------


def test_registered() -> None:
    assert "cifar10" in DATASETS and "cifar100" in DATASETS
    assert "CIFAR-100" in DATASETS.describe()["cifar100"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("form", ["archive", "folder"])
def test_loads_official_layout(spec: cifar.CifarSpec, form: str, tmp_path: Path) -> None:
    batches = fake_members(spec)
    # A marker pixel at (c, y, x) of the second row of the last train member; its transposed
    # position (c, x, y) is 0 so that a transposed or interleaved reading cannot pass.
    last = spec.train[-1]
    c, y, x = MARK
    batches[last]["data"][1, 1024 * c + 32 * y + x] = 255
    batches[last]["data"][1, 1024 * c + 32 * x + y] = 0
    files = member_bytes(spec, batches)
    writer = write_archive if form == "archive" else write_folder
    writer(tmp_path / "data", spec, files)
    data = load_dataset(spec.name, tmp_path / "data", download=False)

    assert data.name == spec.name and data.num_classes == spec.num_classes
    assert data.input_shape == (3, 32, 32)
    assert data.inputs == InputSpec(0.0, 1.0, (3, 32, 32))
    for part in ("train", "test"):
        split = getattr(data, part)
        raw, labels = expected(spec, batches, part)
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.is_contiguous() and tuple(split.x.shape) == (len(raw), 3, 32, 32)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert torch.equal(split.y, torch.from_numpy(labels))
        reference = torch.from_numpy(raw).to(torch.float32).div_(255.0).reshape(-1, 3, 32, 32)
        assert torch.equal(split.x, reference)
    assert int(data.train.y.min()) == 0 and int(data.train.y.max()) == spec.num_classes - 1
    row = (len(spec.train) - 1) * (FAKE_ROWS[spec.name][0] // len(spec.train)) + 1
    assert float(data.train.x[row, c, y, x]) == 1.0
    assert float(data.train.x[row, c, x, y]) == 0.0
    # Per pixel: channel plane first, then row, then column.
    pixel = batches[spec.train[0]]["data"][0, 1024 * 1 + 32 * 3 + 30]
    assert float(data.train.x[0, 1, 3, 30]) == np.float32(pixel) / np.float32(255.0)


def test_archive_and_folder_agree_and_folder_wins(tmp_path: Path) -> None:
    spec = cifar.CIFAR10
    files = member_bytes(spec, fake_members(spec))
    write_archive(tmp_path / "a", spec, files)
    from_archive = load_dataset("cifar10", tmp_path / "a", download=False)
    write_folder(tmp_path / "a", spec, files)
    (tmp_path / "a" / "cifar10" / spec.archive).write_bytes(b"broken")  # would fail if read
    from_folder = load_dataset("cifar10", tmp_path / "a", download=False)
    assert torch.equal(from_archive.train.x, from_folder.train.x)
    assert torch.equal(from_archive.test.y, from_folder.test.y)


def test_python3_pickles_load_too(tmp_path: Path) -> None:
    """Protocol 2 from Python 3 stores bytes via ``_codecs.encode(text, "latin1")``."""
    spec = cifar.CIFAR10
    batches = fake_members(spec)
    files = {}
    for name, batch in batches.items():
        converted = {k.encode(): (v.encode() if isinstance(v, str) else v)
                     for k, v in batch.items()}
        files[name] = pickle.dumps(converted, protocol=2)
    assert b"_codecs" in files["test_batch"]
    write_folder(tmp_path, spec, files)
    data = load_dataset("cifar10", tmp_path, download=False)
    assert torch.equal(data.test.y, torch.from_numpy(expected(spec, batches, "test")[1]))


def test_environment_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = cifar.CIFAR100
    write_archive(tmp_path / "env", spec, member_bytes(spec, fake_members(spec)))
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "env"))
    assert len(load_dataset("cifar100", tmp_path / "empty", download=False).test) == 5


def test_download_is_checked_with_md5(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = cifar.CIFAR10
    archive = write_archive(tmp_path / "origin", spec, member_bytes(spec, fake_members(spec)))
    payload = archive.read_bytes()
    urls: list[str] = []

    def serve(url: str, timeout: float) -> BinaryIO:
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(paths, "urlopen", serve)
    message = one_line_error("cifar10", tmp_path / "none")  # the fake is not the real file
    assert f"md5 {hashlib.md5(payload).hexdigest()} does not match the published" in message
    assert spec.md5 in message and urls == [spec.url]
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]

    fake = dataclasses.replace(spec, md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(cifar, "CIFAR10", fake)
    data = load_dataset("cifar10", tmp_path / "none")
    cached = tmp_path / "cache" / "transferkit" / "cifar10" / spec.archive
    assert cached.read_bytes() == payload and len(data.train) == 20


# --- missing, wrong and corrupt files -------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_missing_files_say_where_to_put_what(spec: cifar.CifarSpec, tmp_path: Path) -> None:
    for download in (False, True):
        message = one_line_error(spec.name, tmp_path / "empty", download=download)
        assert message.startswith(f"{spec.name}: {spec.archive} not found in ")
        assert spec.url in message and f"{spec.folder}/" in message
        assert f"put the file in {tmp_path / 'empty' / spec.name}/" in message
        assert ("network disabled" in message) == download


def test_incomplete_folder_names_the_missing_member(tmp_path: Path) -> None:
    spec = cifar.CIFAR10
    folder = write_folder(tmp_path, spec, member_bytes(spec, fake_members(spec)))
    (folder / "data_batch_4").unlink()
    message = one_line_error("cifar10", tmp_path, download=False)
    assert f"{folder / 'data_batch_4'} is missing" in message
    assert spec.archive in message and spec.url in message


@pytest.mark.parametrize("damage", ["truncated", "flipped", "crc"])
def test_corrupt_archive_is_one_line(damage: str, tmp_path: Path) -> None:
    spec = cifar.CIFAR10
    path = write_archive(tmp_path, spec, member_bytes(spec, fake_members(spec)))
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "flipped":
        for i in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[i] ^= 0xA5
    else:  # the gzip trailer's CRC32: only reading the stream to its end notices
        raw[-8] ^= 0xFF
    path.write_bytes(bytes(raw))
    message = one_line_error("cifar10", tmp_path, download=False)
    assert message.startswith(str(path)) and f"delete {path} and fetch it again" in message


def test_archive_without_a_member(tmp_path: Path) -> None:
    spec = cifar.CIFAR100
    files = member_bytes(spec, fake_members(spec))
    del files["test"]
    path = write_archive(tmp_path, spec, files)
    message = one_line_error("cifar100", tmp_path, download=False)
    assert f"{path}: no member cifar-100-python/test" in message


def test_official_counts_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = cifar.CIFAR10
    write_archive(tmp_path, spec, member_bytes(spec, fake_members(spec)))
    monkeypatch.setattr(cifar, "ROWS", {"cifar10": (50000, 10000)})
    message = one_line_error("cifar10", tmp_path, download=False)
    assert "member cifar-10-batches-py/" in message
    assert "images, the official cifar10 file holds 10000; delete " in message


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda b: b.update(labels=[10, *b["labels"][1:]]), "..10, expected 0..9"),
        (lambda b: b.update(labels=b["labels"][:-1]), "is not a list of 4 integer labels"),
        (lambda b: b.update(data=b["data"][:, :1024]), "data is uint8 (4, 1024), expected"),
        (lambda b: b.update(data=b["data"].astype(np.float32)), "data is float32 (4, 3072)"),
        (lambda b: b.pop("data"), "no 'data' entry"),
    ],
    ids=["label-range", "label-count", "data-shape", "data-dtype", "no-data"],
)
def test_wrong_contents_name_the_member(change: Any, needle: str, tmp_path: Path) -> None:
    spec = cifar.CIFAR10
    batches = fake_members(spec)
    change(batches["data_batch_2"])
    folder = write_folder(tmp_path, spec, member_bytes(spec, batches))
    message = one_line_error("cifar10", tmp_path, download=False)
    assert message.startswith(f"{folder / 'data_batch_2'}: ") and needle in message
    assert f"replace {folder}/ with a fresh extraction of {spec.archive}" in message


def test_corrupt_pickle_is_one_line(tmp_path: Path) -> None:
    spec = cifar.CIFAR10
    files = member_bytes(spec, fake_members(spec))
    files["test_batch"] = files["test_batch"][:500]
    folder = write_folder(tmp_path, spec, files)
    message = one_line_error("cifar10", tmp_path, download=False)
    assert message.startswith(f"{folder / 'test_batch'}: not a readable CIFAR batch")


# --- refusing pickles that would run code ---------------------------------------------------


class Touch:
    """Unpickling this calls ``reducer(*args)``, which creates ``path``."""

    def __init__(self, how: str, path: Path) -> None:
        self.how, self.path = how, path

    def __reduce__(self) -> tuple[Any, ...]:
        if self.how == "system":
            return os.system, (f"touch '{self.path}'",)
        return open, (str(self.path), "w")


@pytest.mark.parametrize("how", ["system", "open"])
@pytest.mark.parametrize("form", ["archive", "folder"])
def test_crafted_pickle_is_refused(how: str, form: str, tmp_path: Path) -> None:
    # The payload is real: a plain pickle.loads runs it.
    probe = tmp_path / "plain_loads_ran"
    pickle.loads(pickle.dumps(Touch(how, probe), protocol=2))
    assert probe.exists()

    spec = cifar.CIFAR10
    batches = fake_members(spec)
    marker = tmp_path / "pwned"
    files = member_bytes(spec, batches)
    files["data_batch_3"] = pickle.dumps({b"data": Touch(how, marker)}, protocol=2)
    root = tmp_path / "data"
    (write_archive if form == "archive" else write_folder)(root, spec, files)
    message = one_line_error("cifar10", root, download=False)
    assert not marker.exists()
    assert "data_batch_3" in message and "refused to unpickle" in message
    assert "could run code" in message
    if how == "system":
        assert "posix.system" in message or "os.system" in message


def test_restricted_unpickler_allows_only_the_table() -> None:
    refused = [
        pickle.dumps(dataclasses.replace, protocol=2),  # any function by reference
        pickle.dumps(bytearray(b"x"), protocol=2),  # builtins.bytearray
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.",
    ]
    for raw in refused:
        with pytest.raises(DataError, match="refused to unpickle"):
            cifar.restricted_loads(raw, "f", "fix it")
    allowed = {b"a": np.arange(6, dtype=np.uint8).reshape(2, 3), b"b": [1, 2], b"c": b"x"}
    for protocol in (2, 3, 4):
        got = cifar.restricted_loads(pickle.dumps(allowed, protocol=protocol), "f", "fix")
        assert np.array_equal(got[b"a"], allowed[b"a"]) and got[b"b"] == [1, 2]


# --- augmentation ---------------------------------------------------------------------------


def all_crops(img: np.ndarray, padding: int) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every (dy, dx, flipped) crop of ``img`` (C x H x W) zero-padded by ``padding``."""
    _, h, w = img.shape
    padded = np.pad(img, ((0, 0), (padding, padding), (padding, padding)))
    out = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop[:, :, ::-1]
    return out


def which_crops(img: np.ndarray, got: np.ndarray, padding: int) -> list[tuple[int, int, bool]]:
    """The crops ``got`` equals (several only where a crop can lie all in the padding)."""
    matches = [k for k, crop in all_crops(img, padding).items() if np.array_equal(crop, got)]
    assert matches, "not a crop of the padded input"
    return matches


@pytest.mark.parametrize("shape", [(6, 3, 8, 8), (5, 1, 5, 9), (4, 2, 7, 3)])
@pytest.mark.parametrize("padding", [0, 1, 4])
def test_crop_flip_is_a_crop_of_the_padded_input(shape: tuple[int, ...], padding: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(shape) + 0.5  # no zeros, so padding is told apart from pixels
    for flip in (True, False):
        out = random_crop_flip(x, padding, flip)
        assert out.shape == x.shape and out.dtype == x.dtype
        for i in range(shape[0]):
            matches = which_crops(x[i].numpy(), out[i].numpy(), padding)
            assert flip or any(not flipped for _, _, flipped in matches)


def test_crop_flip_draws_every_crop() -> None:
    torch.manual_seed(1)
    x = torch.rand(400, 1, 4, 5) + 0.5
    out = random_crop_flip(x, padding=1)
    found = [which_crops(x[i].numpy(), out[i].numpy(), 1) for i in range(len(x))]
    assert all(len(m) == 1 for m in found)  # a 4 x 5 image tells every crop apart
    seen = {m[0] for m in found}
    assert len(seen) == 3 * 3 * 2  # all offsets, flipped and not


def test_flips() -> None:
    x = torch.rand(16, 3, 4, 6)
    assert torch.equal(random_flip(x, p=1.0), torch.flip(x, (3,)))
    assert torch.equal(random_flip(x, p=0.0), x)
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)
    torch.manual_seed(3)
    out = random_crop_flip(x, padding=0)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    torch.manual_seed(3)
    assert torch.equal(random_flip(x), out)  # padding=0 is random_flip, same draws


def test_same_seed_same_output() -> None:
    x = torch.rand(32, 3, 8, 8)
    torch.manual_seed(7)
    a = random_crop_flip(x)
    torch.manual_seed(7)
    b = random_crop_flip(x)
    torch.manual_seed(8)
    c = random_crop_flip(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The draws come from the global RNG: saving and restoring its state replays them.
    state = torch.get_rng_state()
    d = random_crop_flip(x)
    torch.set_rng_state(state)
    assert torch.equal(random_crop_flip(x), d)


def test_crop_without_flip_matches_translate_draws() -> None:
    """Without flip the crop is random_translate's shift (same draws, same gathers)."""
    x = torch.rand(10, 2, 6, 5)
    torch.manual_seed(11)
    a = random_crop_flip(x, padding=2, flip=False)
    torch.manual_seed(11)
    assert torch.equal(a, random_translate(x, 2))


def test_augment_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="N x C x H x W"):
        random_crop_flip(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.zeros(1, 3, 8, 8), padding=-1)
    with pytest.raises(ValueError, match="probability"):
        random_flip(torch.zeros(1, 3, 8, 8), p=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augment_on_cuda() -> None:
    x = torch.rand(64, 3, 32, 32, device="cuda") + 0.5
    torch.manual_seed(5)
    out = random_crop_flip(x)
    assert out.device == x.device and out.shape == x.shape
    cpu_x, cpu_out = x.cpu().numpy(), out.cpu().numpy()
    for i in range(8):
        which_crops(cpu_x[i], cpu_out[i], 4)
    assert torch.equal(random_flip(x, p=1.0), x.flip(3))


def test_gzip_helper_is_official_format(tmp_path: Path) -> None:
    """The fake archive is a real gzip stream (sanity check of the fixture itself)."""
    spec = cifar.CIFAR10
    path = write_archive(tmp_path, spec, member_bytes(spec, fake_members(spec)))
    with gzip.open(path) as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        names = [m.name for m in tar]
    assert f"{spec.folder}/data_batch_1" in names and f"{spec.folder}/batches.meta" in names
