"""Image folders: one sub-folder per class (or ``train/`` and ``test/`` ones, or loose images
for a target without labels), decoded with Pillow to float32 ``C x H x W`` in [0, 1].

Folders from the field are read as their owner sees them, or refused in one line naming the
file and the fix: what systems leave (dot files, ``__MACOSX``, ``@eaDir``, Thumbs.db) is skipped,
other files that are no pictures (notes, label lists) are left out; a picture that cannot be
read (damaged, empty, a camera's raw file, HEIC without its plugin, a link to nothing) is
refused, every such file named at once, as are images in a class folder's sub-folders (the
reader would have to guess their class). A photo is turned upright by its EXIF orientation;
an animated GIF or WebP and a multi-page TIFF give their first frame. Class names are read in
NFC, so that a folder named on a Mac (NFD) is the same class. Images too large to hold in
memory without ``size`` are refused before decoding."""

from __future__ import annotations

import importlib
import os
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.file_options import OPT, FileOptions
from transferkit.data.file_records import _ALONE, UNIT, _first_line, _Raw, _Side
from transferkit.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jfif",
                  ".jpe", ".pbm", ".pgm", ".ppm", ".pnm", ".avif", ".heic", ".heif", ".jxl")
# Pillow reads these with a plugin (used when installed) or a recent build only; without it,
# the refusal says what to install
_NEEDS = {".avif": "Pillow 11.3 or later (pip install -U pillow)",
          ".heic": "the pillow-heif plugin (pip install pillow-heif)",
          ".heif": "the pillow-heif plugin (pip install pillow-heif)",
          ".jxl": "the pillow-jxl-plugin (pip install pillow-jxl-plugin)"}
# pictures Pillow never decodes (camera raw, vector): refused, so that no class loses them unsaid
_UNREAD_SUFFIXES = (".svg", ".svgz", ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".orf",
                    ".rw2", ".raf", ".pef", ".srw", ".x3f")
# what operating systems and tools leave in folders (besides dot files): never data
_JUNK_DIRS = frozenset({"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information"})
_JUNK_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
# folder names of a split (in any case); only train/ and test/ are read as such
_SPLIT_WORDS = frozenset({"train", "test", "training", "testing", "val", "valid", "validation",
                          "dev", "eval", "training_set", "test_set"})
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
IMAGE_READ_OPTIONS = ("size", "channels")  # the options a model records (see image_read)
_ORIENTATION = 0x0112  # the EXIF tag a phone sets instead of rotating the pixels
_TURNS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
          6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # as ImageOps.exif_transpose


def _image_lib() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def _plugins(paths: list[Path]) -> None:
    """Register Pillow's HEIC (an iPhone's photos) and JPEG XL plugins when such files are
    read and the plugins are installed; without them the files are refused, naming the plugin."""
    suffixes = {p.suffix.lower() for p in paths}
    try:
        if suffixes & {".heic", ".heif"}:
            importlib.import_module("pillow_heif").register_heif_opener()
        if ".jxl" in suffixes:
            importlib.import_module("pillow_jxl")  # registers itself
    except ImportError:
        pass


def _is_junk(path: Path) -> bool:
    """Dot files and folders (.DS_Store, a Mac's ``._name.jpg`` AppleDouble files,
    .ipynb_checkpoints), ``__MACOSX`` of a zip made on a Mac, Synology's ``@eaDir`` thumbnails,
    Windows' Thumbs.db and desktop.ini: what systems leave beside pictures, never data."""
    name = path.name
    return name.startswith(".") or name in _JUNK_DIRS or name.lower() in _JUNK_FILES


def is_junk_path(relative: Path) -> bool:
    """A file under a folder that the reader skips as junk (``a/.DS_Store``,
    ``__MACOSX/a/._0.png``): a run's data digest leaves it out, so that a Finder or Explorer
    writing one while the user looks at the folder does not make ``--resume`` refuse."""
    return any(_is_junk(Path(part)) for part in relative.parts)


@dataclass
class _Listing:
    """A folder's images and sub-folders, sorted by name, junk left out."""

    images: list[Path]
    dirs: list[Path]


