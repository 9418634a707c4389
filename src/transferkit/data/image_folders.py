"""Image folders: one sub-folder per class (or ``train/`` and ``test/`` ones, or loose images
for a target without labels), decoded with Pillow to float32 ``C x H x W`` in [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.file_options import OPT, FileOptions
from transferkit.data.file_records import _ALONE, UNIT, _first_line, _Raw, _Side
from transferkit.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def _image_lib() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_folders(root: Path, part: str) -> list[tuple[str, list[Path]]]:
    dirs = _visible_dirs(root)
    if not dirs:
        flat = " (images directly in a folder are a target without labels: put it on the " \
            "right of ->)" if _image_files(root) else ""
        raise DataError(
            f"{root} has no class folders; put each class's images in its own sub-folder "
            f"({part}/CLASS/image.png){flat}"
        )
    found = []
    for folder in dirs:
        files = _image_files(folder)
        if not files:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add "
                "images or remove the folder"
            )
        found.append((folder.name, files))
    return found


def _is_colour(image: Any) -> bool:
    if image.mode in _GREY_MODES:
        return False
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        return bool((palette != palette[:, :1]).any())
    return True


def _decode(image_lib: Any, path: Path, channels: int, size: int | None) -> np.ndarray:
    """One image as float32 C x H x W in [0, 1]."""
    resample = image_lib.Resampling.BILINEAR
    with image_lib.open(path) as image:
        image.load()
        mode = image.mode
        if mode == "F":
            raise DataError(f"image {path} holds floating-point pixels; save it as 8- or 16-bit")
        if mode.startswith("I"):  # 16-bit grey (or 32-bit integer) pixels
            raw = np.asarray(image).astype(np.float64)
            if raw.size and (raw.min() < 0 or raw.max() > 65535):
                raise DataError(f"image {path} has pixels outside 0..65535; save it as 16-bit")
            grey = image_lib.fromarray((raw / 65535.0).astype(np.float32), mode="F")
            if size is not None:
                grey = grey.resize((size, size), resample)
            pixels = np.asarray(grey, dtype=np.float32)[None]
            return np.repeat(pixels, channels, axis=0)
        converted = image.convert("RGB" if channels == 3 else "L")
        if size is not None:
            converted = converted.resize((size, size), resample)
        pixels = np.asarray(converted, dtype=np.float32) / 255.0
        return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _read_image_folder(root: Path, options: FileOptions, side: _Side = _ALONE) -> _Raw:
    image_lib = _image_lib()
    subdirs = {p.name for p in _visible_dirs(root)}
    split_layout = (
        "train" in subdirs and subdirs <= {"train", "test"} and bool(_visible_dirs(root / "train"))
    )
    loose = _image_files(root)
    if loose and subdirs:  # some images would be silently left out, whichever layout wins
        raise DataError(
            f"{root} holds both images ({len(loose)}, e.g. {loose[0].name}) and sub-folders "
            f"({', '.join(sorted(subdirs)[:5])}); put every image in a class folder (labelled) "
            "or none in sub-folders (a target without labels)"
        )
    flat = side.labels_optional and bool(loose)
    # a target whose train/ holds its images loose (no labels) and test/ its labelled ones
    flat_train = (side.labels_optional and "train" in subdirs and subdirs <= {"train", "test"}
                  and not _visible_dirs(root / "train") and bool(_image_files(root / "train")))
    if flat:  # an unlabelled target: its images lie in the folder itself, no class folders
        parts = {"train": [("", loose)]}
    elif flat_train:
        parts = {"train": [("", _image_files(root / "train"))]}
        if "test" in subdirs and options.test is None:
            parts["test"] = _class_folders(root / "test", "root/test")
    elif split_layout:
        parts = {"train": _class_folders(root / "train", "root/train")}
        if "test" in subdirs and options.test is None:
            parts["test"] = _class_folders(root / "test", "root/test")
    else:
        parts = {"train": _class_folders(root, "root")}
    # Pass 1 reads headers only: every file opens, sizes agree (unless resized), colour or not.
    colour = False
    first: tuple[Path, tuple[int, int]] | None = None
    files: dict[str, list[tuple[Path, str]]] = {}
    for part, folders in parts.items():
        files[part] = [(f, label) for label, paths in folders for f in paths]
        for path, _ in files[part]:
            try:
                with image_lib.open(path) as image:
                    dims, is_colour = image.size, _is_colour(image)
            except Exception as exc:  # Pillow raises many types for a damaged file
                raise DataError(
                    f"image {path} cannot be decoded ({_first_line(exc)}); replace or remove it"
                ) from None
            colour |= is_colour
            if first is None:
                first = (path, dims)
            elif options.size is None and dims != first[1]:
                raise DataError(
                    f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]} but "
                    f"{path} is {dims[0]}x{dims[1]}; set {OPT} size=N to resize every image "
                    "to N x N"
                )
    assert first is not None
    channels = options.channels or (3 if colour else 1)
    width, height = (options.size, options.size) if options.size else first[1]
    tensors = {}
    for part, items in files.items():
        x = torch.empty(len(items), channels, height, width, dtype=torch.float32)
        for i, (path, _) in enumerate(items):
            try:
                x[i] = torch.from_numpy(_decode(image_lib, path, channels, options.size))
            except DataError:
                raise
            except Exception as exc:
                raise DataError(
                    f"image {path} cannot be decoded ({_first_line(exc)}); replace or remove it"
                ) from None
        tensors[part] = x
    name = str(root)  # as given: a run records it, and a resume reads the same folder
    raw = _Raw(
        name,
        str(root),
        f"{root.name or root.resolve().name}/",
        tensors["train"],
        None if flat or flat_train else np.array([label for _, label in files["train"]],
                                                 dtype=str),
        inputs=UNIT,
    )
    raw.row_names = [str(path) for path, _ in files["train"]]
    shape = "x".join(str(d) for d in (channels, height, width))
    raw.image_note = f"images {shape}" + (" (resized, bilinear)" if options.size else "")
    if "test" in tensors:
        raw.x_test = tensors["test"]
        raw.labels_test = np.array([label for _, label in files["test"]], dtype=str)
        raw.own_test = f"the test/ folder ({len(raw.x_test)} images)"
        raw.test_row_names = [str(path) for path, _ in files["test"]]
    elif (split_layout or flat_train) and "test" in subdirs:
        raw.read_note = "the test/ folder not used"
    return raw
