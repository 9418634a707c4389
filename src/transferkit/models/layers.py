"""Naming a model's layers: a path as in ``named_modules()`` or a unique ending of it.

``stage2`` finds ``features.stage2``; a wrong name lists the valid ones (stages first).
Models whose layers are numbered (``nn.Sequential``) may name their stages without renaming
any module (so saved weights keep their keys): a ``layer_aliases`` attribute maps
``stage1`` ... to paths inside that model, found wherever the model sits (inside a wrapper too).
"""

from __future__ import annotations

from torch import nn

from transferkit.errors import ConfigError

SHOWN = 16


ALIASES_ATTR = "layer_aliases"


def layer_aliases(model: nn.Module) -> dict[str, str]:
    """``{stage name: full path}`` from every submodule's ``layer_aliases`` (its own paths)."""
    found: dict[str, str] = {}
    for prefix, module in model.named_modules():
        for alias, path in (getattr(module, ALIASES_ATTR, None) or {}).items():
            found.setdefault(alias, f"{prefix}.{path}" if prefix else path)
    return found


def layer_names(model: nn.Module) -> list[str]:
    """Every module path, then the stage aliases that are not paths themselves."""
    names = [name for name, _ in model.named_modules() if name]
    return names + [alias for alias in layer_aliases(model) if alias not in names]


def _listing(model: nn.Module) -> str:
    names = layer_names(model)
    staged = [n for n in names if n.rsplit(".", 1)[-1].startswith("stage")]
    preferred = [*staged, *(n for n in ("features", "head") if n in names)]
    rest = [n for n in names if n not in preferred]
    shown = (preferred + rest)[:SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "") if names else "(none)"


def refuse_logits_only(model: nn.Module, layer: str, who: str) -> None:
    """One line for a network that gives only its logits (an ONNX file) when a method reads
    one of its inner layers."""
    if getattr(model, "logits_only", False):
        raise ConfigError(
            f"a method reads layer {layer!r} of the {who}, which gives only its logits "
            f"({type(model).__name__}); give a PyTorch teacher for feature methods, or use a "
            "logit method (kd, dkd, dist, l2)"
        )


def resolve_layer(model: nn.Module, layer: str, who: str = "model") -> str:
    """The full module path that ``layer`` names in ``model`` (exact, or a unique ending)."""
    if not isinstance(layer, str) or not layer:
        raise ConfigError(f"a layer of the {who} is named by its module path as a string "
                          f"(e.g. 'features.2' or 'stage2'), got {layer!r}")
    paths = [name for name, _ in model.named_modules() if name]
    if layer in paths:
        return layer
    aliases = layer_aliases(model)
    if layer in aliases:
        return aliases[layer]
    names = layer_names(model)
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
