"""Saving and loading checkpoints: atomic writes, and loads that never run code from a file.

``torch.load`` with ``weights_only=False`` unpickles arbitrary objects, so a crafted
``model.pt`` or ``checkpoint.pt`` could run code when opened. Every transferkit file holds only
tensors and plain values (numbers, strings, lists, dicts), so it is always read with
``weights_only=True``; anything else is refused in one line.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.errors import CheckpointError
from transferkit.files import atomic_write, give_default_mode, save_json, write_text

__all__ = [
    "atomic_write",
    "give_default_mode",
    "load_torch",
    "load_weights",
    "save_json",
    "save_torch",
    "write_text",
]


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` to memory first: torch reports a full disk as an opaque RuntimeError,
    while writing the finished bytes ourselves gives a clear OSError (see ``atomic_write``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    atomic_write(path, lambda f: f.write(data))


def _torch_archive(path: Path) -> bool:
    """A zip that torch.save wrote: it holds ``<name>/data.pkl``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return True  # damaged: torch.load's own error (truncated) says more


def load_torch(path: Path) -> dict[str, Any]:
    """A checkpoint or model file as a dict, read with ``weights_only=True`` (never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    with path.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..); older files are a pickle (protocol byte 0x80)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): rerun the training that wrote it")
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise CheckpointError(
            f"{path} is not a PyTorch model or checkpoint file (it starts with {head!r}); "
            "give the model.pt or checkpoint.pt of a transferkit run"
        )
    if head.startswith(b"PK") and not _torch_archive(path):
        raise CheckpointError(
            f"{path} is a zip archive but not a PyTorch file (no data.pkl inside); give the "
            "model.pt or checkpoint.pt of a transferkit run"
        )
    try:
        with warnings.catch_warnings():  # torch's advice on odd pickles: the line below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects other than tensors and plain "
            "values, and loading them could run code from the file; transferkit files never "
            "do: use a model.pt or checkpoint.pt that transferkit wrote"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}); "
                              "it may be truncated: rerun the training that wrote it") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a transferkit model or checkpoint "
            "(a dict with the weights and how to rebuild the model); save models with "
            "transferkit (train, distill, adapt) or load the weights into your module yourself"
        )
    return state


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    """``load_state_dict`` that reports a mismatch as one line naming keys and shapes."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {source}: its weights are not a dict of tensors")
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
