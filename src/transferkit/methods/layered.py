"""Base for methods that compare student and teacher layers (FitNet, AT, SP, RKD, CRD, ...).

A method names the layers it compares with ``student_layers`` / ``teacher_layers`` (module
paths or unique endings: ``[stage2, stage3]``; ``features`` is the feature vector the head
reads). Left out, each method picks a default from what the networks offer (see
:func:`default_layers`): every ``stageK`` of a registry model, its middle or last stage, or
the feature vector. The engine hooks the layers, runs the teacher once per step and probes
the shapes before training, so connectors are sized in :meth:`setup_connectors`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.methods.base import Batch, Outputs, Tap, TrainInfo, check_layers, check_positive
from transferkit.methods.teacher import TEACHER, TeacherMethod
from transferkit.models.layers import layer_names, refuse_logits_only

# What a method reads when no layers are given: every stage, the middle or last stage, or
# the feature vector (the output of ``features``, the head's input).
DEFAULTS = ("stages", "middle", "last", "embedding")


def stage_layers(model: nn.Module) -> list[str]:
    """The ``stageK`` modules of a model, in order (``features.stage1`` ...)."""
    staged = []
    for name in layer_names(model):
        last = name.rsplit(".", 1)[-1]
        if last.startswith("stage") and last[5:].isdigit() and name.count(".") <= 2:
            staged.append((int(last[5:]), name))
    return [name for _, name in sorted(staged)]


def default_layers(model: nn.Module, kind: str) -> list[str]:
    """Layers of ``model`` for a default ``kind`` (see :data:`DEFAULTS`)."""
    refuse_logits_only(model, kind, "teacher")
    stages = stage_layers(model)
    if kind == "embedding" or not stages:
        names = layer_names(model)
        if "features" in names or any(n.endswith(".features") for n in names):
            return ["features"]
        raise ConfigError(
            f"{type(model).__name__} has no 'features' module and no stages to read; name the "
            "layers with student_layers=[...] / teacher_layers=[...]"
        )
    if kind == "middle":
        return [stages[(len(stages) - 1) // 2]] if len(stages) > 1 else stages
    if kind == "last":
        return [stages[-1]]
    return stages


class LayerMethod(TeacherMethod):
    """A teacher method that compares pairs of (student layer, teacher layer) captures.

    Subclasses set ``default`` (one of :data:`DEFAULTS`), optionally ``flatten`` (compare
    ``N x D`` vectors) and ``needs_maps`` (the layers must be ``N x C x H x W``), and
    implement :meth:`pair_loss` (plus :meth:`setup_connectors` for trainable parts). The
    loss is ``weight * sum over pairs``, as RepDistiller's recipes (whose weights we use) sum
    the per-layer terms.
    """

    default: str = "stages"
    flatten: bool = False
    trains_logits = False
    needs_maps: bool = False
    default_weight: float = 1.0

    def __init__(
        self,
        teacher: nn.Module,
        weight: float | None = None,
        student_layers: Any = None,
        teacher_layers: Any = None,
        inputs: str = "source",
    ) -> None:
        super().__init__(teacher, inputs)
        self.weight = check_positive("weight", self.default_weight if weight is None else weight)
        self.student_layers = None if student_layers is None else check_layers(
            "student_layers", student_layers)
        self.teacher_layers = None if teacher_layers is None else check_layers(
            "teacher_layers", teacher_layers)
        self.pairs: list[tuple[Tap, Tap]] = []

    def bind_layers(self, student: nn.Module) -> None:
        """Choose the compared layers (defaults from the networks) and check they pair up."""
        s_layers = list(self.student_layers or default_layers(student, self.default))
        t_layers = list(self.teacher_layers or default_layers(self.teacher, self.default))
        if len(s_layers) != len(t_layers):
            raise ConfigError(
                f"{self.name}: {len(s_layers)} student layers ({', '.join(s_layers)}) but "
                f"{len(t_layers)} teacher layers ({', '.join(t_layers)}); give as many of each "
                "with student_layers=[...] and teacher_layers=[...]"
            )
        self.pairs = [
            (Tap("student", s, "output", self.flatten), Tap(TEACHER, t, "output", self.flatten))
            for s, t in zip(s_layers, t_layers, strict=True)
        ]

    def networks(self, student: nn.Module) -> dict[str, nn.Module]:
        self.bind_layers(student)  # before taps(): the engine asks for them next
        return {}

    def taps(self) -> list[Tap]:
        return [tap for pair in self.pairs for tap in pair]

    def setup(self, info: TrainInfo) -> None:
        super().setup(info)
        if not self.pairs and info.student is not None:
            self.bind_layers(info.student)
        shapes = []
        for s_tap, t_tap in self.pairs:
            s_shape, t_shape = info.shape(s_tap), info.shape(t_tap)
            if self.needs_maps and (len(s_shape) != 3 or len(t_shape) != 3):
                raise ConfigError(
                    f"{self.name} compares feature maps (C x H x W) but student layer "
                    f"{s_tap.layer!r} gives {s_shape} and teacher layer {t_tap.layer!r} gives "
                    f"{t_shape}; name convolutional layers with student_layers / teacher_layers"
                )
            shapes.append((s_shape, t_shape))
        self.setup_connectors(shapes, info)

    def setup_connectors(
        self, shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], info: TrainInfo
    ) -> None:
        """Build trainable parts from the per-sample (student, teacher) shape of each pair."""

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        raise NotImplementedError

    def captures(self, out: Outputs) -> list[tuple[Tensor, Tensor]]:
        part = {"source": "source", "target": "target", "both": "all"}[self.inputs]
        return [(out.get(s, part), out.get(t, part).detach()) for s, t in self.pairs]

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        if not self.pairs:
            raise ConfigError(f"{self.name} reads layers through the engine; train it with "
                              "Trainer / transferkit.distill")
        pairs = self.captures(out)
        total = sum(self.pair_loss(i, s, t) for i, (s, t) in enumerate(pairs))
        assert isinstance(total, Tensor)
        return {self.name: self.weight * total}
