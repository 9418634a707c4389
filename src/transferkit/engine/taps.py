"""Forward hooks that capture the layers methods declare (:class:`Tap`), by module path.

No model is rewritten: a hook on the named submodule records its input or output during the
objective's forward pass (only then: evaluation passes record nothing and hold no memory).
A layer is named by its path in ``named_modules()`` or by a unique ending of it (``stage2``
finds ``features.stage2``); ``logits`` is the network's own output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, jit, nn

from transferkit.errors import ConfigError
from transferkit.methods.base import Tap
from transferkit.models.layers import refuse_logits_only, resolve_layer

LOGITS = "logits"


class TapRecorder:
    """Hooks one network for a set of taps; ``values`` holds the captures of the last pass.

    Captures are kept only while ``active`` (inside the objective's forward); each tap is
    stored under the :class:`Tap` that asked for it, flattened to ``N x D`` when asked.
    """

    def __init__(self, model: nn.Module, taps: Iterable[Tap], who: str) -> None:
        self.values: dict[Tap, Tensor] = {}
        self.calls: dict[str, int] = {}  # per hooked layer: how often the last pass ran it
        self.active = False
        self._handles: list[Any] = []
        wanted: dict[tuple[str, str], list[Tap]] = {}
        for tap in taps:
            if tap.layer == LOGITS:
                continue  # the forward's return value: stored by the objective
            refuse_logits_only(model, tap.layer, who)
            path = resolve_layer(model, tap.layer, who)
            wanted.setdefault((path, tap.io), []).append(tap)
        if wanted and isinstance(model, jit.ScriptModule):
            raise ConfigError(
                f"cannot read layers of the {who}: it is a TorchScript model and hooks do not "
                "run inside scripted code; give the original Python model"
            )
        modules = dict(model.named_modules())
        for (path, io), group in wanted.items():
            module = modules[path]
            if io == "output":
                handle = module.register_forward_hook(self._output_hook(path, group))
            else:
                handle = module.register_forward_pre_hook(
                    self._input_hook(path, group), with_kwargs=True
                )
            self._handles.append(handle)

    def _store(self, path: str, group: list[Tap], value: Any) -> None:
        if not self.active:
            return
        self.calls[path] = self.calls.get(path, 0) + 1
        if isinstance(value, tuple | list) and value and isinstance(value[0], Tensor):
            value = value[0]  # modules returning (tensor, extra): the tensor
        if not isinstance(value, Tensor):
            raise ConfigError(
                f"layer {path!r} gives {type(value).__name__}, not a tensor; tap another layer"
            )
        for tap in group:
            self.values[tap] = value.flatten(1) if tap.flatten and value.dim() > 2 else value

    def _output_hook(self, path: str, group: list[Tap]):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._store(path, group, output)

        return hook

    def _input_hook(self, path: str, group: list[Tap]):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._store(path, group, args[0] if args else next(iter(kwargs.values()), None))

        return hook

    def values_wanted(self) -> bool:
        """Whether any layer of this network is hooked (a cached output would miss it)."""
        return bool(self._handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.values = {}
