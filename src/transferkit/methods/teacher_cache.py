"""Teacher logits kept on disk across runs (``cache_teacher="disk"``).

A sweep of students over one teacher then runs the teacher over the training rows once:
every later run reads the logits back. One file per key in the cache folder (by default
``$XDG_CACHE_HOME/transferkit/teacher_outputs``, i.e. ``~/.cache/transferkit/...``, beside
the downloaded datasets; ``teacher_cache_dir`` overrides it), named ``logits-<key>.pt``:

    key = sha256(json(format, "logits", weights_sha256(teacher), sha256(repr(teacher)),
                      input conversion, sha256(dtype | shape | bytes of the rows),
                      device type, chunk))

so other weights, another module tree (an activation swapped), another input conversion
(``InputConverted`` / ``TeacherInputConverted``), other rows or another device name another
file, and the old file is never opened. The file holds the key again, the logits in the
teacher's own output dtype (never downcast: a hit gives the numbers the run would have
computed, bit for bit) and their sha256. A file whose key, dtype, shape or checksum does not
match, that cannot be read (truncated, not a torch file), or whose logits on a few spread rows
differ from the live teacher's (its ``forward`` changed while weights and modules did not) is
ignored with a one-line note and overwritten. Files are written through a temporary file and
an atomic rename (:func:`transferkit.files.atomic_write`): concurrent runs writing one key
leave one complete file (the last writer's), and a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.data.inputs import InputConverted
from transferkit.data.paths import cache_dir
from transferkit.data.teacher_input import TeacherInputConverted
from transferkit.errors import RunDirError
from transferkit.files import atomic_write
from transferkit.models.base import weights_sha256

FORMAT = 1
KIND = "logits"
FOLDER = "teacher_outputs"
DEFAULT_MAX_GB = 2.0
CHUNK = 1024  # rows per teacher forward when filling a cache (in memory or on disk)
SPOT_ROWS = 8  # rows recomputed live to check a file against the teacher's forward
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # object addresses differ between processes


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/transferkit/teacher_outputs`` (``~/.cache/...`` when unset)."""
    return cache_dir() / FOLDER


STALE_SECONDS = 24 * 3600  # a writer still busy after a day was killed