def _listing(folder: Path) -> _Listing:
    """What ``folder`` holds. Other files (notes, label lists) are not pictures and are left out;
    a link to nothing named like an image, or a picture Pillow never decodes (camera raw, SVG),
    is refused: leaving it out would drop a picture without a word."""
    images: list[Path] = []
    dirs: list[Path] = []
    unread: list[Path] = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if _is_junk(path):
            continue
        suffix = path.suffix.lower()
        if path.is_dir():
            dirs.append(path)
        elif path.is_file():
            if suffix in IMAGE_SUFFIXES:
                images.append(path)
            elif suffix in _UNREAD_SUFFIXES:
                unread.append(path)
        elif path.is_symlink() and suffix in IMAGE_SUFFIXES:
            raise DataError(f"image {path} is a link to {os.readlink(path)}, which does not exist "
                            "(or leads back to itself); fix or remove the link")
    if unread:
        kinds = ", ".join(sorted({p.suffix.lower() for p in unread}))
        raise DataError(f"{folder} holds {len(unread)} picture{'s' * (len(unread) > 1)} in a "
                        f"format Pillow does not read ({kinds}; e.g. {unread[0].name}); convert "
                        "them to PNG or JPEG, or move them out")
    return _Listing(images, dirs)


def _image_below(folder: Path) -> Path | None:
    """The first image at any depth in ``folder`` (links to folders inside it not followed: a
    loop would never end), junk left out; None when it holds none."""
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_junk(Path(d)))
        for name in sorted(names):
            if not _is_junk(Path(name)) and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                return Path(top) / name
    return None


def _check_links(root: Path, dirs: list[Path]) -> None:
    """Class folders that are links: one to a folder holding it is a loop, and two to one
    folder would read its images under two labels."""
    top = root.resolve()
    seen: dict[Path, Path] = {}
    for folder in dirs:
        real = folder.resolve()
        if real == top or real in top.parents:
            raise DataError(f"class folder {folder} is a link to {real}, which holds it (a loop); "
                            "remove the link")
        if real in seen:
            raise DataError(f"class folders {seen[real]} and {folder} are one folder ({real}), "
                            "whose images would be read as two classes; remove one of them")
        seen[real] = folder


def _class_folders(root: Path, part: str) -> list[tuple[str, list[Path]]]:
    """(class, images) per class folder, the class named in NFC: a Mac writes decomposed
    accents (NFD), so ``café`` from a Mac and from elsewhere would be two classes."""
    listing = _listing(root)
    if not listing.dirs:
        flat = " (images directly in a folder are a target without labels: put it on the " \
            "right of ->)" if listing.images else ""
        raise DataError(
            f"{root} has no class folders; put each class's images in its own sub-folder "
            f"({part}/CLASS/image.png){flat}"
        )
    _check_links(root, listing.dirs)
    found = []
    for folder in listing.dirs:
        inner = _listing(folder)
        below = next(((sub, hit) for sub in inner.dirs if (hit := _image_below(sub))), None)
        if below is not None:
            sub, hit = below
            if inner.images:
                raise DataError(
                    f"class folder {folder} has images in its sub-folder {sub.name}/ too (e.g. "
                    f"{hit}), which would be left out: images lie directly in their class folder "
                    f"({part}/CLASS/image.png); move them up into {folder} or move {sub.name}/ "
                    "out"
                )
            raise DataError(
                f"class folder {folder} holds no images itself, but its sub-folder {sub.name}/ "
                f"does (e.g. {hit}): the classes are the sub-folders of the folder given "
                f"({part}/CLASS/image.png); give {folder} if its sub-folders are the classes "
                "(or its train/ and test/), else move the images up into it"
            )
        if not inner.images:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add "
                "images or remove the folder"
            )
        found.append((unicodedata.normalize("NFC", folder.name), inner.images))
    return found


def _is_colour(image: Any) -> bool:
    if image.mode in _GREY_MODES:
        return False
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        return bool((palette != palette[:, :1]).any())
    return True


