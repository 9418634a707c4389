"""The interface shared by distillation and adaptation methods.

A method turns one batch, plus the outputs of the networks on it, into named losses; the
engine sums them. What a method may declare, all optional:

- ``taps()``: the layers it reads (:class:`Tap`): whose (student, teacher or a peer), which
  module, its input or output, flattened or not. The engine hooks the union of every
  method's taps, runs each frozen teacher once per step, and hands the captures to all.
- ``teachers()``: frozen networks it brings (run by the engine in eval mode, no grad);
  ``networks(student)``: extra *trained* networks it owns (DML's peers).
- ``setup(info)``: build connectors once the tap shapes (probed on one batch), the student
  and the teachers are known; ``start_epoch``/``end_epoch``: per-epoch work (memory banks,
  pseudo-labels).
- ``phases()``: split a step into phases, each with its own losses, trained parameters and
  optimizer (MCD's three steps); one phase by default.
- ``needs``: what the run must provide (``teacher``, ``labels``, ``target``); a command
  refuses, in one line, a list of methods whose needs it cannot meet.

Methods that need extra trainable modules (a domain discriminator, a regressor) own them as
submodules, so the optimizer, checkpoints and DistributedDataParallel see them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_count as check_count  # re-exported for methods
from transferkit.losses._checks import check_number

ROLES_FIXED = ("student", "teacher")
IOS = ("output", "input")
PARTS = ("source", "target", "all")
NEEDS = ("teacher", "labels", "target")


@dataclass(frozen=True)
class Tap:
    """One layer a method reads.

    ``role``: ``"student"``, ``"teacher"`` (or another frozen network's role) or a peer's
    name; ``layer``: a module path as in ``named_modules()`` (a unique ending such as
    ``stage2`` is enough; ``"logits"`` is the network's output); ``io``: the module's
    ``output`` or ``input``; ``flatten``: ``N x D`` instead of the kept shape.
    """

    role: str = "student"
    layer: str = "logits"
    io: str = "output"
    flatten: bool = False

    def __post_init__(self) -> None:
        if self.io not in IOS:
            raise ConfigError(f"tap io must be one of {', '.join(IOS)}, got {self.io!r}")
        if not isinstance(self.layer, str) or not self.layer:
            raise ConfigError(f"tap layer must be a module path, got {self.layer!r}")

    def __str__(self) -> str:
        flat = ", flat" if self.flatten else ""
        return f"{self.role}:{self.layer}:{self.io}{flat}"


@dataclass(frozen=True)
class Phase:
    """One part of a step with its own backward pass and optimizer.

    ``trains``: prefixes of parameter names in the objective (``model`` = the student,
    ``model.features``, ``methods.mcd.heads``); ``None`` trains every trainable parameter.
    ``repeat``: how many times the phase runs per step (MCD's generator step runs 4 times).
    Methods that declare no phases contribute their losses to the first phase.
    """

    name: str = "main"
    trains: tuple[str, ...] | None = None
    repeat: int = 1


DEFAULT_PHASE = Phase()


# Training progress p in [0, 1]: a float, or a 0-d tensor on the device in a compiled step.
Progress = float | Tensor


def capped(value: Progress, cap: float = 1.0) -> Progress:
    """``min(value, cap)`` for a float or a 0-d tensor (no data-dependent branch)."""
    if isinstance(value, Tensor):
        return value.clamp(max=cap)
    return min(value, cap)


@dataclass
class Batch:
    """One training step's data: labelled (or unlabelled) inputs and optional target inputs.

    ``index`` / ``target_index`` are the rows' positions in the training tensors, so methods
    can look up per-row values computed once (a cached teacher's logits, a memory bank).
    """

    x: Tensor
    y: Tensor | None = None
    x_target: Tensor | None = None
    index: Tensor | None = None
    target_index: Tensor | None = None


@dataclass
class Outputs:
    """The networks' outputs on a batch, computed once per step (per phase) and shared.

    ``logits``/``features``/``target_*`` are the student's on the source and target rows;
    ``taps`` holds every requested capture over the rows each network ran on (``rows``:
    ``source``, ``target`` or ``all`` = source rows then target rows), read with :meth:`get`.
    """

    logits: Tensor
    features: Tensor | None = None
    target_logits: Tensor | None = None
    target_features: Tensor | None = None
    joint_features: Tensor | None = None  # source then target rows, as the model produced them
    taps: dict[Tap, Tensor] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)  # role -> which rows it ran on
    n_source: int | None = None
    phase: str = DEFAULT_PHASE.name

    def has(self, tap: Tap, part: str = "source") -> bool:
        try:
            self.get(tap, part)
        except ConfigError:
            return False
        return True

    def get(self, tap: Tap, part: str = "source") -> Tensor:
        """The capture of ``tap`` on the ``source`` rows, the ``target`` rows or ``all``."""
        if part not in PARTS:
            raise ConfigError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        if tap.layer == "logits":  # already N x C: stored once, whatever flatten says
            tap = Tap(tap.role, "logits")
        if tap not in self.taps:
            raise ConfigError(f"tap {tap} was not captured; declare it in the method's taps()")
        value, ran = self.taps[tap], self.rows.get(tap.role, "source")
        if part == ran:
            return value
        if ran == "all" and self.n_source is not None:
            return value[: self.n_source] if part == "source" else value[self.n_source :]
        raise ConfigError(f"{tap.role} ran on the {ran} rows only; {part} rows were asked for")


@dataclass
class TrainInfo:
    """What methods may need to build their modules before training starts."""

    num_classes: int
    feature_dim: int | None = None
    feature_layer: str | None = None  # the module whose input is the feature vector (the head)
    class_counts: Tensor | None = None
    total_steps: int = 1
    x: Tensor | None = None
    x_target: Tensor | None = None
    jitter: int = 0
    y: Tensor | None = None
    student: nn.Module | None = None
    teachers: dict[str, nn.Module] = field(default_factory=dict)
    tap_shapes: dict[Tap, tuple[int, ...]] = field(default_factory=dict)  # per sample
    steps_per_epoch: int = 1
    epochs: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def shape(self, tap: Tap) -> tuple[int, ...]:
        """The per-sample shape of ``tap`` (probed on one batch before training)."""
        if tap not in self.tap_shapes:
            raise ConfigError(f"tap {tap} has no probed shape; declare it in taps()")
        return self.tap_shapes[tap]


class Method(nn.Module):
    """Base class: subclasses set ``name`` and implement :meth:`losses`."""

    name: ClassVar[str] = ""
    needs_features: ClassVar[bool] = False  # the student's feature vector (input of head)
    needs_target: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    # The method mixes in its own hard-label term (kd's 1 - alpha): a command adds no
    # ``supervised`` beside it.
    own_label_term: ClassVar[bool] = False
    # Source-free: adapts a trained source model from unlabelled target rows alone. In such
    # a run no source data exists: the batch's rows (``batch.x``, ``out.logits``) are target
    # rows, and only source-free methods may be listed.
    source_free: ClassVar[bool] = False
    # The method schedules its own source cross-entropy (ADDA's stage 1 only): ``adapt``
    # adds no ``supervised`` beside it.
    replaces_supervised: ClassVar[bool] = False
    # False for a method that trains nothing (AdaBN only re-estimates statistics); a run whose
    # methods all train nothing takes no optimizer steps.
    trains_network: ClassVar[bool] = True
    # Options that divide the loss (l2's scale): a tiny one is a huge loss weight, which a
    # diverged run names as its likely cause.
    loss_divisors: ClassVar[tuple[str, ...]] = ()
    # False for a method whose losses read only intermediate layers (fitnet, crd...): without
    # labels and without a logit method beside it, nothing would train the classifier.
    trains_logits: ClassVar[bool] = True

    @property
    def needs(self) -> frozenset[str]:
        """What the run must provide: ``teacher``, ``labels``, ``target`` (target inputs)."""
        wanted = {"labels"} if self.needs_labels else set()
        if self.needs_target:
            wanted.add("target")
        if self.teachers():
            wanted.add("teacher")
        return frozenset(wanted)

    def taps(self) -> Sequence[Tap]:
        """Layers this method reads (besides the student's logits, always given)."""
        return ()

    def teachers(self) -> dict[str, nn.Module]:
        """Frozen networks this method compares with, by role (run once per step)."""
        return {}

    def teacher_rows(self) -> str:
        """Which rows the teachers must see: ``source``, ``target`` or ``all``."""
        return "source"

    def networks(self, student: nn.Module) -> dict[str, nn.Module]:
        """Extra trained networks this method owns, by name (evaluated and saved too)."""
        return {}

    def phases(self) -> Sequence[Phase]:
        """The phases of a step; methods without their own add to the first phase."""
        return ()

    def setup(self, info: TrainInfo) -> None:
        """Build extra modules once the model's feature size and tap shapes are known."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based), on every rank."""

    def end_epoch(self, epoch: int) -> None:
        """Called after each epoch's steps, before evaluation, on every rank."""

    def losses(self, batch: Batch, out: Outputs, progress: Progress) -> dict[str, Tensor]:
        """Named loss terms for this batch; ``progress`` runs from 0 to 1 over training.

        A float in eager steps; a 0-d tensor on the device in a compiled step (``compile``),
        so that the graph does not depend on its value: schedule with tensor-safe arithmetic
        (:func:`capped`, :func:`~transferkit.losses.dann_warmup`), not ``if`` or ``min``.
        """
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Extra values to log for the last step (for example the current GRL coefficient)."""
        return {}

    def self_synced_buffers(self) -> list[str]:
        """Names (as in ``named_buffers()``) of buffers this method keeps equal on every DDP
        rank itself (a memory bank updated from gathered rows): DDP need not broadcast them."""
        return []

    def close(self) -> None:
        """Undo what the method changed on modules it was given (called after training)."""


def check_fraction(name: str, value: object) -> float:
    """A number in [0, 1]."""
    return check_number(name, value, high=1.0)


def check_nonnegative(name: str, value: object) -> float:
    """A finite number >= 0."""
    return check_number(name, value)


def check_positive(name: str, value: object) -> float:
    """A finite number > 0."""
    return check_number(name, value, positive=True)


# Softening temperatures (and kernel widths) outside this range only make overflow: logits
# divided by 1e-300 are infinite, T**2 of 1e300 is; papers use 0.07 (CRD) to 20.
SCALE_RANGE = (1e-2, 1e3)


def check_scale(name: str, value: object) -> float:
    """A temperature or kernel width, in ``SCALE_RANGE``."""
    low, high = SCALE_RANGE
    number = check_number(name, value, positive=True, high=high)
    if number < low:
        raise ConfigError(f"{name} must be at least {low:g} (smaller values turn the logits "
                          f"into infinities), got {value!r}")
    return number


def check_flag(who: str, name: str, value: object, choices: str = "true or false") -> bool:
    """A true/false option of method ``who``: a real ``bool`` only. ``bool(x)`` would take
    the string ``'false'`` (or ``'no'``, ``'maybe'``, ``0.5``) as true, so anything else is
    refused in one line that names the method, the option and what to write."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        kind = "a string; write true or false, unquoted"
    elif value is None:
        kind = "empty"
    elif isinstance(value, int | float):
        kind = "a number"
    else:
        kind = f"a {type(value).__name__}"
    raise ConfigError(f"{who}: {name} must be {choices}, got {value!r} ({kind})")


def check_count_at_most(who: str, name: str, value: object, most: int, why: str,
                        least: int = 1) -> int:
    """An integer from ``least`` to ``most``: :func:`check_count`, then a cap on values that
    would hang a run or allocate absurd memory; ``why`` says where the cap comes from."""
    count = check_count(name, value, least)
    if count > most:
        raise ConfigError(f"{who}: {name} must be an integer from {least} to {most} ({why}), "
                          f"got {value!r}")
    return count


def check_layers(name: str, value: Any) -> tuple[str, ...]:
    """A layer list option: ``[stage2, stage3]`` or one name; each a non-empty string."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value or not all(
        isinstance(v, str) and v for v in value
    ):
        raise ConfigError(
            f"{name} must be a list of layer names such as [stage2, stage3], got {value!r}"
        )
    return tuple(value)
