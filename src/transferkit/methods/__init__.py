"""Methods: each turns a batch into named losses; a run sums a list of them.

A list is written ``kd+fitnet`` (or given as a Python list). Options go to every listed
method that takes them, or to one method with a prefix: ``fitnet.weight=50``.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from transferkit.config import training_setting_guess
from transferkit.errors import ConfigError
from transferkit.methods.base import Batch, Method, Outputs, Phase, Tap, TrainInfo
from transferkit.methods.dann import DANN
from transferkit.methods.kd import SoftTargetDistillation
from transferkit.methods.l2 import L2Distillation
from transferkit.methods.registry import METHODS
from transferkit.methods.supervised import Supervised

# Methods in their own modules register themselves (@METHODS.register) when imported here.
# isort: off
from transferkit.methods import datafree  # noqa: F401
from transferkit.methods import dml  # noqa: F401
from transferkit.methods import ensemble  # noqa: F401
from transferkit.methods import vid  # noqa: F401
from transferkit.methods import crd  # noqa: F401
from transferkit.methods import reviewkd  # noqa: F401
from transferkit.methods import at  # noqa: F401
from transferkit.methods import cc  # noqa: F401
from transferkit.methods import dist  # noqa: F401
from transferkit.methods import dkd  # noqa: F401
from transferkit.methods import fitnet  # noqa: F401
from transferkit.methods import nst  # noqa: F401
from transferkit.methods import pkt  # noqa: F401
from transferkit.methods import rkd  # noqa: F401
from transferkit.methods import sp  # noqa: F401
from transferkit.methods import dan  # noqa: F401
from transferkit.methods import jan  # noqa: F401
from transferkit.methods import coral  # noqa: F401
from transferkit.methods import cdan  # noqa: F401
from transferkit.methods import mdd  # noqa: F401
from transferkit.methods import mcd  # noqa: F401
from transferkit.methods import afn  # noqa: F401
from transferkit.methods import bsp  # noqa: F401
from transferkit.methods import mcc  # noqa: F401
from transferkit.methods import bnm  # noqa: F401
from transferkit.methods import pseudo_label  # noqa: F401
from transferkit.methods import fixmatch  # noqa: F401
from transferkit.methods import shot  # noqa: F401
from transferkit.methods import tent  # noqa: F401
from transferkit.methods import adabn  # noqa: F401
from transferkit.methods import adda  # noqa: F401
# isort: on
METHODS.register("supervised", "cross-entropy on labels (teachers, source-only baseline)")(
    Supervised
)
METHODS.register("l2", "weighted L2 between teacher and student logits (the article's objective)")(
    L2Distillation
)
METHODS.register("kd", "soft targets with temperature, T^2 factor; standardize=true for logit "
                 "standardisation (Hinton et al. 2015; Sun et al. CVPR 2024)")(
    SoftTargetDistillation
)
METHODS.register("dann", "domain-adversarial training: gradient reversal + domain discriminator "
                 "(Ganin & Lempitsky, ICML 2015)")(DANN)

# Methods that bring their own hard-label term (so ``distill`` adds no ``supervised``).
OWN_LABEL_TERM = ("kd", "l2")


# Names that contain the list separator, as their papers write them: cdan+e.
COMPOUND_NAMES = ("cdan+e",)


def _merge_compound(parts: list[str]) -> list[str]:
    """``["cdan", "e", "kd"]`` -> ``["cdan+e", "kd"]``."""
    merged: list[str] = []
    for part in parts:
        if merged and f"{merged[-1]}+{part}" in COMPOUND_NAMES:
            merged[-1] = f"{merged[-1]}+{part}"
        else:
            merged.append(part)
    return merged


def method_names(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"kd+fitnet"`` or ``["kd", "fitnet"]`` -> ``["kd", "fitnet"]``, each registered."""
    if isinstance(spec, str):
        names = _merge_compound([part.strip() for part in spec.split("+")])
    elif isinstance(spec, list | tuple) and all(isinstance(s, str) for s in spec):
        names = [s.strip() for s in spec]
    else:
        raise ConfigError(f"method must be a name such as 'kd' or 'kd+fitnet', got {spec!r}")
    if not names or any(not n for n in names):
        raise ConfigError(f"method {spec!r} has an empty name; write e.g. kd+fitnet")
    for name in names:
        METHODS.get(name)  # an unknown name lists the valid ones
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"method {dupes[0]!r} is listed twice in {spec!r}; give it once")
    if "cdan" in names and "cdan+e" in names:  # one method twice: two discriminators
        raise ConfigError(f"cdan+e is cdan with entropy weighting: {spec!r} lists cdan twice; "
                          "give cdan or cdan+e")
    return names


def method_options(name: str) -> list[str]:
    """The options ``name`` takes (its constructor's parameters, without the teacher)."""
    params = inspect.signature(METHODS.get(name)).parameters
    return [p for p in params if p not in ("teacher", "teachers")]


