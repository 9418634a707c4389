"""Where data files come from: local directories first, then a verified download into the cache.

Search order for ``<dataset>/<file>``:

1. the explicit ``data_dir`` argument (the CLI's ``--data-dir``),
2. the environment variable ``TRANSFERKIT_DATA_DIR``,
3. the user cache, ``$XDG_CACHE_HOME/transferkit`` or ``~/.cache/transferkit``,
4. extra local folders a dataset names (e.g. a Debian package's install folder).

A file found locally is used as it is. Only a missing file is downloaded, from the official
source into the cache, checked against a published checksum and moved into place atomically
(temporary file in the same folder, then ``os.replace``), so an interrupted or corrupt
download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from transferkit.errors import DataError
from transferkit.files import give_default_mode

ENV_VAR = "TRANSFERKIT_DATA_DIR"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0

Opener = Callable[[str, float], BinaryIO]


def _default_opener(url: str, timeout: float) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=timeout)


# Module-level so tests can swap it for a fake; every download goes through it.
urlopen: Opener = _default_opener


@dataclass(frozen=True)
class Remote:
    """Official download locations of one file and its published checksum."""

    urls: tuple[str, ...]
    checksum: str
    algorithm: str = "sha256"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/transferkit``, or ``~/.cache/transferkit`` when it is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "transferkit"


def _data_root(value: str | Path, named: str) -> Path:
    """``value`` as a data root; a file there is refused (it used to be skipped silently)."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(
            f"{named} is a file, not a folder; give the folder that holds one folder "
            "per dataset (DIR, with the files in DIR/mnist/, DIR/usps/, ...)"
        )
    return path


def resolve_data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Data roots in search order: ``data_dir``, ``$TRANSFERKIT_DATA_DIR``, the user cache."""
    candidates: list[Path] = []
    if data_dir is not None and str(data_dir) != "":
        candidates.append(_data_root(data_dir, f"data dir {data_dir}"))
    env = os.environ.get(ENV_VAR)
    if env:
        candidates.append(_data_root(env, f"{ENV_VAR}={env}"))
    candidates.append(cache_dir())
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def download(remote: Remote, dest: Path, opener: Opener | None = None) -> Path:
    """Fetch ``dest`` from the first working URL of ``remote`` and verify its checksum.

    The bytes go to a temporary file next to ``dest`` that is renamed over ``dest`` only after
    the checksum matches; on any failure the temporary file is removed and DataError raised.
    """
    open_url = opener or urlopen
    reasons: list[str] = []
    for url in remote.urls:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
            )
        except OSError as exc:
            raise DataError(
                f"download of {dest.name} failed (cannot write to {dest.parent}: {_one_line(exc)})"
            ) from None
        tmp = Path(tmp_name)
        try:
            digest = hashlib.new(remote.algorithm)
            give_default_mode(fd)
            with os.fdopen(fd, "wb") as out, open_url(url, _TIMEOUT_S) as response:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(block)
                    out.write(block)
            got = digest.hexdigest()
            if got != remote.checksum.lower():
                reasons.append(
                    f"{url}: {remote.algorithm} {got} does not match the published "
                    f"{remote.checksum}"
                )
                continue
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
            reasons.append(f"{url}: {_one_line(exc)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(f"download of {dest.name} failed ({'; '.join(reasons)})")


def locate(
    dataset: str,
    filename: str,
    *,
    data_dir: str | Path | None = None,
    remote: Remote | None = None,
    download_ok: bool = True,
    extra_dirs: Sequence[Path] = (),
    no_download_reason: str = "",
) -> Path:
    """Path of ``<root>/<dataset>/<filename>``, downloading it into the cache if it is missing.

    Raises DataError in one line naming the file, the folders searched and where to put it.
    """
    roots = resolve_data_dirs(data_dir)
    folders = [root / dataset for root in roots] + [Path(p) for p in extra_dirs]
    for folder in folders:
        path = folder / filename
        if path.is_file():
            return path
    if remote is None:
        why = "no automatic download" + (f" ({no_download_reason})" if no_download_reason else "")
    elif not download_ok:
        why = "download disabled"
    else:
        dest = cache_dir() / dataset / filename
        try:
            return download(remote, dest)
        except DataError as exc:
            why = _one_line(exc)
    searched = ", ".join(str(f) for f in folders)
    raise DataError(
        f"{dataset}: {filename} not found in {searched}; {why}; put the file in "
        f"{roots[0] / dataset}/ or set {ENV_VAR}"
    )