def _orientation(image: Any) -> int:
    """The EXIF orientation (1 to 8; 1 when absent or unreadable), from the header only: a PNG's
    is read when it lies before the pixels (Pillow would decode the whole image to look on)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _decode(image_lib: Any, path: Path, channels: int, size: int | None) -> np.ndarray:
    """One image as float32 C x H x W in [0, 1], turned upright by its EXIF orientation (a
    phone stores a portrait photo sideways with a tag; every viewer, and its labeller, sees it
    upright)."""
    resample = image_lib.Resampling.BILINEAR
    with image_lib.open(path) as opened:
        turn = _TURNS.get(_orientation(opened))  # before load(), as the first pass read it
        opened.load()
        image = opened.transpose(getattr(image_lib.Transpose, turn)) if turn else opened
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


def _why(image_lib: Any, exc: BaseException, path: Path) -> str:
    """Why a file does not decode, in words that point at the fix."""
    if isinstance(exc, PermissionError):
        return "permission denied: make it readable"
    try:
        if path.stat().st_size == 0:
            return "an empty file, 0 bytes"
    except OSError:
        pass
    if isinstance(exc, image_lib.DecompressionBombError):
        return f"{_first_line(exc).rstrip('.')}; shrink it"
    if isinstance(exc, image_lib.UnidentifiedImageError):
        needs = _NEEDS.get(path.suffix.lower())
        return (f"Pillow reads {path.suffix} images only with {needs}, or convert it to PNG or "
                "JPEG" if needs else "not an image format Pillow knows")
    return _first_line(exc)


def _refuse_broken(broken: list[tuple[Path, str]]) -> None:
    """Every file that does not decode, named at once: a scraped folder may hold dozens, and
    one per run would take as many runs to clear."""
    if len(broken) == 1:
        path, why = broken[0]
        raise DataError(f"image {path} cannot be decoded ({why}); replace or remove it")
    if broken:
        shown = ", ".join(f"{path} ({why})" for path, why in broken[:3])
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise DataError(f"{len(broken)} images cannot be decoded: {shown}{more}; replace or "
                        "remove them")


def _memory_budget() -> int | None:
    """A quarter of this machine's memory (None where unknown): the images, the split's copy
    and the training batches must fit beside each other."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(root: Path, count: int, shape: tuple[int, int, int], resized: bool) -> None:
    """Refuse before decoding what would not fit: phone photos of 4000x3000 without ``size``
    are 144 MB each as float32, and the machine would swap or kill the run an hour on."""
    need, budget = count * int(np.prod(shape)) * 4, _memory_budget()
    if budget is None or need <= budget:
        return
    fix = f"set a smaller {OPT} size" if resized else \
        f"set {OPT} size=N to resize every image to N x N (e.g. size=224)"
    raise DataError(f"{root}: {count} images of {'x'.join(map(str, shape))} take "
                    f"{need / 2**30:.1f} GiB as float32, over a quarter of this machine's memory "
                    f"({budget * 4 / 2**30:.1f} GiB); {fix}")


def image_read(options: FileOptions) -> dict[str, int] | None:
    """The read options given of those that shape an image (``size``, ``channels``), as a
    model records them (None when neither was given): its field images are read alike."""
    given = {name: getattr(options, name) for name in IMAGE_READ_OPTIONS}
    return {name: value for name, value in given.items() if value is not None} or None


def _read_image_folder(root: Path, options: FileOptions, side: _Side = _ALONE) -> _Raw:
    image_lib = _image_lib()
    with warnings.catch_warnings():  # images up to Pillow's limit are read, bounded above
        warnings.simplefilter("ignore", image_lib.DecompressionBombWarning)
        return _read(image_lib, root, options, side)


