"""Where the training tensors live: moved to the GPU once when they fit, else copied per batch.

In-memory datasets are small beside a GPU (MNIST's 60,000 images are 188 MB as float32), and
copying each batch from host memory costs a synchronising transfer per step. With
``data_on_device="auto"`` the training tensors move to a CUDA device once, when together they
take at most ``share`` of its free memory; batches are then gathered on the device and the
augmentations (jitter, crop, flip) run there too. On a CPU the tensors are already where the
arithmetic happens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**27 else f"{nbytes / 2**20:.1f} MiB"


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA ``device`` (None elsewhere, or when the driver cannot say)."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError):
        return None


def placement(tensors: list[Tensor | None], device: torch.device, policy: str,
              share: float, free: int | None = None) -> tuple[bool, str]:
    """Whether to move ``tensors`` to ``device`` once, and the sentence that says why.

    ``free`` (bytes) defaults to the device's free memory; tests pass their own.
    """
    nbytes = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    size = _gib(nbytes)
    if device.type == "cpu":
        return False, f"on the CPU: batches are gathered from the training tensors ({size})"
    if policy == "off":
        return False, f"data_on_device=off: each batch is copied to {device}"
    if all(t is None or t.device == device for t in tensors):
        return False, f"the training tensors ({size}) are already on {device}"
    free = free_memory(device) if free is None else free
    if free is None:
        return False, f"{device.type} does not report its free memory: each batch is copied"
    if nbytes > share * free:
        return False, (f"the training tensors ({size}) exceed {share:.0%} of {device}'s free "
                       f"memory ({_gib(free)}): each batch is copied")
    return True, f"the training tensors ({size}) were moved to {device} once"


def move(tensors: list[Tensor | None], device: torch.device) -> list[Tensor | None]:
    return [None if t is None else t.to(device) for t in tensors]
