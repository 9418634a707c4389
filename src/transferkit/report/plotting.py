"""Matplotlib for the report pictures: imported lazily, drawn without pyplot.

A ``Figure`` with the Agg canvas changes no global backend and needs no ``plt.close``, so
making a report inside a notebook or a GUI session leaves its plotting alone.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Any

from transferkit.errors import ConfigError

INSTALL = "pip install 'transferkit[report]'"


def require_matplotlib(what: str = "the HTML report") -> None:
    """One line naming the extra to install, before any work is done."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"{what} needs matplotlib: {INSTALL}")


def new_figure(width: float, height: float, dpi: int = 80) -> Any:
    """A matplotlib Figure drawn by Agg (``width`` x ``height`` inches)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Any) -> bytes:
    """The figure as PNG bytes, without the software tag (the same picture, the same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
