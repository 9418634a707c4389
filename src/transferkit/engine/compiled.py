"""``compile``: the training step through ``torch.compile``, or eager with one line saying why.

What is compiled is the objective's forward: every network, every method and every loss of
the step, one graph per phase (AOTAutograd compiles its backward with it). The optimizer
stays eager; on CUDA it is the fused kernel. ``compile="graphs"`` adds CUDA graphs
(``mode="reduce-overhead"``): the whole step is replayed as one launch, which pays when small
models leave the GPU waiting for Python. Shapes are static (every batch has the same size)
and the training progress enters as a 0-d tensor, so one graph serves the whole run.

Anything that cannot be compiled falls back to eager rather than stopping the run: a failed
compilation is redone eagerly and, once the eager step succeeded, prints ``compile:
compilation failed (<reason>); the step runs eagerly`` (an error the eager step repeats is the
step's own, and is raised as itself); graph breaks (parts dynamo leaves to Python) are
counted and named once. The run records what it used in ``summary.json`` (``compile``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferkit.engine.progress import note

COMPILE_CHOICES = ("off", "on", "graphs")
# inductor generates C++ (CPU) or Triton (CUDA) kernels; tests swap in "aot_eager", which
# traces the same graphs without building them (or a backend function that fails).
BACKEND: str | Callable[..., Any] = "inductor"


def _counter(group: str) -> dict[str, int]:
    from torch._dynamo.utils import counters

    return dict(counters[group])


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """The error's type and first line; for a wrapped backend failure, the backend's own."""
    inner = getattr(exc, "inner_exception", None)
    if isinstance(inner, BaseException):
        return f"{type(exc).__name__}: " + _one_line(inner, limit)[: limit - 30]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}"[:limit]


@dataclass
class Snapshot:
    cpu_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    buffers: dict[str, torch.Tensor]

    @torch.no_grad()
    def restore(self, module: nn.Module) -> None:
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        for name, buffer in module.named_buffers():
            if name in self.buffers and self.buffers[name].shape == buffer.shape:
                buffer.copy_(self.buffers[name])


@dataclass
class CompiledStep:
    """The step function in use (``call``) and what the run records about it."""

    requested: str
    eager: nn.Module
    show: bool = True
    used: str = "eager"
    reason: str = ""
    graph_breaks: dict[str, int] = field(default_factory=dict)
    graphs: int = 0
    call: Callable[..., Any] | None = None
    _proven: set[str | None] = field(default_factory=set)  # phases that ran compiled
    _breaks_before: dict[str, int] = field(default_factory=dict)
    _graphs_before: int = 0
    _reported: bool = False
    _pending: bool = False  # a fallback not yet announced

    @classmethod
    def build(cls, requested: str, step: nn.Module, device: torch.device,
              show: bool = True, phases: int = 1, processes: int = 1) -> CompiledStep:
        """``step`` (the objective, or its DDP wrapper) compiled as ``requested`` allows.

        CUDA graphs replay into one memory pool, so a graph's outputs are overwritten by the
        next replay; with one phase per step the values methods keep for their metrics are
        the last replay's, still intact when read. Multi-phase steps (``mcd``, ``adda``) and
        several processes compile without CUDA graphs.
        """
        self = cls(requested, step, show)
        self.call = step
        if requested == "off":
            self.reason = "compile=off"
            return self
        mode = None
        if requested == "graphs":
            if device.type != "cuda" or BACKEND != "inductor":
                self.reason = f"CUDA graphs need a CUDA device (this run is on {device.type}); "
            elif phases > 1:
                self.reason = f"CUDA graphs need a one-phase step (this one has {phases}); "
            elif processes > 1:
                self.reason = "CUDA graphs are not used with several processes; "
            else:
                mode = "reduce-overhead"
        # Dynamo keys its cache on Objective.forward's code, shared by every run in the
        # process, and guards on the modules' structure, not their identity: a graph traced
        # for an earlier run (whose hooks fill that run's tap recorders) could serve this one.
        torch._dynamo.reset()
        try:
            compiled = torch.compile(step, backend=BACKEND, mode=mode, dynamic=False)
        except Exception as exc:  # no compiler for this platform or Python
            self.reason += f"torch.compile is unavailable: {_one_line(exc)}; eager"
            note(f"compile: {self.reason}", show)
            return self
        self.call = compiled
        backend = BACKEND if isinstance(BACKEND, str) else getattr(BACKEND, "__name__", "custom")
        self.used = backend + ("+cudagraphs" if mode else "")
        self.reason += f"compiled with {self.used}"
        if mode is None and requested == "graphs":
            note(f"compile: {self.reason}", show)
        return self

    @property
    def active(self) -> bool:
        return self.used != "eager"

    def begin_step(self) -> None:
        """Tell CUDA graph trees a new step starts: the last step's outputs may be reused."""
        if self.used.endswith("+cudagraphs"):
            torch.compiler.cudagraph_mark_step_begin()

    def snapshot(self, phase: str | None) -> Snapshot | None:
        """Before a phase's first compiled call: the RNG states and the buffers (batch-norm
        statistics, memory banks), which the parts that did run before a failure advanced."""
        if phase in self._proven:
            return None
        if not self._proven:  # this run's first compiled call (a failed one ends compiling)
            self._breaks_before = _counter("graph_break")
            self._graphs_before = _counter("stats").get("unique_graphs", 0)
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        buffers = {name: b.detach().clone() for name, b in self.eager.named_buffers()}
        return Snapshot(torch.get_rng_state(), cuda, buffers)

    def ran(self, phase: str | None) -> None:
        self._proven.add(phase)

    def fall_back(self, exc: BaseException, snapshot: Snapshot | None = None) -> None:
        """Switch to the eager step for the rest of the run, and say so in one line; with a
        ``snapshot``, the eager redo starts from the state the failed call started from.

        Any error counts, the toolkit's own included: a check that passes eagerly may fail on
        the traced values; a real error of the step recurs in the eager redo and stops there.
        The line is printed by ``fell_back`` once the eager redo succeeded, so a genuine error
        is not preceded by a misleading "compilation failed".
        """
        if snapshot is not None:
            snapshot.restore(self.eager)
        self.reason = f"compilation failed ({_one_line(exc)}); the step runs eagerly"
        self.used = "eager"
        self.call = self.eager
        self._pending = True

    def fell_back(self) -> None:
        """The eager redo after ``fall_back`` succeeded: say once why the run is eager."""
        if self._pending:
            self._pending = False
            note(f"compile: {self.reason}", self.show)

    def after_step(self) -> None:
        """Count graph breaks and graphs; name the breaks once, after the first step."""
        if not self.active:
            return
        now = _counter("graph_break")
        self.graph_breaks = {reason: count - self._breaks_before.get(reason, 0)
                             for reason, count in now.items()
                             if count > self._breaks_before.get(reason, 0)}
        # graphs compiled in this process since the run's first compiled call
        self.graphs = max(0, _counter("stats").get("unique_graphs", 0) - self._graphs_before)
        if self.graph_breaks and not self._reported:
            first = next(iter(self.graph_breaks)).splitlines()[0][:160]
            note(f"compile: {sum(self.graph_breaks.values())} graph break(s); those parts run "
                 f"eagerly (first: {first})", self.show)
        self._reported = True

    def record(self) -> dict[str, Any]:
        return {"requested": self.requested, "used": self.used, "reason": self.reason,
                "graphs": self.graphs, "graph_breaks": sum(self.graph_breaks.values()),
                "graph_break_reasons": sorted({reason.splitlines()[0][:160]
                                               for reason in self.graph_breaks})[:5]}


def fused_optimizer_ok(device: torch.device) -> bool:
    """Fused SGD / Adam kernels exist for CUDA parameters."""
    return device.type == "cuda"
