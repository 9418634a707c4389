"""Naming a model's layers: a path as in ``named_modules()`` or a unique ending of it.

``stage2`` finds ``features.stage2``; a wrong name lists the valid ones (stages first).
"""

from __future__ import annotations

from torch import nn

from transferkit.errors import ConfigError

SHOWN = 16


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _listing(model: nn.Module) -> str:
    names = layer_names(model)
    staged = [n for n in names if n.rsplit(".", 1)[-1].startswith("stage")]
    preferred = [*staged, *(n for n in ("features", "head") if n in names)]
    rest = [n for n in names if n not in preferred]
    shown = (preferred + rest)[:SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "") if names else "(none)"


def resolve_layer(model: nn.Module, layer: str, who: str = "model") -> str:
    """The full module path that ``layer`` names in ``model`` (exact, or a unique ending)."""
    names = layer_names(model)
    if layer in names:
        return layer
    ends = [n for n in names if n.endswith("." + layer)]
    if len(ends) == 1:
        return ends[0]
    if len(ends) > 1:
        raise ConfigError(
            f"layer {layer!r} of the {who} is ambiguous: {', '.join(ends[:6])}; give the path"
        )
    raise ConfigError(
        f"the {who} ({type(model).__name__}) has no layer {layer!r}; valid layers: "
        f"{_listing(model)}"
    )
