"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Below ``data/`` and ``engine/``: downloads, checkpoints and run records all write through
:func:`atomic_write`. A failed write raises :class:`RunDirError` in one line that names the
file, the reason and what to do; the file that was there before is left untouched.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from transferkit.errors import RunDirError

# What to do about the usual reasons a write fails.
_FIXES = {
    errno.ENOSPC: "free some disk space, then continue with --resume",
    errno.EDQUOT: "free some of your disk quota, then continue with --resume",
    errno.EACCES: "choose a directory you may write to (--out)",
    errno.EPERM: "choose a directory you may write to (--out)",
    errno.EROFS: "the file system is read-only: choose another directory (--out)",
    errno.ENAMETOOLONG: "choose a shorter path (--out)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path (--out)",
    errno.EEXIST: "a file of that name is in the way: choose another path (--out)",
}


def describe_os_error(exc: OSError, path: Path | str, doing: str = "write") -> str:
    """``cannot write PATH: No space left on device; free some disk space, ...`` in one line."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    fix = _FIXES.get(exc.errno or 0, "check the path and the disk, then retry")
    return f"cannot {doing} {path}: {reason}; {fix}"


def give_default_mode(fd: int) -> None:
    """mkstemp makes files 0600; give ``fd`` the mode ``open()`` would (0666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    A reader (or a crash) never sees a half-written file: rename is atomic on POSIX. When the
    write fails (disk full, permissions) the temporary file is removed, the previous ``path``
    is kept, and :class:`RunDirError` says so in one line.
    """
    path = _writable_target(Path(path))
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            give_default_mode(handle.fileno())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        try:
            kept = " (the previous version is kept)" if path.exists() else ""
        except OSError:
            kept = ""
        raise RunDirError(describe_os_error(exc, path) + kept) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _writable_target(path: Path) -> Path:
    """The file a write replaces: a symbolic link's target (the link stays a link), and never
    a device, pipe or socket (renaming over ``/dev/null`` would replace the device itself)."""
    try:
        if path.is_symlink():
            path = Path(os.path.realpath(path))
            if path.is_symlink():  # realpath stops at a loop
                raise RunDirError(f"cannot write {path}: it is a loop of symbolic links; "
                                  "choose a file path (--out)")
        mode = path.stat().st_mode if path.exists() else None
    except OSError as exc:
        raise RunDirError(describe_os_error(exc, path)) from None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device"
                if stat.S_ISBLK(mode) else "a named pipe" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise RunDirError(f"cannot write {path}: it is {kind}, not a regular file; choose a "
                          "file path (--out)")
    return path


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def finite_or_null(value: Any) -> Any:
    """``value`` with NaN and infinities as None, in nested dicts, lists and tuples: JSON has
    no NaN, and strict readers (jq, JavaScript's ``JSON.parse``) refuse the bare ``NaN`` and
    ``Infinity`` Python's json writes by default."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def json_text(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as strict JSON: a non-finite float becomes ``null`` (never ``NaN``)."""
    return json.dumps(finite_or_null(obj), indent=indent, allow_nan=False)


def save_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as strict JSON (non-finite floats as ``null``), atomically."""
    write_text(path, json_text(obj) + "\n")


class RunLock:
    """An exclusive lock on a run directory, held while one process trains into it.

    ``<run>/.lock`` holds the owner's pid and host. The lock itself is an ``flock`` on that
    file, which the kernel drops when the owner exits in any way (kill -9 included): a lock
    file left by a dead run is stale and is simply taken over.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking (documented)
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunDirError(describe_os_error(exc, self.path.parent, "use")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = self._owner(fd)
            os.close(fd)
            raise RunDirError(
                f"run directory {self.path.parent} is in use by another transferkit run "
                f"(pid {owner}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _owner(fd: int) -> str:
        """The owner's line in the lock file: ``pid on host``."""
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"

    @classmethod
    def holder(cls, run_dir: Path) -> str | None:
        """The pid (and host) of the run that holds ``run_dir``'s lock now, else None; looks
        without taking it and without creating the lock file."""
        try:
            import fcntl

            fd = os.open(Path(run_dir) / cls.NAME, os.O_RDONLY)
        except (ImportError, OSError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return cls._owner(fd)
        finally:
            os.close(fd)  # drops the shared lock taken just now, if any
        return None

    def remove_if_alone(self, records: tuple[str, ...] = ()) -> None:
        """Remove the lock file, the ``records`` named and their folder when it holds nothing
        else (a run refused before its first checkpoint); done while the lock is held, so no
        other run is in the folder."""
        if self._fd is None:
            return
        folder = self.path.parent
        try:
            if {p.name for p in folder.iterdir()} <= {self.NAME, *records}:
                for name in records:
                    (folder / name).unlink(missing_ok=True)
                self.path.unlink()
                folder.rmdir()
        except OSError:
            pass  # another file appeared, or no permission: the folder stays, harmless

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
