"""``transferkit list NAME``: what one registered name is, the options it takes and the
formula or reason its module gives, so that a method's options need no trip to the source."""

from __future__ import annotations

import difflib
import inspect
import sys
from typing import Any

from transferkit.config import short_repr
from transferkit.errors import ConfigError

# The --select choices that are not validators.
SELECT_CHOICES = {
    "last": "the last epoch, adapt's default: no choice is made, no label read",
    "oracle": "the epoch with the best target-test accuracy: it reads target labels, so it is "
              "a reference for the validators (reported in every run's summary), never a "
              "label-free result; a run that keeps it says so",
}


def explain(name: str) -> str:
    """A few paragraphs on the dataset, pair, model, method or validator called ``name``."""
    from transferkit.data import DATASETS, PAIRS
    from transferkit.methods import METHODS, method_options
    from transferkit.models import MODELS
    from transferkit.validators import VALIDATORS

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"explain takes the name of a dataset, pair, model, method or "
                          f"validator as a string (e.g. 'dann'), got {short_repr(name)}")
    parts: list[str] = []
    for kind, registry in (("dataset", DATASETS), ("pair", PAIRS), ("model", MODELS)):
        if name in registry:
            text = f"{name} ({kind}): {registry.describe()[name]}"
            if kind == "model":
                text += _paragraphs(inspect.getdoc(registry.get(name)))
            parts.append(text)
    if name in METHODS:
        factory = METHODS.get(name)
        options = _options(factory, method_options(name))
        listed = ", ".join(options) if options else "none"
        module = sys.modules.get(factory.__module__)
        parts.append(f"{name} (method): {METHODS.describe()[name]}\n\noptions (--opt KEY=VALUE, "
                     f"defaults shown): {listed}" + _paragraphs(getattr(module, "__doc__", None)))
    if name in VALIDATORS:
        validator = VALIDATORS[name]
        parts.append(f"{name} (validator, adapt --select {name}): {validator.description} "
                     f"({validator.paper})")
    if name in SELECT_CHOICES:
        parts.append(f"{name} (adapt --select {name}): {SELECT_CHOICES[name]}")
    if not parts:
        known = [*DATASETS, *PAIRS, *MODELS, *METHODS, *VALIDATORS, *SELECT_CHOICES]
        close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(
            name.lower(), known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"{short_repr(name)} is not a registered dataset, pair, model, method "
                          f"or validator{hint} (`transferkit list` shows them all)")
    return "\n\n".join(parts)


def _options(factory: Any, names: list[str]) -> list[str]:
    """``key=default`` (or ``key``, required) for each option the factory takes."""
    params = inspect.signature(factory).parameters
    shown = []
    for key in names:
        param = params[key]
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        shown.append(key if param.default is param.empty else f"{key}={param.default!r}")
    return shown


def _paragraphs(doc: str | None) -> str:
    return "\n\n" + inspect.cleandoc(doc) if doc and doc.strip() else ""