def takes_teacher(name: str) -> bool:
    params = inspect.signature(METHODS.get(name)).parameters
    return "teacher" in params or "teachers" in params


def route_options(names: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's options: ``name.key`` goes to that method, a bare ``key`` to every
    listed method that takes it; a key no listed method takes is refused, naming them."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in names}
    prefixed: set[tuple[str, str]] = set()  # (method, option) set by ``method.option``
    if not isinstance(options, dict):
        raise ConfigError(f"method options must be a mapping such as {{'trade_off': 0.5}}, "
                          f"got {type(options).__name__}")
    # ``method.option`` first: it names one method, so a bare ``option`` never overrides it
    for key, value in sorted(options.items(), key=lambda kv: "." not in str(kv[0])):
        if not isinstance(key, str):
            raise ConfigError(f"method option names must be strings, got {key!r}")
        owner, dot, option = key.partition(".")
        if dot:
            if owner not in routed:
                raise ConfigError(
                    f"option {key!r} is for method {owner!r}, which is not in the list "
                    f"({'+'.join(names)})"
                )
            targets = [owner]
        else:
            option = key
            targets = [n for n in names if key in method_options(n)]
        for target in targets:
            if option not in method_options(target):
                valid = ", ".join(method_options(target)) or "none"
                raise ConfigError(f"method {target!r} has no option {option!r}; its options: "
                                  f"{valid}")
            if dot:
                prefixed.add((target, option))
            elif (target, option) in prefixed:
                continue  # ``target.option`` was given: it wins for that method
            routed[target][option] = value
        if not targets and len(names) == 1:
            valid = ", ".join(method_options(names[0])) or "none"
            raise ConfigError(f"method {names[0]!r} has no option {key!r}"
                              f"{training_setting_guess(key)}; its options: {valid}")
        if not targets:
            listing = "; ".join(f"{n}: {', '.join(method_options(n)) or 'none'}" for n in names)
            raise ConfigError(f"no method in {'+'.join(names)} has an option {key!r}"
                              f"{training_setting_guess(key)} ({listing})")
    return routed


def build_method(name: str, teacher: nn.Module | None = None, **options: Any) -> Method:
    """Instantiate a registered method; methods that compare with a teacher need one."""
    factory = METHODS.get(name)
    params = inspect.signature(factory).parameters
    valid = method_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"method {name!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(valid) or 'none'}"
        )
    if "teacher" in params:
        if teacher is None:
            raise ConfigError(f"method {name!r} needs a teacher")
        if isinstance(teacher, list | tuple):
            if len(teacher) != 1:
                raise ConfigError(f"method {name!r} distils one teacher, got {len(teacher)}; "
                                  "use 'ensemble' for several")
            teacher = teacher[0]
        options["teacher"] = teacher
    elif "teachers" in params:
        if teacher is None:
            raise ConfigError(f"method {name!r} needs teachers")
        options["teachers"] = teacher if isinstance(teacher, list | tuple) else [teacher]
    try:
        return factory(**options)
    except ConfigError as exc:  # "trade_off must be ..." names its method (mcc+pseudo_label)
        text = str(exc)
        if text.startswith((f"{name}:", f"{name} ", f"method {name!r}")):
            raise
        raise ConfigError(f"{name}: {text}") from None


def build_methods(
    spec: str | list[str], teacher: nn.Module | None = None, options: dict[str, Any] | None = None
) -> list[Method]:
    """The methods of a list such as ``kd+fitnet``, each with its routed options."""
    names = method_names(spec)
    routed = route_options(names, dict(options or {}))
    return [build_method(n, teacher if takes_teacher(n) else None, **routed[n]) for n in names]


def check_needs(methods: list[Method], provides: set[str], command: str, why: str = "") -> None:
    """Refuse, in one line, a list whose needs (teacher, labels, target) the run cannot meet."""
    hints = {
        "teacher": "give a teacher (--teacher / teacher=)",
        "labels": "train on labelled data",
        "target": "train on a domain pair such as digits->digits_shifted",
    }
    if command == "train":  # train takes neither: the verb that does is the fix
        hints["teacher"] = "use distill (transferkit distill --teacher T / tk.distill)"
        hints["target"] = ("use adapt on a domain pair (transferkit adapt --data "
                           "digits->digits_shifted / tk.adapt)")
    for method in methods:
        missing = sorted(method.needs - provides)
        if missing:
            raise ConfigError(
                f"{command}: method {method.name!r} needs {' and '.join(missing)}, which this "
                f"run does not have{why}; {hints[missing[0]]}"
            )


__all__ = [
    "DANN",
    "METHODS",
    "OWN_LABEL_TERM",
    "Batch",
    "L2Distillation",
    "Method",
    "Outputs",
    "Phase",
    "SoftTargetDistillation",
    "Supervised",
    "Tap",
    "TrainInfo",
    "build_method",
    "build_methods",
    "check_needs",
    "method_names",
    "route_options",
]
