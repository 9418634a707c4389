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


def embed(source: Tensor, target: Tensor, seed: int = 0,
          points: int = MAX_POINTS) -> tuple[np.ndarray, int]:
    """2-D t-SNE of up to ``points`` rows of each domain; returns (points, rows of source)."""
    from sklearn.manifold import TSNE

    gen = torch.Generator().manual_seed(seed)
    s = source[torch.randperm(len(source), generator=gen)[:points]]
    t = target[torch.randperm(len(target), generator=gen)[:points]]
    x = torch.cat([s, t]).double().numpy()
    if len(x) < 5:
        raise ConfigError(f"t-SNE needs at least 5 feature rows, got {len(x)}")
    perplexity = float(min(30, (len(x) - 1) / 3))
    embedded = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity,
                    learning_rate="auto").fit_transform(x)
    return embedded, len(s)


def tsne_picture(source: Tensor, target: Tensor, path: Path, title: str, seed: int = 0) -> Path:
    """Write the picture to ``path`` (atomically): source in blue, target in red."""
    png = tsne_png(source, target, title, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(png))
    return path


def tsne_png(source: Tensor, target: Tensor, title: str, seed: int = 0,
             points: int = MAX_POINTS) -> bytes:
    """The picture as PNG bytes (the HTML report embeds them): source blue, target red."""
    plt = _matplotlib()
    points_2d, n_source = embed(source, target, seed, points)
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
