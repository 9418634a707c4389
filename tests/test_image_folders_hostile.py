"""Image folders as they come from the field: phone photos, scraped sets, zips made on a Mac.

Each folder is read right or refused in one line naming the file and the fix; never a
traceback, a memory blow-up or pictures silently left out. Every image is a few pixels.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import unicodedata
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.data import image_folders
from transferkit.data.file_options import FileOptions
from transferkit.data.files import data_digest, load_file_dataset, load_file_pair
from transferkit.errors import DataError

Image = pytest.importorskip("PIL.Image")
ALL = FileOptions(test="all")


def grey(path: Path, value: int, size: tuple[int, int] = (4, 4), **save: object) -> Path:
    """A ``size`` (width, height) grey image of one ``value``, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path, **save)
    return path


def two_classes(root: Path, ext: str = "png") -> Path:
    for i, label in enumerate(("a", "b")):
        grey(root / label / f"0.{ext}", 40 + 100 * i)
        grey(root / label / f"1.{ext}", 50 + 100 * i)
    return root


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG of a few bytes whose header declares ``width x height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * (width + 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path


def test_what_systems_leave_in_a_folder_is_skipped(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "unzipped")
    for label in ("a", "b"):  # a zip made on a Mac, a NAS, Windows, Jupyter
        (root / "__MACOSX" / label).mkdir(parents=True)
        (root / "__MACOSX" / label / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        (root / label / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        (root / label / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (root / label / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (root / label / "desktop.ini").write_text("[.ShellClassInfo]")
        grey(root / label / ".ipynb_checkpoints" / "0-checkpoint.png", 255)
        grey(root / label / "@eaDir" / "0.png" / "SYNOFILE_THUMB_M.png", 255)
    grey(root / "@eaDir" / "thumb.png", 255)
    data = load_file_dataset(root, ALL)
    assert data.classes == ("a", "b") and data.train.y.tolist() == [0, 0, 1, 1]
    assert float(data.train.x.max()) < 1.0  # no junk thumbnail (255) was read
    # a target without labels: its images loose beside the Mac's __MACOSX
    target = tmp_path / "field"
    grey(target / "IMG_1.png", 10)
    grey(target / "IMG_2.png", 20)
    (target / "__MACOSX").mkdir()
    (target / "__MACOSX" / "._IMG_1.png").write_bytes(b"\x00\x05\x16\x07")
    pair = load_file_pair(str(root), str(target), ALL)
    assert len(pair.target.train) == 2 and not pair.target.train_labelled


def test_junk_a_file_browser_writes_does_not_change_the_datas_digest(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "photos")
    before = data_digest(str(root))
    (root / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # Finder, on opening the folder
    (root / "b" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")  # Explorer
    (root / "__MACOSX" / "a").mkdir(parents=True)
    (root / "__MACOSX" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    assert data_digest(str(root)) == before  # so --resume is not refused
    grey(root / "a" / "2.png", 70)
    assert data_digest(str(root)) != before


def test_pictures_of_every_extension_are_read_or_refused(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "scraped")
    grey(root / "a" / "web.jfif", 60, format="JPEG")
    grey(root / "a" / "x.JPE", 60, format="JPEG")
    grey(root / "b" / "face.pgm", 160)
    grey(root / "b" / "face.PPM", 160, format="PPM")
    (root / "b" / "notes.txt").write_text("not a picture, left out")
    data = load_file_dataset(root, ALL)
    names = sorted(Path(n).name for n in data.row_names or ())
    assert names == ["0.png", "0.png", "1.png", "1.png", "face.PPM", "face.pgm", "web.jfif",
                     "x.JPE"]
    # a camera's raw file: a picture that would be left out, so it is refused
    (root / "b" / "DSC_0001.NEF").write_bytes(b"II*\0raw")
    with pytest.raises(DataError, match=r"scraped/b holds 1 picture in a format Pillow does not "
                                        r"read \(\.nef; e\.g\. DSC_0001\.NEF\); convert them"):
        load_file_dataset(root, ALL)
    (root / "b" / "DSC_0001.NEF").unlink()
    # an iPhone's HEIC, which Pillow reads with a plugin only
    (root / "a" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic")
    plugin = r" \(Pillow reads \.HEIC images only with the pillow-heif plugin" \
        if importlib.util.find_spec("pillow_heif") is None else ""
    with pytest.raises(DataError, match=rf"image .*IMG_0001\.HEIC cannot be decoded{plugin}"):
        load_file_dataset(root, ALL)


def test_images_in_a_class_folders_sub_folders_are_not_left_out(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "nested")
    (root / "a" / "empty").mkdir()
    (root / "a" / "fake.png").mkdir()  # a folder named like an image, holding none: no picture
    assert len(load_file_dataset(root, ALL).train) == 4
    grey(root / "a" / "more" / "deeper" / "9.png", 90)
    with pytest.raises(DataError, match=r"class folder .*nested/a has images in its sub-folder "
                                        r"more/ too \(e\.g\. .*more/deeper/9\.png\), which would "
                                        r"be left out.*move them up into"):
        load_file_dataset(root, ALL)
    # a folder one level too high: its only "class" holds the classes
    wrapper = tmp_path / "download"
    two_classes(wrapper / "data" / "train")
    with pytest.raises(DataError, match=r"class folder .*download/data holds no images itself, "
                                        r"but its sub-folder train/ does.*give .*download/data"):
        load_file_dataset(wrapper, ALL)
    # a validation split beside train/: not two classes named train and val
    splits = tmp_path / "splits"
    two_classes(splits / "train")
    two_classes(splits / "val")
    with pytest.raises(DataError, match=r"splits holds train/, val/: splits are read from "
                                        r"folders named train/ and test/ only"):
        load_file_dataset(splits, ALL)
    (splits / "val").rename(splits / "Test")
    with pytest.raises(DataError, match=r"holds Test/, train/: .*\(lower case"):
        load_file_dataset(splits, ALL)


def test_links_that_lead_nowhere_or_round_are_named(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "linked")
    os.symlink(root / "a" / "0.png", root / "b" / "copy.png")  # a link to an image is read
    assert len(load_file_dataset(root, ALL).train) == 5
    os.symlink(root / "a" / "moved.png", root / "a" / "gone.png")
    with pytest.raises(DataError, match=r"image .*linked/a/gone\.png is a link to .*moved\.png, "
                                        r"which does not exist"):
        load_file_dataset(root, ALL)
    (root / "a" / "gone.png").unlink()
    os.symlink("self.png", root / "a" / "self.png")  # a link to itself
    with pytest.raises(DataError, match=r"self\.png is a link to self\.png"):
        load_file_dataset(root, ALL)
    (root / "a" / "self.png").unlink()
    os.symlink(root / "a", root / "c")
    with pytest.raises(DataError, match=r"class folders .*linked/a and .*linked/c are one folder"):
        load_file_dataset(root, ALL)
    (root / "c").unlink()
    os.symlink(root, root / "loop")
    with pytest.raises(DataError, match=r"class folder .*linked/loop is a link to .*, which "
                                        r"holds it \(a loop\)"):
        load_file_dataset(root, ALL)


def test_a_phone_photo_is_read_upright(tmp_path: Path) -> None:
    root = tmp_path / "phone"
    for label in ("a", "b"):  # portrait photos, stored upright
        grey(root / label / "upright.png", 100, size=(8, 16))
    # a portrait photo as a phone stores it: sideways (16 wide, 8 high), its top (white) on
    # the left, with EXIF orientation 6 (turn 90 degrees clockwise to view)
    photo = Image.new("L", (16, 8), 0)
    photo.paste(255, (0, 0, 4, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", exif=exif, quality=95)
    (root / "a" / "IMG_0002.jpg").write_bytes(buffer.getvalue())
    data = load_file_dataset(root, ALL)  # all upright 8x16: no "images differ in size"
    assert data.input_shape == (1, 16, 8)
    upright = data.train.x[0, 0]  # a/IMG_0002.jpg
    assert float(upright[:4].min()) > 0.9 and float(upright[4:].max()) < 0.1
    resized = load_file_dataset(root, FileOptions(test="all", size=8)).train.x[0, 0]
    assert float(resized[0].min()) > 0.9 and float(resized[3:].max()) < 0.1


def test_every_broken_image_is_named_at_once(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = two_classes(tmp_path / "scraped")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "page.jpg").write_text("<html>403 Forbidden</html>")
    grey(root / "b" / "locked.png", 7)
    real_open = Image.open

    def open_as_a_user(path: object, *args: object, **kwargs: object) -> object:
        if Path(str(path)).name == "locked.png":  # chmod 000 does not stop root: simulated
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_as_a_user)
    with pytest.raises(DataError, match=r"^3 images cannot be decoded: .*a/empty\.jpg \(an empty "
                                        r"file, 0 bytes\), .*a/page\.jpg \(not an image format "
                                        r"Pillow knows\), .*b/locked\.png \(permission denied.*"
                                        r"replace or remove them$"):
        load_file_dataset(root, ALL)
    monkeypatch.setattr(Image, "open", real_open)
    for name in ("empty.jpg", "page.jpg"):
        (root / "a" / name).unlink()
    # cut short in its pixels: the header reads, decoding fails (the second pass)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 4), np.uint8)).save(buffer,
                                                                                     "PNG")
    for name in ("cut.png", "cut2.png"):
        (root / "b" / name).write_bytes(buffer.getvalue()[:-30])
    with pytest.raises(DataError, match=r"^2 images cannot be decoded: .*b/cut\.png \(image file "
                                        r"is truncated\), .*b/cut2\.png \(.*\); replace or "
                                        r"remove them$"):
        load_file_dataset(root, ALL)
    for name in ("cut.png", "cut2.png"):
        (root / "b" / name).unlink()
    for i in range(4):
        (root / "b" / f"bad{i}.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"^4 images cannot be decoded: .*bad2\.png \(.*\) and 1 "
                                        r"more; replace or remove them$"):
        load_file_dataset(root, ALL)


def test_a_large_photo_is_read_quietly_and_a_decompression_bomb_refused(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "bombs")
    # 9500 x 9500: over Pillow's warning limit, under its refusal: read (a 108 MP phone
    # photo is as large), with no two-line DecompressionBombWarning on stderr
    Image.new("L", (9500, 9500), 200).save(root / "a" / "large.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_file_dataset(root, FileOptions(test="all", size=4))
    assert [w.category.__name__ for w in caught] == []
    assert len(data.train) == 5 and torch.allclose(data.train.x[2], torch.full((1, 4, 4),
                                                                               200 / 255))
    png_declaring(root / "a" / "bomb.png", 30000, 30000)  # 900 megapixels in a few bytes
    with pytest.raises(DataError, match=r"image .*bomb\.png cannot be decoded \(.*exceeds limit "
                                        r"of 178956970 pixels.*shrink it\)"):
        load_file_dataset(root, FileOptions(test="all", size=4))


def test_images_too_large_for_memory_are_refused_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = two_classes(tmp_path / "photos")  # 4 images of 1x4x4 float32: 256 bytes
    monkeypatch.setattr(image_folders, "_memory_budget", lambda: 200)

    def never(*args: object) -> np.ndarray:
        raise AssertionError("decoded before the memory check")

    monkeypatch.setattr(image_folders, "_decode", never)
    with pytest.raises(DataError, match=r"photos: 4 images of 1x4x4 take 0\.0 GiB as float32, "
                                        r"over a quarter of this machine's memory .*set "
                                        r"--data-opt size=N to resize every image"):
        load_file_dataset(root, ALL)
    monkeypatch.undo()
    monkeypatch.setattr(image_folders, "_memory_budget", lambda: 200)
    assert load_file_dataset(root, FileOptions(test="all", size=2)).input_shape == (1, 2, 2)


def test_class_names_written_by_a_mac_are_the_same_classes(tmp_path: Path) -> None:
    root = tmp_path / "drinks"
    for part, form in (("train", "NFC"), ("test", "NFD")):  # test/ unzipped from a Mac
        for i, label in enumerate(("café", "thé")):
            folder = root / part / unicodedata.normalize(form, label)
            grey(folder / "0.png", 40 + 100 * i)
            grey(folder / "1.png", 50 + 100 * i)
    data = load_file_dataset(root)
    assert data.classes == ("café", "thé") and data.test.y.tolist() == [0, 0, 1, 1]
    assert all(unicodedata.is_normalized("NFC", c) for c in data.classes)
