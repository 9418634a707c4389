"""Read a model's intermediate features without rewriting it.

:class:`FeatureTap` records the *input* of a named submodule with a forward pre-hook. The
input of the final linear layer is the penultimate feature vector that domain adaptation
aligns, so any model (registry, external or user-written) can be adapted as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, jit, nn

from transferkit.errors import ConfigError
from transferkit.models.base import eval_mode

_SHOWN_NAMES = 12


def default_layer(model: nn.Module, example: Tensor | None = None) -> str:
    """The classifier layer, whose input is the feature vector: ``head`` when the model has
    one (the registry convention), else its last ``nn.Linear``.

    With ``example`` rows, "last" is in the order forward runs the layers, and the layer
    whose output *is* the model's output wins: a classifier defined before its backbone, or
    a projection head defined after it and never called, is not taken for the classifier.
    """
    modules = dict(model.named_modules())
    if example is None:
        if "head" in modules:
            return "head"
        linear = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
        if not linear:
            raise ConfigError(
                f"{type(model).__name__} has no 'head' and no nn.Linear layer to read features "
                f"from; name a layer, one of: {_some_names(model)}")
        return linear[-1]
    try:
        called = _called_outputs(model, example, ["head"] if "head" in modules else [])
    except Exception:  # inputs it cannot take: the run's probe of the model says so
        return default_layer(model)
    out = called.pop("")
    if "head" in called and called["head"] is out:
        return "head"
    giving = [name for name in called if name != "head" and called[name] is out]
    if giving:  # the layer whose output the model returns: the logits themselves
        return giving[-1]
    if "head" in modules:
        return "head"
    width = out.shape[-1] if isinstance(out, Tensor) and out.dim() > 1 else None
    sized = [name for name, value in called.items() if value.shape[-1] == width]
    if sized:  # logits reshaped or scaled after the classifier
        return sized[-1]
    raise ConfigError(
        f"cannot tell which layer of {type(model).__name__} gives the logits (no nn.Linear "
        f"that forward runs outputs {width} values); name the classifier layer, whose input "
        f"is the feature vector: feature_layer= (--feature-layer), one of: {_some_names(model)}")


def _called_outputs(model: nn.Module, example: Tensor, extra: list[str]) -> dict[str, Any]:
    """The outputs of every ``nn.Linear`` (and the ``extra`` modules) that one forward on
    ``example`` runs, in the order they run (a module run twice: its last place); the
    model's own output under ``""``."""
    called: dict[str, Any] = {}
    handles = []

    def record(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            called.pop(name, None)
            called[name] = output

        return hook

    for name, module in model.named_modules():
        if name and (isinstance(module, nn.Linear) or name in extra):
            handles.append(module.register_forward_hook(record(name)))
    try:
        with eval_mode(model), torch.no_grad():
            out = model(example)
    finally:
        for handle in handles:
            handle.remove()
    called[""] = out
    return called


def _some_names(model: nn.Module) -> str:
    names = [name for name, _ in model.named_modules() if name]
    shown = ", ".join(names[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return shown + (f", ... ({more} more)" if more > 0 else "") if names else "(none)"


class FeatureTap:
    """Captures the input of ``model``'s submodule ``layer`` on each forward, as ``N x D``.

    ``layer`` is a path as in ``model.named_modules()`` (e.g. ``"features.3"``); by default the
    head's input. ``value`` holds the last capture (flattened to ``N x D``), still attached to
    the autograd graph unless ``detach=True``, so losses on it train the layers below.
    Use as a context manager or call :meth:`remove`.
    """

    def __init__(self, model: nn.Module, layer: str | None = None, *, detach: bool = False) -> None:
        modules = dict(model.named_modules())
        name = default_layer(model) if layer is None else layer
        if name not in modules:
            raise ConfigError(
                f"{type(model).__name__} has no layer {name!r}; valid layers include: "
                f"{_some_names(model)}"
            )
        module = modules[name]
        if isinstance(module, jit.ScriptModule) or isinstance(model, jit.ScriptModule):
            raise ConfigError(
                f"cannot tap layer {name!r} of a TorchScript model: hooks do not run inside "
                "scripted code; tap the original Python model instead"
            )
        self.layer = name
        self.module = module
        self.detach = detach
        self.value: Tensor | None = None
        self._handle: Any = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else next(iter(kwargs.values()), None)
        if not isinstance(x, Tensor):
            raise ConfigError(
                f"layer {self.layer!r} received {type(x).__name__}, not a tensor; tap another layer"
            )
        if self.detach:
            x = x.detach()
        self.value = x.flatten(1) if x.dim() > 2 else x

    def remove(self) -> None:
        """Detach the hook; safe to call twice. ``value`` keeps the last capture."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def active(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"FeatureTap(layer={self.layer!r}, active={self.active})"


@torch.no_grad()
def features_and_logits(
    model: nn.Module, x: Tensor, layer: str | None, device: torch.device, batch_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """``(features, logits)`` of ``x`` in eval mode, in float32 on the CPU, batch by batch;
    the features are the input of ``layer`` (the head by default), flattened to ``N x D``."""
    logits, features = [], []
    with FeatureTap(model, layer, detach=True) as tap, eval_mode(model):
        for chunk in x.split(batch_size):
            logits.append(model(chunk.to(device)).float().cpu())
            assert tap.value is not None
            features.append(tap.value.float().cpu())
    return torch.cat(features), torch.cat(logits)