def remove_stale_temporaries(folder: Path, now: float | None = None) -> int:
    """Delete the temporary files that killed writers left (``.logits-*.tmp`` older than a
    day; a younger one may belong to a run writing now); returns how many went."""
    now = time.time() if now is None else now
    removed = 0
    for tmp in folder.glob(".logits-*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
                removed += 1
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def tensor_sha256(x: Tensor) -> str:
    """sha256 over ``dtype | shape |`` and the raw bytes: the exact rows the teacher sees."""
    value = x.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{value.dtype}|{tuple(value.shape)}|".encode())
    digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def input_conversion(teacher: nn.Module) -> list[dict[str, Any]]:
    """The conversions wrapped around the teacher, as plain values (empty: none)."""
    found: list[dict[str, Any]] = []
    for module in teacher.modules():
        if isinstance(module, InputConverted):
            one: dict[str, Any] = {"class": type(module).__name__,
                                   "source": module.source.to_dict(),
                                   "target": module.target.to_dict()}
            if isinstance(module, TeacherInputConverted):
                one["teacher_input"] = module.spec.to_dict()
                one["data_shape"] = list(module.data_shape)
            found.append(one)
    return found


def key_record(teacher: nn.Module, x: Tensor, device: torch.device) -> dict[str, Any]:
    """Everything the logits depend on; the key is the sha256 of its JSON."""
    modules = _ADDRESS.sub("", repr(teacher))
    return {
        "format": FORMAT,
        "kind": KIND,
        "teacher_weights_sha256": weights_sha256(teacher),
        "teacher_modules_sha256": hashlib.sha256(modules.encode()).hexdigest(),
        "input_conversion": input_conversion(teacher),
        "rows": {"sha256": tensor_sha256(x), "dtype": str(x.dtype), "shape": list(x.shape)},
        "device": device.type,
        "chunk": CHUNK,
    }


def record_key(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _is_main() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def note(message: str) -> None:
    """One line on stderr (rank 0 only): what the cache did, or why a file was ignored."""
    if _is_main():
        print(f"teacher cache: {message}", file=sys.stderr, flush=True)


class TeacherOutputCache:
    """Teacher logits on ``folder``, one file per key; files above ``max_bytes`` are not
    written (the run keeps its in-memory cache and says so)."""

    def __init__(self, folder: str | Path | None = None,
                 max_gb: float = DEFAULT_MAX_GB) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_dir()
        self.max_gb = max_gb
        self.max_bytes = int(max_gb * (1 << 30))

    def path(self, key: str) -> Path:
        return self.folder / f"logits-{key}.pt"

    def logits(self, teacher: nn.Module, x: Tensor, device: torch.device,
               compute: Callable[[Tensor], Tensor]) -> tuple[Tensor, dict[str, Any]]:
        """The teacher's logits on every row of ``x``: read from the file of their key when it
        checks out, else ``compute(x)`` (then written). Returns them (on ``device``) and what
        happened, for the run summary."""
        start = time.perf_counter()
        record = key_record(teacher, x, device)
        key = record_key(record)
        path = self.path(key)
        info: dict[str, Any] = {"file": str(path)}
        found, why = self._read(path, key, x, compute)
        if found is not None:
            info.update(status="hit", seconds=round(time.perf_counter() - start, 3))
            note(f"read the teacher's logits on {len(x)} rows from {path}")
            return found.to(device), info
        if why:
            note(f"ignored {path}: {why}; recomputing it")
            info["ignored"] = why
        logits = compute(x)
        info["status"] = self._write(path, key, record, logits)
        info["seconds"] = round(time.perf_counter() - start, 3)
        return logits, info

    def _read(self, path: Path, key: str, x: Tensor,
              compute: Callable[[Tensor], Tensor]) -> tuple[Tensor | None, str]:
        """The file's logits, or None and why not ("" when there is no file)."""
        if not path.is_file():
            return None, ""
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, not a zip, an unpickling error: never trusted
            return None, f"unreadable ({type(exc).__name__})"
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            return None, "not a transferkit teacher cache file of this format"
        if stored.get("key") != key:
            return None, "its key differs from the file name's"
        logits = stored.get("logits")
        if not isinstance(logits, Tensor) or logits.dim() != 2 or len(logits) != len(x):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else None
            return None, f"logits of shape {shape} for {len(x)} rows"
        if stored.get("dtype") != str(logits.dtype) or stored.get("shape") != list(logits.shape):
            return None, "its logits differ from their recorded dtype or shape"
        if stored.get("sha256") != tensor_sha256(logits):
            return None, "its checksum does not match (corrupted)"
        rows = torch.linspace(0, len(x) - 1, min(SPOT_ROWS, len(x))).round().long().unique()
        live = compute(x[rows]).cpu()
        if live.dtype != logits.dtype or live.shape[1:] != logits.shape[1:]:
            return None, (f"the teacher now gives {tuple(live.shape[1:])} {live.dtype} logits, "
                          f"the file {tuple(logits.shape[1:])} {logits.dtype}")
        saved = logits[rows]
        scale = max(1.0, float(live.abs().max()))
        if not torch.allclose(saved, live, rtol=1e-3, atol=1e-3 * scale):
            return None, "the live teacher's logits on sample rows differ from the file's"
        return logits, ""

    def _write(self, path: Path, key: str, record: dict[str, Any], logits: Tensor) -> str:
        """Write the file (rank 0); the status for the summary."""
        size = logits.numel() * logits.element_size()
        if size > self.max_bytes:
            note(f"not written: the logits take {size / (1 << 20):.1f} MiB, above the "
                 f"{self.max_gb:g} GiB limit (teacher_cache_max_gb); kept in memory for this "
                 "run only")
            return "computed (not written: above teacher_cache_max_gb)"
        if not _is_main():
            return "computed (written by rank 0)"
        values = logits.detach().cpu().contiguous()
        payload = {"format": FORMAT, "key": key, "record": record, "torch": str(torch.__version__),
                   "dtype": str(values.dtype), "shape": list(values.shape),
                   "sha256": tensor_sha256(values), "logits": values}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        remove_stale_temporaries(path.parent)
        try:
            atomic_write(path, lambda f: f.write(buffer.getbuffer()))
        except RunDirError as exc:  # a full disk or a read-only folder: run on
            note(f"not written: {str(exc).split(';')[0]}")
            return "computed (not written: the write failed)"
        note(f"wrote the teacher's logits on {len(values)} rows to {path}")
        return "written"
