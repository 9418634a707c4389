"""Learning curves of one run from its ``metrics.jsonl`` rows (one row per epoch).

Panels, each drawn only when the rows hold its values: training losses (and the test
losses), test accuracies, method metrics such as DANN's GRL coefficient and domain-classifier
accuracy, the label-free validators' scores and the learning rate when it changes.
"""

from __future__ import annotations

import math
from typing import Any

from transferkit.report.plotting import new_figure, png_bytes

# Top-level row keys that are not a method's metric.
BOOKKEEPING = {"epoch", "step", "lr", "seconds", "train", "eval", "validators", "peers"}
Series = tuple[str, list[float], list[float], str]  # label, epochs, values, line style
COLUMNS = 3


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def _series(rows: list[dict[str, Any]], label: str, read, style: str = "-") -> Series | None:
    """The points ``read(row)`` gives (epochs where it is a finite number), or None."""
    xs, ys = [], []
    for index, row in enumerate(rows):
        value = read(row)
        if _number(value):
            epoch = row.get("epoch")
            xs.append(float(epoch) if _number(epoch) else float(index + 1))
            ys.append(float(value))
    return (label, xs, ys, style) if xs else None


def _keys(rows: list[dict[str, Any]], section: str) -> list[str]:
    """Names under ``row[section]`` in the order they first appear."""
    seen: dict[str, None] = {}
    for row in rows:
        part = row.get(section)
        if isinstance(part, dict):
            seen.update(dict.fromkeys(str(k) for k in part))
    return list(seen)


def _get(row: dict[str, Any], *path: str) -> Any:
    for key in path:
        row = row.get(key) if isinstance(row, dict) else None
    return row


def _scaled(series: Series) -> Series:
    """Values mapped to [0, 1] over the run (validators live on unrelated scales)."""
    label, xs, ys, style = series
    low, high = min(ys), max(ys)
    span = high - low
    return label, xs, [0.5 if span == 0 else (y - low) / span for y in ys], style


def panels(rows: list[dict[str, Any]]) -> list[tuple[str, list[Series]]]:
    """``(title, series)`` for each panel the rows have values for."""
    out: list[tuple[str, list[Series]]] = []
    losses = [_series(rows, name, lambda r, n=name: _get(r, "train", n))
              for name in _keys(rows, "train")]
    splits = _keys(rows, "eval")
    losses += [_series(rows, f"{split} (test loss)", lambda r, s=split: _get(r, "eval", s, "loss"),
                       "--") for split in splits]
    accuracy = [_series(rows, split, lambda r, s=split: _get(r, "eval", s, "accuracy"))
                for split in splits]
    metrics: dict[str, None] = {}
    for row in rows:
        metrics.update(dict.fromkeys(k for k, v in row.items()
                                     if k not in BOOKKEEPING and _number(v)))
    method = [_series(rows, name, lambda r, n=name: r.get(n)) for name in metrics]
    validators = [_series(rows, name, lambda r, n=name: _get(r, "validators", n))
                  for name in _keys(rows, "validators")]
    lr = _series(rows, "lr", lambda r: r.get("lr"))
    for title, found in (
        ("losses (solid: training, dashed: test)", losses),
        ("test accuracy", accuracy),
        ("method metrics (GRL coefficient, domain accuracy, ...)", method),
        ("validator scores, each scaled to [0, 1] (higher is better)",
         [_scaled(s) for s in validators if s is not None]),
        ("learning rate", [lr] if lr is not None and len(set(lr[2])) > 1 else []),
    ):
        kept = [s for s in found if s is not None]
        if kept:
            out.append((title, kept))
    return out


def curves_png(rows: list[dict[str, Any]], title: str) -> bytes | None:
    """One picture with a panel per kind of value; None when the rows hold no number."""
    found = panels(rows)
    if not found:
        return None
    columns = min(COLUMNS, len(found))
    lines = math.ceil(len(found) / columns)
    figure = new_figure(4.2 * columns, 3.0 * lines + 0.3)
    from matplotlib.ticker import MaxNLocator  # after new_figure: it names the extra if missing

    figure.suptitle(title, fontsize=10)
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax, (name, series) in zip(axes, found, strict=False):
        for label, xs, ys, style in series:
            marker = "o" if len(xs) <= 30 else None
            ax.plot(xs, ys, style, marker=marker, markersize=3, linewidth=1.2, label=label)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in axes[len(found):]:
        ax.set_visible(False)
    return png_bytes(figure)
