"""What a user sees of an adaptation: proxy A-distance and t-SNE pictures of features."""

from __future__ import annotations

from transferkit.report.adistance import proxy_a_distance
from transferkit.report.tsne import tsne_picture

__all__ = ["proxy_a_distance", "tsne_picture"]
