"""Atomic file writes and checkpoint loading with clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from transferkit.errors import CheckpointError


def give_default_mode(fd: int) -> None:
    """mkstemp makes files 0600; give ``fd`` the mode ``open()`` would (0666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    A reader (or a crash) never sees a half-written file: rename is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            give_default_mode(handle.fileno())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def load_torch(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}); "
                              "it may be truncated: rerun the training that wrote it") from None


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    """``load_state_dict`` that reports a mismatch as one line naming keys and shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        details = []
        if shapes:
            details.append("shape mismatch " + ", ".join(shapes[:3]))
        if missing:
            details.append("missing " + ", ".join(missing[:3]))
        if unexpected:
            details.append("unexpected " + ", ".join(unexpected[:3]))
        raise CheckpointError(
            f"checkpoint {source} does not fit {what} ({'; '.join(details)}); "
            "build the model with the architecture and options it was trained with"
        )
    module.load_state_dict(state)
