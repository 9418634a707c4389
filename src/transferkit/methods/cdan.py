"""CDAN (Long et al., NeurIPS 2018): domain adversarial training conditioned on predictions.

The discriminator sees the multilinear map ``f ⊗ g`` of the feature vector ``f`` and the
(detached) softmax prediction ``g``, through the gradient reversal layer of :mod:`dann` with
its warm-up; ``randomized`` replaces ``f ⊗ g`` by ``(f R_f) ⊙ (g R_g) / sqrt(random_dim)``
with fixed Gaussian ``R`` (by default when ``d * K > 4096``, as in the paper). ``cdan+e``
(``entropy=true``) weights each row's domain loss by ``1 + exp(-H(g))``, normalised to mean 1
per domain, so confident predictions count more.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import (
    RandomizedMultilinear,
    entropy_weights,
    multilinear_map,
    weighted_domain_loss,
)
from transferkit.methods.base import (
    Batch,
    Outputs,
    Progress,
    TrainInfo,
    check_count_at_most,
    check_flag,
)
from transferkit.methods.dann import DANN, MAX_WIDTH, WIDTH_WHY, build_discriminator
from transferkit.methods.registry import METHODS

RANDOMIZE_ABOVE = 4096  # d * K above which the paper switches to the randomized map


@METHODS.register("cdan", "adversarial alignment conditioned on predictions, multilinear map; "
                  "entropy=true or cdan+e for entropy weighting (Long et al., NeurIPS 2018)")
class CDAN(DANN):
    name = "cdan"

    def __init__(
        self,
        trade_off: float = 1.0,
        hidden: int | list[int] = 1024,
        gamma: float = 10.0,
        warmup: bool = True,
        warmup_steps: int | None = None,
        entropy: bool = False,
        randomized: bool | None = None,
        random_dim: int = 1024,
        discriminator: nn.Module | str | None = None,
    ) -> None:
        super().__init__(trade_off, hidden, gamma, warmup, warmup_steps, discriminator)
        entropy = check_flag(self.name, "entropy", entropy)
        if randomized is not None:
            randomized = check_flag(self.name, "randomized", randomized,
                                    "true, false or left unset")
        # R_f is feature_dim x random_dim and the discriminator's first layer random_dim wide:
        # capped as the hidden widths are (the paper's random_dim is 1024).
        self.random_dim = check_count_at_most(self.name, "random_dim", random_dim, MAX_WIDTH,
                                              WIDTH_WHY)
        self.entropy = entropy
        self.randomized = randomized
        if randomized is False and random_dim != 1024:
            raise ConfigError(f"{self.name}: random_dim sizes the randomized map, which "
                              "randomized=false turns off; drop random_dim or randomized=false")
        self.random_map: RandomizedMultilinear | None = None

    def setup(self, info: TrainInfo) -> None:
        self.total_steps = info.total_steps
        if info.feature_dim is None:
            raise ConfigError(f"{self.name} needs the model's feature size; the model has no "
                              "feature layer")
        joint = info.feature_dim * info.num_classes
        randomized = joint > RANDOMIZE_ABOVE if self.randomized is None else self.randomized
        if randomized and self.random_map is None:
            self.random_map = RandomizedMultilinear(
                info.feature_dim, info.num_classes, self.random_dim, seed=0)
        if self.discriminator is None:
            width = self.random_dim if randomized else joint
            self.discriminator = build_discriminator(self.discriminator_spec, self.hidden,
                                                     width, self.name)

    def losses(self, batch: Batch, out: Outputs, progress: Progress) -> dict[str, Tensor]:
        assert self.discriminator is not None, "call setup() first"
        assert out.features is not None and out.target_features is not None
        assert out.target_logits is not None
        self.grl.coeff = self.coefficient(progress)
        n = out.features.shape[0]
        joint = out.joint_features
        if joint is None:
            joint = torch.cat([out.features, out.target_features])
        g = torch.cat([out.logits, out.target_logits]).softmax(1).detach()
        h = multilinear_map(joint, g) if self.random_map is None else self.random_map(joint, g)
        domain_logits = self.discriminator(self.grl(h)).reshape(len(h))
        source_d, target_d = domain_logits[:n], domain_logits[n:]
        self._last_domain_logits = (source_d.detach(), target_d.detach())
        weights = (entropy_weights(g[:n]), entropy_weights(g[n:])) if self.entropy else (None,
                                                                                        None)
        return {"domain": weighted_domain_loss(source_d, target_d, *weights)}


@METHODS.register("cdan+e", "CDAN with entropy conditioning, cdan with entropy=true "
                  "(Long et al., NeurIPS 2018)")
class CDANE(CDAN):
    name = "cdan+e"

    def __init__(
        self,
        trade_off: float = 1.0,
        hidden: int | list[int] = 1024,
        gamma: float = 10.0,
        warmup: bool = True,
        warmup_steps: int | None = None,
        randomized: bool | None = None,
        random_dim: int = 1024,
        discriminator: nn.Module | str | None = None,
    ) -> None:
        super().__init__(trade_off, hidden, gamma, warmup, warmup_steps, True, randomized,
                         random_dim, discriminator)
