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


def _check_images(x: Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} needs N x C x H x W images, got shape {tuple(x.shape)}")


def random_flip(x: Tensor, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``, on the images' own device.

    One draw of ``torch.rand(N)`` from the global RNG (checkpoints save it) decides all flips.
    """
    _check_images(x, "random_flip")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability must lie in [0, 1], got {p}")
    flips = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flips[:, None, None, None], x.flip(3), x)


def random_crop_flip(x: Tensor, padding: int = 4, flip: bool = True) -> Tensor:
    """The standard CIFAR augmentation: pad, random crop, random horizontal flip.

    Each image is zero-padded by ``padding`` pixels on every side, cropped back to its
    ``H x W`` at its own random offset (uniform over all ``(2 padding + 1)^2`` crops) and, when
    ``flip``, mirrored left-right with probability 0.5. Vectorised like ``random_translate``:
    the crop and the flip are one row ``gather`` and one column ``gather`` (a flipped image
    reads its crop's columns in reverse), with no Python loop over samples. The draws, in
    order ``randint`` offsets then ``rand`` flips (as :func:`random_flip` draws them), come
    from the global RNG of the images' device, so a resumed run sees the same crops.
    ``padding=0`` is :func:`random_flip` (or ``x`` itself without ``flip``).
    """
    _check_images(x, "random_crop_flip")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return random_flip(x) if flip else x
    n, c, h, w = x.shape
    device = x.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=device)
    col = torch.arange(w, device=device)
    cols = col.expand(n, w)
    if flip:
        flips = torch.rand(n, device=device) < 0.5
        cols = torch.where(flips[:, None], w - 1 - col, col)
    rows = torch.arange(h, device=device)[None, :] + offsets[0][:, None]  # n x h
    cols = cols + offsets[1][:, None]  # n x w
    padded = F.pad(x, (padding, padding, padding, padding))
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))
