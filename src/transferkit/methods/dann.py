"""DANN (Ganin & Lempitsky 2015): domain-adversarial training with gradient reversal.

A discriminator D learns to tell source features from target features,
``L_d = BCE(D(GRL(f(x_s))), 1) + BCE(D(GRL(f(x_t))), 0)`` (averaged); the gradient reversal
layer multiplies the gradient reaching the feature extractor by ``-lambda(p)``, with the
usual warm-up ``lambda(p) = trade_off * (2 / (1 + exp(-gamma p)) - 1)`` over progress p.
The class loss on labelled source data is a separate method: ``adapt`` composes
``[supervised, dann]``, so DANN with distillation is ``[kd, dann]``.

The discriminator is ``hidden`` Linear-BN-ReLU layers then one logit: ``hidden=1024`` (the
default) means ``[1024, 1024]``, TLlib's; ``hidden=[100]`` is the published digits recipe
(Ganin & Lempitsky 2015, MNIST->MNIST-M: one layer of 100 units). ``discriminator`` replaces
it with the user's own module (Python) or a ``package.module:factory`` called with the feature
size (CLI); either must map ``N x d`` features to ``N x 1`` (or ``N``) domain logits, checked
at setup on two zero rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError, TransferkitError
from transferkit.losses import (
    DomainDiscriminator,
    GradientReversal,
    dann_warmup,
    domain_accuracy,
    domain_adversarial_loss,
)
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    Progress,
    TrainInfo,
    capped,
    check_count,
    check_count_at_most,
    check_flag,
    check_positive,
)
from transferkit.models.base import eval_mode
from transferkit.models.external import _import_attribute

Discriminator = nn.Module | str | None

# The widest hidden layer (and CDAN's random_dim) taken: 16x the defaults (1024, as TLlib and
# the CDAN paper use; the published digits recipe has 100). Two layers of 16384 are already
# 268M weights; hidden=10**9 would try to allocate terabytes instead of training.
MAX_WIDTH = 16384
WIDTH_WHY = "16x the usual 1024; wider only allocates absurd memory"


def check_hidden(value: object, who: str = "dann") -> tuple[int, ...]:
    """``hidden``: the discriminator's hidden widths; an int ``h`` is ``(h, h)``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (check_count_at_most(who, "hidden", value, MAX_WIDTH, WIDTH_WHY),) * 2
    ok = isinstance(value, list | tuple) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise ConfigError(f"hidden must be an integer >= 1 or a non-empty list of them such as "
                          f"[100] or [256, 256], got {value!r}")
    for width in value:  # type: ignore[union-attr]
        check_count_at_most(who, "hidden", width, MAX_WIDTH, WIDTH_WHY)
    return tuple(value)  # type: ignore[arg-type]


def check_discriminator_spec(value: object) -> Discriminator:
    """``discriminator``: None, an ``nn.Module``, or ``'package.module:factory'``."""
    if value is None or isinstance(value, nn.Module):
        return value
    if isinstance(value, str) and value.count(":") == 1 and all(value.split(":")):
        return value
    raise ConfigError(f"discriminator must be a torch.nn.Module or 'package.module:factory' "
                      f"(called with the feature size), got {value!r}")


def build_discriminator(spec: Discriminator, hidden: Sequence[int], in_features: int,
                        who: str) -> nn.Module:
    """The default :class:`DomainDiscriminator`, or the user's module checked to map
    ``N x in_features`` to ``N x 1`` logits (refused in one line with the shapes)."""
    if spec is None:
        return DomainDiscriminator(in_features, hidden=hidden)
    module = spec
    if isinstance(spec, str):
        factory = _import_attribute(spec, "discriminator")
        if isinstance(factory, nn.Module):
            module = factory
        elif not callable(factory):
            raise ConfigError(f"{who}: discriminator {spec!r} is a {type(factory).__name__}, "
                              "not a factory")
        else:
            try:
                module = factory(in_features)
            except TransferkitError:
                raise
            except Exception as exc:
                raise ConfigError(f"{who}: discriminator factory {spec!r} raised "
                                  f"{type(exc).__name__}: {exc} (it is called with the feature "
                                  f"size, {in_features})") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{who}: discriminator {spec!r} gave a {type(module).__name__}, not a "
                          "torch.nn.Module")
    check_discriminator(module, in_features, who)
    return module


