"""torch.distributed helpers: one process per rank under ``torchrun``; no-ops when alone."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from transferkit.errors import ConfigError


def init_from_env(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # collectives of Python objects use the current device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0, also before the process group exists (torchrun sets ``RANK``)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (in place when distributed)."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (every rank gets the same answer)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_object(obj: object) -> list[object]:
    """``obj`` from every rank, in rank order (``[obj]`` when alone)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown(synchronize: bool = False) -> None:
    """Leave the process group now rather than at interpreter exit.

    Left to the exit handlers, a rank can still hold gloo connections when a faster peer has
    exited; gloo then aborts that rank (SIGABRT) or torchrun kills it before it exits with its
    own status. ``synchronize`` first waits for every rank: only on paths all ranks take.
    """
    if not dist.is_initialized():
        return
    if synchronize:
        dist.barrier()
    dist.destroy_process_group()


DEVICE_FORMS = "auto, cpu, cuda, cuda:N (GPU number N), mps"


def local_device(requested: str) -> torch.device:
    """``auto`` picks CUDA (this rank's GPU under torchrun) when available, else CPU.

    A name torch cannot parse, or a device this machine lacks, is a :class:`ConfigError`.
    """
    text = requested.strip().lower() if isinstance(requested, str) else ""
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {requested!r} is not a device name; use {DEVICE_FORMS}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {requested!r} was asked for but this torch build/machine has no CUDA "
                "GPU (torch.cuda.is_available() is False); use --device cpu or --device auto"
            )
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {requested!r} means GPU {device.index}, but this machine has "
                f"{torch.cuda.device_count()} (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {requested!r} was asked for but this torch build/machine has no Apple "
            "GPU (torch.backends.mps.is_available() is False); use --device cpu or --device auto"
        )
    return device