def _read(image_lib: Any, root: Path, options: FileOptions, side: _Side) -> _Raw:
    top = _listing(root)
    subdirs = {p.name for p in top.dirs}
    split_layout = (
        "train" in subdirs and subdirs <= {"train", "test"} and bool(_listing(root / "train").dirs)
    )
    loose = top.images
    if loose and subdirs:  # some images would be silently left out, whichever layout wins
        raise DataError(
            f"{root} holds both images ({len(loose)}, e.g. {loose[0].name}) and sub-folders "
            f"({', '.join(sorted(subdirs)[:5])}); put every image in a class folder (labelled) "
            "or none in sub-folders (a target without labels)"
        )
    flat = side.labels_optional and bool(loose)
    # a target whose train/ holds its images loose (no labels) and test/ its labelled ones
    flat_train = (side.labels_optional and "train" in subdirs and subdirs <= {"train", "test"}
                  and not _listing(root / "train").dirs and bool(_listing(root / "train").images))
    splits = sorted(p.name for p in top.dirs if p.name.lower() in _SPLIT_WORDS
                    and not _listing(p).images)
    if splits and (set(splits) - {"train", "test"} or not subdirs <= {"train", "test"}):
        raise DataError(  # named like splits, no images of their own: not classes
            f"{root} holds {', '.join(s + '/' for s in splits)}: splits are read from folders "
            f"named train/ and test/ only (lower case, nothing beside them: {root}/train/CLASS/, "
            f"{root}/test/CLASS/); rename them or move the others out"
        )
    if flat:  # an unlabelled target: its images lie in the folder itself, no class folders
        parts = {"train": [("", loose)]}
    elif flat_train:
        parts = {"train": [("", _listing(root / "train").images)]}
        if "test" in subdirs and options.test is None:
            parts["test"] = _class_folders(root / "test", "root/test")
    elif split_layout:
        parts = {"train": _class_folders(root / "train", "root/train")}
        if "test" in subdirs and options.test is None:
            parts["test"] = _class_folders(root / "test", "root/test")
    else:
        parts = {"train": _class_folders(root, "root")}
    _plugins([path for folders in parts.values() for _, paths in folders for path in paths])
    # Pass 1 reads headers only: every file opens, sizes agree (unless resized), colour or not.
    colour = False
    dims: list[tuple[Path, tuple[int, int]]] = []
    broken: list[tuple[Path, str]] = []
    files: dict[str, list[tuple[Path, str]]] = {}
    for part, folders in parts.items():
        files[part] = [(f, label) for label, paths in folders for f in paths]
        for path, _ in files[part]:
            try:
                with image_lib.open(path) as image:
                    (width, height), is_colour = image.size, _is_colour(image)
                    upright = (height, width) if _orientation(image) >= 5 else (width, height)
            except Exception as exc:  # Pillow raises many types for a damaged file
                broken.append((path, _why(image_lib, exc, path)))
                continue
            colour |= is_colour
            dims.append((path, upright))
    _refuse_broken(broken)
    first = dims[0]
    if options.size is None:
        other = next((item for item in dims if item[1] != first[1]), None)
        if other is not None:
            raise DataError(
                f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]} but "
                f"{other[0]} is {other[1][0]}x{other[1][1]}; set {OPT} size=N to resize every "
                "image to N x N"
            )
    channels = options.channels or (3 if colour else 1)
    width, height = (options.size, options.size) if options.size else first[1]
    _check_memory(root, len(dims), (channels, height, width), options.size is not None)
    tensors = {}
    for part, items in files.items():
        x = torch.empty(len(items), channels, height, width, dtype=torch.float32)
        for i, (path, _) in enumerate(items):
            try:
                x[i] = torch.from_numpy(_decode(image_lib, path, channels, options.size))
            except DataError:
                raise
            except Exception as exc:
                broken.append((path, _why(image_lib, exc, path)))
        tensors[part] = x
    _refuse_broken(broken)
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
    raw.image_read = image_read(options)
    if "test" in tensors:
        raw.x_test = tensors["test"]
        raw.labels_test = np.array([label for _, label in files["test"]], dtype=str)
        raw.own_test = f"the test/ folder ({len(raw.x_test)} images)"
        raw.test_row_names = [str(path) for path, _ in files["test"]]
    elif (split_layout or flat_train) and "test" in subdirs:
        raw.read_note = "the test/ folder not used"
    return raw
