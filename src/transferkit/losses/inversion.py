"""Yin et al., CVPR 2020, "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion".

DeepInversion synthesises inputs from a trained teacher alone: starting from noise, a batch
``x`` is optimised so that the teacher classifies it as chosen labels while the statistics of
every BatchNorm layer's input match the running statistics stored in that layer, with image
priors (total variation, an L2 penalty) keeping ``x`` smooth and bounded:

    L(x) = CE(teacher(x), y) + bn_weight * sum_l (||mu_l(x) - mu_l||_2 + ||s2_l(x) - s2_l||_2)
           + tv_weight * TV(x) + l2_weight * mean(x^2).

The pieces: :class:`BNStatisticsHook` / :func:`attach_bn_hooks` (the BN term),
:func:`total_variation` (the smoothness prior) and :func:`synthesize` (the optimisation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.errors import ConfigError
from transferkit.models.base import eval_mode

NO_BN_WARNING = (
    "the teacher has no BatchNorm layer with running statistics, so DeepInversion's BN term is "
    "0; only the class, TV and L2 terms shape the synthesised inputs"
)


class BNStatisticsHook:
    """A forward hook on one BatchNorm layer: ``||mean(x) - running_mean||_2 +
    ||var(x) - running_var||_2`` of the layer's input ``x`` (Yin et al. 2020).

    ``mean`` and the biased ``var`` are per channel over every dimension but the channel one
    (N, H, W for ``BatchNorm2d``). After each forward of the model the value is in
    :attr:`loss` (with its graph); ``remove()`` detaches the hook.
    """

    def __init__(self, module: _BatchNorm) -> None:
        if not isinstance(module, _BatchNorm) or module.running_mean is None or (
            module.running_var is None
        ):
            raise ConfigError(
                f"BNStatisticsHook needs a BatchNorm layer with running statistics, got "
                f"{type(module).__name__}; build it with track_running_stats=True"
            )
        self.module = module
        self.loss: Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        running_mean, running_var = self.module.running_mean, self.module.running_var
        if running_mean is None or running_var is None:  # removed after the hook was attached
            self.loss = None
            return
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, correction=0)
        self.loss = torch.linalg.vector_norm(mean - running_mean.to(mean)) + (
            torch.linalg.vector_norm(var - running_var.to(var))
        )

    def remove(self) -> None:
        self._handle.remove()


class BNHooks:
    """The hooks of :func:`attach_bn_hooks`, in module order, with ``loss()`` and ``remove()``."""

    def __init__(self, hooks: list[BNStatisticsHook]) -> None:
        self._hooks = hooks

    def __getitem__(self, i: int) -> BNStatisticsHook:
        return self._hooks[i]

    def __len__(self) -> int:
        return len(self._hooks)

    def __iter__(self) -> Iterator[BNStatisticsHook]:
        return iter(self._hooks)

    def clear(self) -> None:
        """Forget the values of the last forward (call before a forward that may skip layers)."""
        for hook in self._hooks:
            hook.loss = None

    def loss(self, first_multiplier: float = 1.0) -> Tensor:
        """``sum_l r_l * loss_l`` over the layers that ran, ``r`` = ``first_multiplier`` for the
        first BN layer and 1 for the rest (the reference's ``first_bn_multiplier``; the paper's
        formula is 1); a zero tensor when no hooked layer ran."""
        terms = [
            hook.loss * (first_multiplier if i == 0 else 1.0)
            for i, hook in enumerate(self._hooks)
            if hook.loss is not None
        ]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def __enter__(self) -> BNHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach_bn_hooks(model: nn.Module) -> BNHooks:
    """A :class:`BNStatisticsHook` on every BatchNorm layer (1d/2d/3d, SyncBatchNorm) of
    ``model`` that tracks running statistics; layers without them are skipped. An empty
    result means the BN term is 0. Use as a context manager or call ``.remove()``."""
    return BNHooks(
        [
            BNStatisticsHook(m)
            for m in model.modules()
            if isinstance(m, _BatchNorm) and m.running_mean is not None
            and m.running_var is not None
        ]
    )


def total_variation(x: Tensor, p: int = 2, diagonals: bool = True) -> Tensor:
    """``sum_d mean(|x shifted by d - x|^p)`` over the last two (spatial) dimensions.

    The directions ``d`` are right and down and, with ``diagonals`` (as in the DeepInversion
    reference), the two diagonals. ``p=1`` is the reference's L1 prior exactly; ``p=2`` (the
    default) is a mean of squares, where the reference's L2 prior sums the Frobenius norms of
    the four difference tensors (not squared, not averaged), so its weight does not carry
    over. Directions with no neighbouring pairs (a size-1 dimension) are skipped.
    """
    if p not in (1, 2):
        raise ConfigError(f"total_variation p must be 1 or 2, got {p!r}")
    if x.dim() < 3:
        raise ConfigError(
            f"total_variation needs N x ... x H x W inputs (>= 3 dims), got {tuple(x.shape)}"
        )
    diffs = [x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]]
    if diagonals:
        diffs += [x[..., 1:, :-1] - x[..., :-1, 1:], x[..., 1:, 1:] - x[..., :-1, :-1]]
    terms = [(d.abs() if p == 1 else d.square()).mean() for d in diffs if d.numel()]
    return torch.stack(terms).sum() if terms else x.new_zeros(())


def _check_weight(name: str, value: float) -> None:
    if isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"synthesize {name} must be a finite number >= 0, got {value!r}")


def synthesize(
    teacher: nn.Module,
    n: int,
    input_shape: Sequence[int],
    num_classes: int,
    steps: int = 2000,
    lr: float = 0.1,
    bn_weight: float = 10.0,
    tv_weight: float = 1e-4,
    l2_weight: float = 0.0,
    labels: Tensor | None = None,
    *,
    tv_p: int = 2,
    first_bn_multiplier: float = 1.0,
    jitter: int = 0,
    flip: bool = False,
    input_range: tuple[float, float] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """DeepInversion: ``n`` inputs of shape ``input_shape`` that ``teacher`` maps to ``labels``.

    ``x`` starts as standard normal noise and takes ``steps`` Adam steps (``lr``, betas
    (0.5, 0.9) as in the reference, no schedule) on
    ``CE(teacher(x'), y) + bn_weight * BN + tv_weight * TV(x', tv_p) + l2_weight * mean(x'^2)``
    where ``x'`` is ``x`` rolled by a random offset in ``[-jitter, jitter]`` along each spatial
    dimension and, with ``flip``, mirrored along the last dimension with probability 1/2 (one
    draw per step for the whole batch, as in the paper). ``BN`` is :meth:`BNHooks.loss` over the
    teacher's BatchNorm layers; with none, it is 0 and a ``UserWarning`` says so. After each step
    ``x`` is clamped to ``input_range`` if given (the valid range of the teacher's inputs).

    ``labels`` defaults to a balanced set (``i mod num_classes``, shuffled). Noise, labels,
    jitter and flips come from ``generator``, else a generator seeded with ``seed``, else the
    global torch RNG. The teacher runs in eval mode with ``requires_grad`` off; its modes and
    flags are restored afterwards and its weights and running statistics are not changed.
    ``device`` defaults to the teacher's. Returns the last iterate ``x`` (detached) and ``y``.
    Defaults are starting points near the reference CIFAR-10 script (2000 steps, lr 0.1), not
    tuned values; the TV weight does not carry over (see :func:`total_variation`).
    """
    for name, value in (("n", n), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"synthesize {name} must be an int >= 1, got {value!r}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ConfigError(
            f"synthesize input_shape is one sample's shape without the batch, e.g. (3, 32, 32), "
            f"got {tuple(input_shape)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"synthesize steps must be an int >= 0, got {steps!r}")
    if isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"synthesize lr must be a finite number > 0, got {lr!r}")
    for name, value in (("bn_weight", bn_weight), ("tv_weight", tv_weight),
                        ("l2_weight", l2_weight), ("first_bn_multiplier", first_bn_multiplier)):
        _check_weight(name, value)
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise ConfigError(f"synthesize jitter must be an int >= 0 (pixels), got {jitter!r}")
    if len(shape) < 2 and (jitter or flip or tv_weight > 0):
        raise ConfigError(
            f"synthesize jitter, flip and tv_weight need spatial inputs (C x H x W), got "
            f"input_shape {shape}; set jitter=0, flip=False, tv_weight=0 for flat inputs"
        )
    if input_range is not None and not (
        len(input_range) == 2 and float(input_range[0]) < float(input_range[1])
    ):
        raise ConfigError(f"synthesize input_range must be (low, high) with low < high, got "
                          f"{input_range!r}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    draw_on = generator.device if generator is not None else torch.device("cpu")

    params = list(teacher.parameters())
    tensors = params + list(teacher.buffers())
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = floats[0] if floats else torch.get_default_dtype()

    if labels is None:
        order = torch.randperm(n, generator=generator, device=draw_on)
        labels = (order % num_classes).to(device)
    else:
        if labels.shape != (n,) or labels.is_floating_point() or labels.is_complex():
            raise ConfigError(
                f"synthesize labels must be {n} integer class ids (shape ({n},)), got "
                f"{labels.dtype} {tuple(labels.shape)}"
            )
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ConfigError(f"synthesize labels must be in [0, {num_classes})")
        labels = labels.to(device=device, dtype=torch.long)

    x = torch.randn((n, *shape), generator=generator, device=draw_on, dtype=dtype).to(device)
    if input_range is not None:
        x.clamp_(float(input_range[0]), float(input_range[1]))
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9), eps=1e-8)
    spatial = (-2, -1) if len(shape) >= 2 else ()
    flags = [p.requires_grad for p in params]
    hooks = attach_bn_hooks(teacher) if bn_weight > 0 else BNHooks([])
    if bn_weight > 0 and not len(hooks):
        warnings.warn(NO_BN_WARNING, UserWarning, stacklevel=2)
    try:
        for p in params:
            p.requires_grad_(False)
        with eval_mode(teacher):
            for _ in range(steps):
                x_in = x
                if jitter and spatial:
                    offsets = torch.randint(-jitter, jitter + 1, (2,), generator=generator,
                                            device=draw_on).tolist()
                    x_in = torch.roll(x_in, shifts=offsets, dims=spatial)
                if flip and float(torch.rand((), generator=generator, device=draw_on)) < 0.5:
                    x_in = torch.flip(x_in, dims=(-1,))
                hooks.clear()
                logits = teacher(x_in)
                if logits.dim() != 2 or logits.shape != (n, num_classes):
                    raise ConfigError(
                        f"synthesize: the teacher returned {tuple(logits.shape)} for {n} "
                        f"inputs, expected N x num_classes = ({n}, {num_classes}); pass the "
                        "teacher's class count and a model that returns logits"
                    )
                loss = F.cross_entropy(logits, labels)
                if bn_weight > 0 and len(hooks):
                    loss = loss + bn_weight * hooks.loss(first_bn_multiplier).to(loss)
                if tv_weight > 0:
                    loss = loss + tv_weight * total_variation(x_in, tv_p)
                if l2_weight > 0:
                    loss = loss + l2_weight * x_in.square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if input_range is not None:
                    with torch.no_grad():
                        x.clamp_(float(input_range[0]), float(input_range[1]))
    finally:
        hooks.remove()
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    return x.detach(), labels
