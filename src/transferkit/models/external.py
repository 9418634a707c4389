"""Models from outside the registry: a ``package.module:factory`` path or a TorchScript file."""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.errors import CheckpointError, ConfigError, TransferkitError

_ARGS = ("input_shape", "num_classes")


def _import_attribute(path: str, what: str = "model") -> Any:
    """The object at ``package.module:attr`` (``attr`` may be dotted, e.g. ``Class.build``);
    ``what`` names it in errors (a model, a discriminator)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{what} path {path!r} must look like 'package.module:factory' "
            "(module path, a colon, then the factory's name)"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise TransferkitError(
                f"cannot import module {module_name!r} for {what} {path!r}: no module named "
                f"{missing!r}; is its folder on PYTHONPATH?"
            ) from exc
        raise TransferkitError(f"importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while being imported
        raise TransferkitError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise TransferkitError(
                f"{module_name!r} has no attribute {attr!r} (missing {part!r}); "
                f"some of its names: {', '.join(public) or '(none)'}"
            )
        obj = getattr(obj, part)
    return obj


def _call_arguments(
    factory: Any,
    path: str,
    input_shape: Sequence[int] | None,
    num_classes: int | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Keyword arguments for ``factory``: ``input_shape``/``num_classes`` if it takes them,
    plus every option (an option it does not take is a ConfigError)."""
    given = {"input_shape": input_shape, "num_classes": num_classes}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: call with the options only
        return dict(options)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in options if k not in params and not takes_any)
    if unknown:
        valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        raise ConfigError(
            f"factory {path!r} has no option {', '.join(repr(u) for u in unknown)}; "
            f"it takes: {', '.join(valid) or 'no arguments'}"
        )
    wanted = [n for n in _ARGS if n in params or takes_any]
    kwargs: dict[str, Any] = {}
    for name in wanted:
        value = given[name]
        if value is None:
            param = params.get(name)
            if param is not None and param.default is inspect.Parameter.empty:
                raise ConfigError(f"factory {path!r} needs {name}, which was not given")
            continue
        kwargs[name] = tuple(value) if name == "input_shape" else value
    kwargs.update(options)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"factory {path!r} cannot be called with {sorted(kwargs) or 'no arguments'}: {exc}; "
            "it should take (input_shape, num_classes) or no required arguments"
        ) from None
    return kwargs


def load_factory(
    path: str,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    /,
    **options: Any,
) -> nn.Module:
    """Build a model from ``package.module:factory``.

    The factory is called as ``factory(input_shape=..., num_classes=..., **options)`` when its
    signature takes those names (or ``**kwargs``), else with just the options (usually none).
    An attribute that already is an ``nn.Module`` instance is returned as it is.
    """
    obj = _import_attribute(path)
    if isinstance(obj, nn.Module):
        if options:
            raise ConfigError(f"{path!r} is a module instance; it takes no options")
        return obj
    if not callable(obj):
        raise TransferkitError(f"{path!r} is a {type(obj).__name__}, not a callable factory")
    kwargs = _call_arguments(obj, path, input_shape, num_classes, options)
    try:
        model = obj(**kwargs)
    except TransferkitError:
        raise
    except Exception as exc:
        raise TransferkitError(f"factory {path!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise TransferkitError(
            f"factory {path!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def load_torchscript(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A TorchScript file (``torch.jit.save``) as a frozen teacher: eval mode, no grad."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"TorchScript file {str(file)!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; we still read it
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(file), map_location=map_location)
    except Exception as exc:  # torch raises RuntimeError/ValueError for non-TorchScript files
        raise CheckpointError(
            f"{str(file)!r} is not a TorchScript file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); save one with torch.jit.save"
        ) from exc
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model
