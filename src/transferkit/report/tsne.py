"""A t-SNE picture of source and target features (PNG), needing the ``report`` extra."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.files import atomic_write

MAX_POINTS = 1000  # per domain: t-SNE is quadratic


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the t-SNE picture needs matplotlib: pip install "
                          "'transferkit[report]' (the A-distance is computed without it)") from None
    return plt


# Rows whose spread is at most this fraction of their largest value are "all the same": float32
# rounding of one computation, not features (a dead layer, constant data).
SAME_ROWS = 1e-5
SKIP = "pass --no-picture for the proxy A-distance alone"  # inspect's way round a refusal


def check_features(x: np.ndarray, skip: str = SKIP) -> np.ndarray:
    """``x`` (``N x D``, source and target rows together) made safe for sklearn's t-SNE, or a
    one-line ConfigError saying why it cannot be embedded and what to do.

    sklearn crashes the whole process (a segmentation fault, no exception) on rows that are
    all the same, and fails with a traceback on fewer than 2 columns, on NaN or infinity and
    on values whose squared distances overflow or underflow. So: at least 5 rows and 2
    columns, finite, not all the same; then centred and scaled to a largest value of 1 (the
    picture is unchanged: t-SNE's perplexity calibration and PCA start are scale-free).
    """
    if x.ndim != 2:
        raise ConfigError(f"t-SNE needs N x D feature rows, got shape {tuple(x.shape)}; {skip}")
    rows, width = x.shape
    if rows < 5:
        raise ConfigError(f"t-SNE needs at least 5 feature rows (source and target together), "
                          f"got {rows}; use more rows (--data-opt test=all uses every row of "
                          f"a data file), or {skip}")
    if width < 2:
        raise ConfigError(f"t-SNE needs features at least 2 wide, but the feature layer gives "
                          f"{width} value{'s' * (width != 1)} per row; use a model whose "
                          f"feature layer is wider, or {skip}")
    if not np.isfinite(x).all():
        raise ConfigError(f"the features hold NaN or infinity (the model has diverged), so "
                          f"t-SNE cannot embed them; check the run, or {skip}")
    centred = x - x.mean(axis=0)
    spread = float(np.abs(centred).max())
    largest = float(np.abs(x).max())
    if spread <= SAME_ROWS * largest:  # all zeros as well: 0 <= 0
        why = ("every feature is 0 for every row: the feature layer is dead (e.g. a ReLU "
               "that outputs 0 for every input)" if largest == 0 else
               "every feature row is the same: the feature layer is dead or the data is "
               "constant (every input row alike)")
        raise ConfigError(f"t-SNE cannot embed these features: {why}; check the model and "
                          f"the data, or {skip}")
    return centred / spread


def perplexity_for(rows: int) -> float:
    """sklearn's default 30, lowered to a third of the other rows for few rows (it must stay
    below the row count, and 3 x perplexity neighbours are searched)."""
    return float(min(30.0, (rows - 1) / 3))


def embed(source: Tensor, target: Tensor, seed: int = 0, points: int = MAX_POINTS,
          skip: str = SKIP) -> tuple[np.ndarray, int]:
    """2-D t-SNE of up to ``points`` rows of each domain; returns (points, rows of source).
    Features t-SNE cannot embed raise ConfigError (see :func:`check_features`)."""
    from sklearn.manifold import TSNE

    gen = torch.Generator().manual_seed(seed)
    for name, rows in (("source", source), ("target", target)):
        if rows.dim() != 2:
            raise ConfigError(f"t-SNE needs N x D {name} features, got shape "
                              f"{tuple(rows.shape)}; {skip}")
    if source.shape[1] != target.shape[1]:
        raise ConfigError(f"source features {tuple(source.shape)} and target features "
                          f"{tuple(target.shape)} differ in width")
    s = source[torch.randperm(len(source), generator=gen)[:points]]
    t = target[torch.randperm(len(target), generator=gen)[:points]]
    x = check_features(torch.cat([s, t]).double().numpy(), skip)
    embedded = TSNE(n_components=2, init="pca", random_state=seed,
                    perplexity=perplexity_for(len(x)), learning_rate="auto").fit_transform(x)
    if not np.isfinite(embedded).all():  # never seen; a picture of NaN would be blank
        raise ConfigError(f"t-SNE gave NaN for these features; {skip}")
    return embedded, len(s)


def tsne_picture(source: Tensor, target: Tensor, path: Path, title: str, seed: int = 0) -> Path:
    """Write the picture to ``path`` (atomically): source in blue, target in red."""
    png = tsne_png(source, target, title, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(png))
    return path


def tsne_png(source: Tensor, target: Tensor, title: str, seed: int = 0,
             points: int = MAX_POINTS, skip: str = SKIP) -> bytes:
    """The picture as PNG bytes (the HTML report embeds them): source blue, target red.
    ``skip``: the way round a refusal, ending its message."""
    plt = _matplotlib()
    points_2d, n_source = embed(source, target, seed, points, skip)
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    axes.scatter(*points_2d[:n_source].T, s=4, c="tab:blue", alpha=0.6, label="source")
    axes.scatter(*points_2d[n_source:].T, s=4, c="tab:red", alpha=0.6, label="target")
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="best", fontsize=8, markerscale=3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
