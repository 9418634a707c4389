"""The model plus its methods as one module whose forward returns the named losses.

Wrapping both in one module lets DistributedDataParallel synchronise the gradients of the
model, of the methods' own modules (a domain discriminator, a regressor) and of extra trained
networks (DML's peers) in a single pass. Per step (per phase) the student and each peer run
once on source and target inputs together, each frozen teacher runs once (eval mode, no
grad) on the rows its methods ask for, the layers the methods declared are captured by
hooks, and every method reads the same :class:`Outputs`. Loss keys are prefixed by the
method's name (``kd``, ``kd.ce``, ``dann.domain``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from transferkit.engine.taps import LOGITS, TapRecorder
from transferkit.errors import ConfigError
from transferkit.methods.base import DEFAULT_PHASE, Batch, Method, Outputs, Phase, Tap
from transferkit.models.base import eval_mode
from transferkit.models.features import default_layer
from transferkit.models.layers import resolve_layer

STUDENT = "student"


def loss_key(method: str, key: str) -> str:
    """``kd`` for a term named after its method, else ``method.key``."""
    return method if key == method else f"{method}.{key}"


class Objective(nn.Module):
    def __init__(self, model: nn.Module, methods: list[Method], feature_layer: str | None = None,
                 example: Tensor | None = None):
        """``example``: training rows that find the default feature layer by running the
        model (see :func:`default_layer`)."""
        super().__init__()
        names = [m.name for m in methods]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ConfigError(f"method {dupes[0]!r} is listed twice; give each method once")
        self.model = model
        self.methods = nn.ModuleDict({m.name: m for m in methods})
        self.needs_target = any(m.needs_target for m in methods)
        self.needs_features = any(m.needs_features for m in methods)
        # Frozen and extra trained networks: plain dicts, so they are not registered twice
        # (teachers stay out of the optimizer and checkpoints; peers belong to their method).
        self.teachers: dict[str, nn.Module] = {}
        self.teacher_rows: dict[str, set[str]] = {}
        self.peers: dict[str, nn.Module] = {}
        for method in methods:
            for role, net in method.teachers().items():
                if role in self.teachers and self.teachers[role] is not net:
                    raise ConfigError(
                        f"two different networks are both called {role!r} (methods "
                        f"{', '.join(names)}); give every method the same teacher"
                    )
                self.teachers[role] = net
                self.teacher_rows.setdefault(role, set()).add(method.teacher_rows())
            for peer, net in method.networks(model).items():
                if peer in self.peers or peer in (STUDENT, *self.teachers):
                    raise ConfigError(f"two networks are called {peer!r}; rename one")
                self.peers[peer] = net
        self.feature_tap: Tap | None = None
        if self.needs_features:
            layer = resolve_layer(model, feature_layer) if feature_layer else default_layer(
                model, example)
            self.feature_tap = Tap(STUDENT, layer, "input", flatten=True)
        wanted = {tap for m in methods for tap in m.taps()}
        if self.feature_tap is not None:
            wanted.add(self.feature_tap)
        networks = self.networks_by_role()
        for tap in wanted:
            if tap.role not in networks:
                raise ConfigError(
                    f"a method reads {tap} but the run has no network {tap.role!r} "
                    f"(it has {', '.join(networks)})"
                )
        self.taps_wanted = wanted
        self.recorders = {
            role: TapRecorder(net, [t for t in wanted if t.role == role], f"{role} network")
            for role, net in networks.items()
        }

    def networks_by_role(self) -> dict[str, nn.Module]:
        return {STUDENT: self.model, **self.peers, **self.teachers}

    def trained_networks(self) -> dict[str, nn.Module]:
        """The student and the peers: every network that is evaluated and saved."""
        return {STUDENT: self.model, **self.peers}

    # ---- phases ------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        declaring = [m for m in self.methods.values() if m.phases()]
        if len(declaring) > 1:
            raise ConfigError(
                f"methods {', '.join(m.name for m in declaring)} both split the step into "
                "phases; combine at most one of them with others"
            )
        return list(declaring[0].phases()) if declaring else [DEFAULT_PHASE]

    def phase_parameters(self, phase: Phase) -> Iterator[tuple[str, nn.Parameter]]:
        """Trainable parameters of ``phase`` (name, parameter): those under its prefixes."""
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if phase.trains is None or any(
                name == p or name.startswith(p + ".") for p in phase.trains
            ):
                yield name, param

    def _contributes(self, method: Method, phase: str | None, first: str) -> bool:
        if phase is None:
            return True
        own = [p.name for p in method.phases()]
        return phase in own if own else phase == first

    # ---- the step ------------------------------------------------------------------------
    def forward(
        self, batch: Batch, progress: float, phase: str | None = None
    ) -> dict[str, Tensor]:
        out = self.outputs(batch)
        if phase is not None:
            out.phase = phase
        first = self.phases()[0].name if phase is not None else ""
        losses: dict[str, Tensor] = {}
        for name, method in self.methods.items():
            if not self._contributes(method, phase, first):
                continue
            for key, value in method.losses(batch, out, progress).items():
                losses[loss_key(name, key)] = value
        return losses

    def _rows(self, batch: Batch, part: str) -> Tensor:
        if part == "source":
            return batch.x
        if batch.x_target is None:
            raise ConfigError(f"a method needs the teacher on {part} rows: train on a pair")
        return batch.x_target if part == "target" else torch.cat([batch.x, batch.x_target])

    def outputs(self, batch: Batch) -> Outputs:
        """Run every network once and collect logits and the declared taps."""
        n = batch.x.shape[0]
        student_rows = "all" if self.needs_target else "source"
        if self.needs_target and batch.x_target is None:
            raise ConfigError("a method needs target inputs: train on a domain pair")
        inputs = self._rows(batch, student_rows)
        for recorder in self.recorders.values():
            recorder.values, recorder.calls = {}, {}
            recorder.active = True
        try:
            taps: dict[Tap, Tensor] = {}
            rows: dict[str, str] = {}
            for role, net in self.trained_networks().items():
                taps[Tap(role, LOGITS)] = net(inputs)
                rows[role] = student_rows
            ran: dict[tuple[int, str], str] = {}  # (network, rows) -> the role that ran it
            for role, net in self.teachers.items():
                part = self._teacher_part(role, batch)
                rows[role] = part
                first = ran.setdefault((id(net), part), role)
                if first != role:  # one network under two roles (kd+ensemble): run it once
                    taps[Tap(role, LOGITS)] = taps[Tap(first, LOGITS)]
                    continue
                taps[Tap(role, LOGITS)] = self._teacher_forward(role, net, batch, part)
            for recorder in self.recorders.values():
                taps.update(recorder.values)
        finally:
            for recorder in self.recorders.values():
                recorder.active = False
                recorder.values = {}
        logits = taps[Tap(STUDENT, LOGITS)]
        features = None if self.feature_tap is None else taps.get(self.feature_tap)
        split = self.needs_target
        return Outputs(
            logits[:n] if split else logits,
            None if features is None else (features[:n] if split else features),
            logits[n:] if split else None,
            None if features is None or not split else features[n:],
            features if split else None,
            taps=taps,
            rows=rows,
            n_source=n,
        )

    def _teacher_part(self, role: str, batch: Batch) -> str:
        wanted = self.teacher_rows.get(role, {"source"})
        if wanted == {"source"} or batch.x_target is None:
            return "source"
        return "target" if wanted == {"target"} else "all"

    def _teacher_forward(self, role: str, net: nn.Module, batch: Batch, part: str) -> Tensor:
        for method in self.methods.values():  # logits cached at setup, looked up by row
            cached = getattr(method, "cached_teacher_logits", None)
            if cached is not None and role in method.teachers():
                found = cached(batch, part)
                if found is not None and not self.recorders[role].values_wanted():
                    return found
        with torch.no_grad(), eval_mode(net):
            return net(self._rows(batch, part))

    def probe(self, x: Tensor, x_target: Tensor | None) -> dict[Tap, tuple[int, ...]]:
        """Per-sample shapes of every tap, from one forward on two rows in eval mode.

        With gradients on when a method aligns features, for :meth:`_check_features`; eval
        mode, not training mode, so the probe draws no random numbers and moves no BatchNorm
        statistics (whether a trainable parameter feeds the tap does not depend on the mode).
        """
        batch = Batch(x[:2], None, None if x_target is None else x_target[:2])
        aligning = [m.name for m in self.methods.values()
                    if m.needs_features and m.trains_network and not m.source_free]
        with eval_mode(self), torch.set_grad_enabled(bool(aligning)):
            out = self.outputs(batch)
        self._check_taps_ran(out.taps)
        if aligning:
            self._check_features(out.taps, aligning)
        return {tap: tuple(value.shape[1:]) for tap, value in out.taps.items()}

    def _check_taps_ran(self, taps: dict[Tap, Tensor]) -> None:
        """Every layer a method reads ran in the forward, and the feature layer ran once: a
        layer defined but never called has no input to read (an unused projection head), and
        one run twice (shared weights, one ReLU module reused) has two, of which the last
        would be read without a word."""
        which = "the classifier layer, whose input is the feature vector"
        for tap in sorted((t for t in self.taps_wanted - taps.keys() if t.layer != LOGITS),
                          key=str):
            fix = (f"name {which}: feature_layer= (--feature-layer)"
                   if tap == self.feature_tap else "name a layer that forward runs")
            raise ConfigError(f"layer {tap.layer!r} of the {tap.role} network is never run by "
                              f"its forward, so there is nothing to read there; {fix}")
        if self.feature_tap is not None:
            runs = self.recorders[STUDENT].calls.get(self.feature_tap.layer, 1)
            if runs > 1:
                raise ConfigError(
                    f"layer {self.feature_tap.layer!r} runs {runs} times in one forward (a "
                    "module used twice), so its input, the feature vector, is ambiguous; name "
                    f"{which}, one that runs once: feature_layer= (--feature-layer)")

    def _check_features(self, taps: dict[Tap, Tensor], aligning: list[str]) -> None:
        """Refuse features that no trainable parameter feeds (a layer right after the input):
        the methods' losses on them could only train their own modules, never the model, and
        the run would report an adaptation loss while the weights equal source-only ones.
        Source-free SHOT is not asked: it reads the features only to cluster pseudo-labels."""
        assert self.feature_tap is not None
        if taps[self.feature_tap].requires_grad:
            return
        raise ConfigError(
            f"the loss of {', '.join(aligning)} reads the features at the input of layer "
            f"{self.feature_tap.layer!r}, and no trainable parameter feeds them (they are the "
            "raw inputs or come from frozen layers), so it cannot adapt the model; give "
            "feature_layer (--feature-layer) a layer after a trainable one, or a model with a "
            "hidden layer"
        )

    def remove_hooks(self) -> None:
        for recorder in self.recorders.values():
            recorder.remove()

    def method_metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, method in self.methods.items():
            for key, value in method.metrics().items():
                values[loss_key(name, key)] = value
        return values
