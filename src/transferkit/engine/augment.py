"""Batch augmentations applied on the device inside the training step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_translate(x: Tensor, pixels: int) -> Tensor:
    """Shift each image by its own random (dy, dx) in ``[-pixels, pixels]``, zero-filled.

    Hinton et al. (2015) train the MNIST teacher on inputs "jittered by up to two pixels".
    Implemented as zero padding then a per-sample crop gathered with index arithmetic, so
    one batch costs two ``gather`` calls and no Python loop. Draws from the global RNG, which
    checkpoints save, so a resumed run sees the same shifts.
    """
    if pixels <= 0:
        return x
    if x.dim() != 4:
        raise ValueError(f"jitter needs N x C x H x W images, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    shifts = torch.randint(0, 2 * pixels + 1, (2, n), device=x.device)
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    rows = (torch.arange(h, device=x.device)[None, :] + shifts[0][:, None])  # n x h
    cols = (torch.arange(w, device=x.device)[None, :] + shifts[1][:, None])  # n x w
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pixels))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))
