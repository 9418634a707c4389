"""``memory_format``: channels-last weights for convolutional networks on the CPU.

oneDNN, PyTorch's CPU convolution library, computes 2-d convolutions fastest on channels-last
(NHWC) tensors: converting the weights is enough, since a convolution whose weight is
channels-last converts its input and returns channels-last activations. On this project's
AVX2 CPU the LeNet DANN step ran 1.5x faster (``benchmarks/memory_format_speed.py``,
docs/benchmarks.md section v). The values are the same; only the order of the floating-point
sums inside a convolution changes. ``auto`` uses it on the CPU for networks with a
``Conv2d``, except those with a layer oneDNN computes wrongly in that layout
(:func:`unsafe_layer`); on a GPU channels-last pays mainly with tensor cores and reduced
precision, so ``auto`` leaves it to the user there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _four_d(module: nn.Module) -> list[torch.Tensor]:
    return [t for t in (*module.parameters(), *module.buffers()) if t.dim() == 4]


def has_conv2d(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in module.modules())


def unsafe_layer(module: nn.Module) -> tuple[str, str] | None:
    """The first layer that the CPU build of torch computes wrongly in channels-last, and
    why; else None.

    - A 1x1 convolution with a stride or padding and fewer input channels per group than the
      CPU's channel block (8 with AVX2, 16 with AVX-512) writes past its workspace in the
      weight gradient (oneDNN issue 6035, torch 2.13): heap corruption, wrong gradients or a
      hang. Measured here with 2 to 7 channels; 16 covers both block sizes.
    - ``GroupNorm``'s backward on a channels-last input that needs no gradient (a frozen
      layer below it, or tent, which trains only the normalisation) ends the process with a
      segmentation fault (torch 2.13 CPU; any shape measured).
    """
    for name, m in module.named_modules():
        if (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)
                and (tuple(m.stride) != (1, 1) or m.padding not in ((0, 0), "valid"))
                and m.in_channels // m.groups < 16):
            return name, ("is a strided 1x1 convolution with fewer than 16 input channels, "
                          "which oneDNN computes wrongly in channels-last (oneDNN issue 6035)")
        if isinstance(m, nn.GroupNorm):
            return name, ("is a GroupNorm, whose backward in channels-last crashes the CPU "
                          "build of torch when its input needs no gradient")
    return None


def choose(requested: str, module: nn.Module, device: torch.device) -> tuple[bool, str]:
    """(use channels-last?, why), for the networks in ``module`` on ``device``."""
    if requested == "contiguous":
        return False, "contiguous (asked for)"
    if not has_conv2d(module):
        return False, "contiguous: no 2-d convolution"
    if device.type == "cpu" and (unsafe := unsafe_layer(module)) is not None:
        return False, f"contiguous: {unsafe[0]} {unsafe[1]}"
    if requested == "channels_last":
        return True, "channels_last (asked for)"
    if device.type == "cpu":
        return True, "channels_last: 2-d convolutions on the CPU (oneDNN's faster layout)"
    return False, f"contiguous: auto uses channels-last on the CPU only (this run: {device.type})"


def to_channels_last(module: nn.Module) -> Callable[[], None]:
    """Convert ``module``'s 4-d weights and buffers in place (the Parameters stay the same
    objects, so optimizers keep them); returns the function that puts back a module whose
    weights were all contiguous before (a user's module comes back as it was given)."""
    was_contiguous = all(t.is_contiguous() for t in _four_d(module))
    module.to(memory_format=torch.channels_last)

    def restore() -> None:
        if was_contiguous:
            module.to(memory_format=torch.contiguous_format)

    return restore
