"""A frozen teacher held by distillation methods.

The teacher is deliberately not a registered submodule: its weights stay out of the
optimizer, the student's checkpoints and DistributedDataParallel's gradient buckets.
It is moved with the method (``.to(device)``) and always runs in eval mode without grad.

With ``cache_teacher=True`` (or ``"memory"``) the teacher's logits on every training row are
computed once at setup and looked up by row index: exact when inputs are not augmented (the
engine refuses the cache with ``jitter``), and it removes the teacher's forward pass from every
step. ``cache_teacher="disk"`` also keeps them on disk across runs (keyed by the teacher's
weights, modules, input conversion and the exact rows; see :mod:`teacher_cache`), so a sweep
of students over one teacher runs the teacher over the data once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.methods.base import Batch, Method, Outputs, Tap, TrainInfo, check_positive
from transferkit.methods.teacher_cache import CHUNK, DEFAULT_MAX_GB, TeacherOutputCache
from transferkit.models.base import module_modes, restore_modes

INPUTS = ("source", "target", "both")
ROWS = {"source": "source", "target": "target", "both": "all"}
TEACHER = "teacher"
CACHE_MODES = {False: "off", True: "memory", "off": "off", "memory": "memory", "disk": "disk"}


def cache_mode(value: object) -> str:
    """``cache_teacher`` as ``off``, ``memory`` (this run) or ``disk`` (across runs)."""
    mode = CACHE_MODES.get(value) if isinstance(value, bool | str) else None
    if mode is None:
        raise ConfigError(f"cache_teacher must be false, true (= memory: computed once per run) "
                          f"or disk (kept across runs), got {value!r}")
    return mode


class TeacherMethod(Method):
    """Base for methods that compare the student with a frozen teacher."""

    def __init__(
        self,
        teacher: nn.Module,
        inputs: str = "source",
        cache_teacher: bool | str = False,
        teacher_cache_dir: str | None = None,
        teacher_cache_max_gb: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if inputs not in INPUTS:
            raise ConfigError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
        # What close() gives back: the caller's module leaves training as it came in.
        # Every submodule's own mode: a wrapper (InputConverted) or a frozen BatchNorm inside a
        # teacher in train mode keeps the mode it had.
        self._teacher_was = (
            module_modes(teacher),
            [(p, p.requires_grad, p.device) for p in teacher.parameters()],
            [(b, b.device) for b in teacher.buffers()],
        )
        for param in teacher.parameters():  # (a ScriptModule has no requires_grad_())
            param.requires_grad_(False)
        object.__setattr__(self, "teacher", teacher.eval())
        self.inputs = inputs
        self.cache_mode = cache_mode(cache_teacher)
        self.cache_teacher = self.cache_mode != "off"
        if self.cache_mode != "disk" and (teacher_cache_dir, teacher_cache_max_gb) != (None, None):
            raise ConfigError("teacher_cache_dir and teacher_cache_max_gb apply to "
                              "cache_teacher=disk; set it, or drop them")
        if teacher_cache_dir is not None and (not isinstance(teacher_cache_dir, str)
                                              or not teacher_cache_dir.strip()):
            raise ConfigError(f"teacher_cache_dir must be a folder path, got "
                              f"{teacher_cache_dir!r}")
        self.disk_cache = None if self.cache_mode != "disk" else TeacherOutputCache(
            teacher_cache_dir, DEFAULT_MAX_GB if teacher_cache_max_gb is None
            else check_positive("teacher_cache_max_gb", teacher_cache_max_gb))
        # What the disk cache did, per rows ("source"/"target"): the run summary records it.
        self.cache_record: dict[str, Any] = {}
        # Plain attributes, not buffers: kept out of checkpoints and DDP's buffer broadcast.
        self.cached_logits: Tensor | None = None
        self.cached_target_logits: Tensor | None = None

    @property
    def needs_target(self) -> bool:  # type: ignore[override]
        return self.inputs != "source"

    def teachers(self) -> dict[str, nn.Module]:
        return {TEACHER: self.teacher}

    def teacher_rows(self) -> str:
        return ROWS[self.inputs]

    def cached_teacher_logits(self, batch: Batch, part: str) -> Tensor | None:
        """The cached logits of ``part``'s rows (None when not cached): the engine uses them
        instead of running the teacher."""
        lookups = {"source": [(batch.index, self.cached_logits)],
                   "target": [(batch.target_index, self.cached_target_logits)]}
        lookups["all"] = lookups["source"] + lookups["target"]
        found = []
        for index, cache in lookups[part]:
            if index is None or cache is None:
                return None
            found.append(cache[index.to(cache.device)])
        return torch.cat(found)

    def _apply(self, fn, recurse=True):  # mirrors nn.Module._apply: the teacher moves too
        self.teacher._apply(fn)
        for name in ("cached_logits", "cached_target_logits"):
            if getattr(self, name) is not None:
                setattr(self, name, fn(getattr(self, name)))
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> TeacherMethod:
        super().train(mode)
        self.teacher.eval()
        return self

    def close(self) -> None:
        """Give the teacher back as it came: train/eval mode, ``requires_grad`` and device."""
        modes, params, buffers = self._teacher_was
        devices = {d for _, _, d in params} | {d for _, d in buffers}
        if len(devices) == 1:  # moved with the method: move it back
            self.teacher.to(devices.pop())
        for param, requires_grad, _ in params:
            param.requires_grad_(requires_grad)
        restore_modes(modes)
        self.cached_logits = self.cached_target_logits = None

    def setup(self, info: TrainInfo) -> None:
        if not self.cache_teacher:
            return
        if info.jitter:
            raise ConfigError("cache_teacher needs fixed inputs: it cannot be used with jitter "
                              "or augment")
        if self.inputs != "target" and info.x is not None:
            self.cached_logits = self._cache_rows("source", info.x)
        if self.inputs != "source" and info.x_target is not None:
            self.cached_target_logits = self._cache_rows("target", info.x_target)

    def _cache_rows(self, rows: str, x: Tensor) -> Tensor:
        """The teacher's logits on every row of ``x``: computed now, or read from disk."""
        if self.disk_cache is None:
            return self._all_logits(x)
        device = self._teacher_device()
        logits, info = self.disk_cache.logits(self.teacher, x, device, self._all_logits)
        self.cache_record = {"mode": "disk", "dir": str(self.disk_cache.folder),
                             **self.cache_record, rows: info}
        return logits

    def _teacher_device(self) -> torch.device:
        return next((p.device for p in self.teacher.parameters()), torch.device("cpu"))

    @torch.no_grad()
    def _all_logits(self, x: Tensor, chunk: int = CHUNK) -> Tensor:
        device = self._teacher_device()
        return torch.cat([self.teacher(part.to(device)) for part in x.split(chunk)])

    @torch.no_grad()
    def teacher_logits(self, x: Tensor, index: Tensor | None, cache: Tensor | None) -> Tensor:
        if cache is not None and index is not None:
            return cache[index.to(cache.device)]
        return self.teacher(x)

    def student_and_teacher(self, batch: Batch, out: Outputs) -> tuple[Tensor, Tensor]:
        """Student and teacher logits on the inputs chosen by ``inputs``.

        The engine has run the teacher once for every method (``out``); a method called on
        its own (tests, custom loops) runs the teacher itself.
        """
        part = ROWS[self.inputs]
        if self.inputs != "source" and (batch.x_target is None or out.target_logits is None):
            raise ConfigError(f"{self.name}: inputs={self.inputs!r} needs target data (a pair)")
        tap = Tap(TEACHER, "logits")
        if out.has(tap, part):
            student = {"source": out.logits, "target": out.target_logits}.get(part)
            if student is None:
                assert out.target_logits is not None
                student = torch.cat([out.logits, out.target_logits])
            return student, out.get(tap, part)
        source = (out.logits, batch.x, batch.index, self.cached_logits)
        if self.inputs == "source":
            return source[0], self.teacher_logits(*source[1:])
        target = (out.target_logits, batch.x_target, batch.target_index, self.cached_target_logits)
        if self.inputs == "target":
            return target[0], self.teacher_logits(*target[1:])
        return (
            torch.cat([source[0], target[0]]),
            torch.cat([self.teacher_logits(*source[1:]), self.teacher_logits(*target[1:])]),
        )