def check_discriminator(module: nn.Module, in_features: int, who: str) -> None:
    """Two zero rows through ``module`` (eval mode, no grad): N x 1 or N logits, else refused."""
    param = next(module.parameters(), None)
    probe = torch.zeros(2, in_features, dtype=param.dtype if param is not None else None,
                        device=param.device if param is not None else None)
    try:
        with eval_mode(module), torch.no_grad():
            out = module(probe)
    except Exception as exc:  # the user's module: any error, said in one line
        reason = (str(exc).splitlines() or [""])[0][:200] or type(exc).__name__
        raise ConfigError(f"{who}: the discriminator cannot take features of shape "
                          f"{tuple(probe.shape)}: {reason}") from None
    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    if shape not in ((2, 1), (2,)):
        raise ConfigError(f"{who}: the discriminator must map N x {in_features} features to "
                          f"N x 1 domain logits; it gives {shape} for {tuple(probe.shape)}")


class DANN(Method):
    name = "dann"
    needs_features = True
    needs_target = True

    def __init__(
        self,
        trade_off: float = 1.0,
        hidden: int | list[int] = 1024,
        gamma: float = 10.0,
        warmup: bool = True,
        warmup_steps: int | None = None,
        discriminator: nn.Module | str | None = None,
    ) -> None:
        super().__init__()
        self.trade_off = check_positive("trade_off", trade_off)
        self.gamma = check_positive("gamma", gamma)
        self.hidden = check_hidden(hidden, self.name)
        # Not a registered submodule: a module given here is registered once, at setup,
        # as ``discriminator`` (no duplicate in the state_dict).
        object.__setattr__(self, "discriminator_spec", check_discriminator_spec(discriminator))
        self.warmup = check_flag(self.name, "warmup", warmup)
        self.warmup_steps = None if warmup_steps is None else check_count("warmup_steps",
                                                                          warmup_steps)
        if not self.warmup and (warmup_steps is not None or gamma != 10.0):
            given = "warmup_steps" if warmup_steps is not None else "gamma"
            raise ConfigError(f"{self.name}: {given} shapes the warm-up, which warmup=false "
                              f"turns off; drop {given} or warmup=false")
        self.total_steps = 1
        self.grl = GradientReversal()
        self.discriminator: nn.Module | None = None
        self._last_domain_logits: tuple[Tensor, Tensor] | None = None

    def setup(self, info: TrainInfo) -> None:
        self.total_steps = info.total_steps
        if info.feature_dim is None:
            raise ConfigError("dann needs the model's feature size; the model has no feature layer")
        if self.discriminator is None:
            self.discriminator = build_discriminator(self.discriminator_spec, self.hidden,
                                                     info.feature_dim, self.name)

    def coefficient(self, progress: Progress) -> Progress:
        """``trade_off * lambda(p)``; p runs over ``warmup_steps`` if given, else the run."""
        if not self.warmup:
            return self.trade_off
        if self.warmup_steps is not None:
            progress = capped(progress * self.total_steps / self.warmup_steps)
        return self.trade_off * dann_warmup(progress, self.gamma)

    def losses(self, batch: Batch, out: Outputs, progress: Progress) -> dict[str, Tensor]:
        assert self.discriminator is not None, "call setup() first"
        assert out.features is not None and out.target_features is not None
        self.grl.coeff = self.coefficient(progress)
        n = out.features.shape[0]
        joint = out.joint_features  # avoids re-concatenating the two halves (and its backward)
        if joint is None:
            joint = torch.cat([out.features, out.target_features])
        domain_logits = self.discriminator(self.grl(joint)).reshape(len(joint))
        source_d, target_d = domain_logits[:n], domain_logits[n:]
        self._last_domain_logits = (source_d.detach(), target_d.detach())
        return {"domain": domain_adversarial_loss(source_d, target_d)}

    def metrics(self) -> dict[str, float]:
        """GRL coefficient and discriminator accuracy of the last step (0.5 = features aligned)."""
        if self._last_domain_logits is None:
            return {}
        return {
            "grl_coeff": float(self.grl.coeff),
            "domain_acc": float(domain_accuracy(*self._last_domain_logits)),
        }

