"""``digits_shifted``: the digits "as if from another scanner", a domain shift with no download.

Every 8x8 image ``x`` in [0, 1] (all 1797, in their original order) gets its own parameters
from one seeded generator, so the copy is the same on every machine:

1. skew: rotate by ``-theta`` with ``theta ~ U(10, 20)`` degrees, always the same direction as
   a misaligned feeder would (bilinear, zero fill, image size kept);
2. ink bleed: ``x <- (1 - a) x + a * dilate(x)``, a 2x2 grey dilation with ``a = 0.3``,
   which thickens strokes;
3. contrast: ``x <- 0.5 + g (x - 0.5)`` with ``g ~ U(0.8, 1.0)``, a greyer background;
4. sensor noise: ``x <- clip(x + n, 0, 1)`` with ``n ~ N(0, 0.05^2)`` per pixel.

The images then use the same stratified 75/25 split as ``digits``. Measured on flattened
pixels (test accuracy; source = digits, shifted = this copy, seed 1234):

| classifier | source -> source | source -> shifted | shifted -> shifted |
| --- | --- | --- | --- |
| LogisticRegression(max_iter=2000) | 0.969 | 0.616 | 0.940 |
| MLPClassifier((64,), random_state=0) | 0.973 | 0.424 | 0.958 |

So the shift costs a source-only model a third or more of its accuracy, yet stays learnable.
The target train split holds the same underlying digits as the source train split, only
transformed; adaptation methods never see target labels or correspondences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferkit.data.base import Dataset
from transferkit.data.datasets import DATASETS, PathLike, digits_arrays, digits_dataset

SHIFT_SEED = 1234


@dataclass(frozen=True)
class ShiftParams:
    """Strength of each part of the scanner shift (see the module docstring)."""

    min_degrees: float = 10.0
    max_degrees: float = 20.0
    bleed: float = 0.3
    min_contrast: float = 0.8
    max_contrast: float = 1.0
    noise_std: float = 0.05


def shift_images(
    x: np.ndarray, seed: int = SHIFT_SEED, params: ShiftParams | None = None
) -> np.ndarray:
    """Apply the scanner shift to images ``N x H x W`` in [0, 1]; returns float32 in [0, 1]."""
    from scipy import ndimage  # slow import: only here

    p = params or ShiftParams()
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    angles = -rng.uniform(p.min_degrees, p.max_degrees, size=n)
    gains = rng.uniform(p.min_contrast, p.max_contrast, size=(n, 1, 1))
    noise = rng.normal(0.0, p.noise_std, size=x.shape)
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(n):
        img = ndimage.rotate(
            x[i].astype(np.float64), angles[i], reshape=False, order=1, mode="constant", cval=0.0
        )
        thick = ndimage.grey_dilation(img, size=(2, 2))
        out[i] = (1.0 - p.bleed) * img + p.bleed * thick
    out = 0.5 + gains * (out - 0.5) + noise
    return np.clip(out, 0.0, 1.0).astype(np.float32)


_SHIFTED_DESC = (
    "digits as if from another scanner: rotated 10-20 deg, thicker strokes, lower contrast, "
    "noise (seeded, no download)"
)


@DATASETS.register("digits_shifted", _SHIFTED_DESC)
def load_digits_shifted(data_dir: PathLike = None, download: bool = True) -> Dataset:
    """The shifted digits; ``data_dir`` and ``download`` are unused (nothing to fetch)."""
    del data_dir, download
    return digits_dataset("digits_shifted", digits_arrays(shift_images), _SHIFTED_DESC)
