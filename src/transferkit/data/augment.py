"""Batch augmentations on in-memory tensors, applied on the device inside the training step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_translate(x: Tensor, pixels: int, fill: float = 0.0) -> Tensor:
    """Shift each image by its own random (dy, dx) in ``[-pixels, pixels]``, ``fill``-filled.

    Hinton et al. (2015) train the MNIST teacher on inputs "jittered by up to two pixels".
    Implemented as padding then a per-sample crop gathered with index arithmetic, so
    one batch costs two ``gather`` calls and no Python loop. Draws from the global RNG, which
    checkpoints save, so a resumed run sees the same shifts. ``fill`` is the stored value of
    a raw 0 (black) pixel, ``(0 - mean) / std``: -1 for data in [-1, 1], where a 0 would be
    grey; the default 0 is right for [0, 1] data.
    """
    if pixels <= 0:
        return x
    if x.dim() != 4:
        raise ValueError(f"jitter needs N x C x H x W images, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    shifts = torch.randint(0, 2 * pixels + 1, (2, n), device=x.device)
    padded = F.pad(x, (pixels, pixels, pixels, pixels), value=fill)
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


def random_crop_flip(x: Tensor, padding: int = 4, flip: bool = True,
                     fill: float = 0.0) -> Tensor:
    """The standard CIFAR augmentation: pad, random crop, random horizontal flip.

    Each image is padded with ``fill`` (the stored value of a raw 0, as in
    :func:`random_translate`) by ``padding`` pixels on every side, cropped back to its
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
    padded = F.pad(x, (padding, padding, padding, padding), value=fill)
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def strong_augment(x: Tensor, shift: int = 4, cutout: float = 0.5, jitter: float = 0.5) -> Tensor:
    """A strong view for consistency training (FixMatch's RandAugment + Cutout, on tensors).

    Images (``N x C x H x W``): per image, contrast ``c ~ U(1 - jitter, 1 + jitter)`` around
    its own mean, brightness ``+ b * std`` with ``b ~ U(-jitter, jitter)``, a random shift of up
    to ``shift`` pixels, then one square of side ``v * min(H, W)``, ``v ~ U(0, cutout)`` (as
    FixMatch's Cutout, whose v ~ U(0, 0.5)), at a random centre set to the image's mean.
    Inputs are normalised, not in [0, 1], so every change is relative to the image's own
    statistics. Vectors (``N x D``, e.g. SURF features): the same
    contrast and brightness per row, then ``cutout`` of the entries set to the row's mean.
    Draws come from the global RNG (saved by checkpoints).
    """
    if x.dim() not in (2, 4):
        raise ValueError(f"strong_augment needs N x D or N x C x H x W, got {tuple(x.shape)}")
    if not 0.0 <= cutout < 1.0 or not 0.0 <= jitter < 1.0 or shift < 0:
        raise ValueError(f"need 0 <= cutout < 1, 0 <= jitter < 1, shift >= 0; got "
                         f"cutout={cutout}, jitter={jitter}, shift={shift}")
    n = x.shape[0]
    dims = tuple(range(1, x.dim()))
    view = (n,) + (1,) * (x.dim() - 1)
    mean = x.mean(dims, keepdim=True)
    std = x.std(dims, keepdim=True) if x[0].numel() > 1 else torch.ones_like(mean)
    contrast = 1 + jitter * (2 * torch.rand(view, device=x.device) - 1)
    brightness = jitter * (2 * torch.rand(view, device=x.device) - 1)
    out = (x - mean) * contrast + mean + brightness * std
    if x.dim() == 2:
        if cutout > 0:
            drop = torch.rand(x.shape, device=x.device) < cutout
            out = torch.where(drop, mean, out)
        return out
    out = random_translate(out, shift)
    if cutout > 0:
        h, w = x.shape[2:]
        # FixMatch's Cutout: side v * size with v ~ U(0, 0.5), drawn per image
        half = torch.rand(n, 1, 1, device=x.device) * cutout * min(h, w) / 2
        cy = torch.randint(0, h, (n, 1, 1), device=x.device)
        cx = torch.randint(0, w, (n, 1, 1), device=x.device)
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        box = ((ys - cy).abs() < half) & ((xs - cx).abs() < half)  # n x h x w
        out = torch.where(box[:, None], mean, out)
    return out
