"""Discrepancy and regularisation losses for unsupervised domain adaptation.

Statistic matching between the source and the target batch: multi-kernel MMD (DAN), joint MMD
(JAN) and CORAL. Feature regularisers: stepwise adaptive feature norm (SAFN) and batch spectral
penalisation (BSP). Target-prediction regularisers: minimum class confusion (MCC) and batch
nuclear-norm maximisation (BNM). All are pure and differentiable, take ``N x D`` features or
``N x C`` logits and return a scalar to be minimised (plus the :func:`entropy` and
:func:`gaussian_kernels` helpers). fp16 / bf16 inputs are computed in float32, because the
pairwise distances and SVDs lose too much precision in half precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_number
from transferkit.losses.selftraining import entropy

DEFAULT_KERNEL_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


# --------------------------------------------------------------------------- checks


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _check_matrix(x: object, what: str, name: str, *, min_rows: int, kind: str = "N x D") -> None:
    """``x`` must be a 2-D floating-point tensor with at least ``min_rows`` rows and 1 column."""
    if not isinstance(x, Tensor):
        raise ConfigError(f"{what}: {name} must be a torch.Tensor ({kind}), got {type(x).__name__}")
    if x.dim() != 2:
        raise ConfigError(
            f"{what} needs {kind} {name}, got shape {_shape(x)}; flatten the extra dimensions "
            "(features: x.flatten(1)) first"
        )
    if not x.is_floating_point():
        raise ConfigError(f"{what}: {name} must be a floating-point tensor, got {x.dtype}")
    n, d = x.shape
    if n < min_rows:
        raise ConfigError(
            f"{what} needs at least {min_rows} rows in {name}, got shape {_shape(x)}; "
            "use a larger batch "
            "(batch_size / target_batch_size; CLI: --batch-size / --target-batch-size)"
        )
    if d < 1:
        raise ConfigError(f"{what}: {name} has no columns, shape {_shape(x)}")


def _check_pair(
    source: object, target: object, what: str, *, min_rows: int = 2, same_rows: bool = False
) -> None:
    """Both ``N x D`` with the same width D (and the same N when ``same_rows``)."""
    _check_matrix(source, what, "source features", min_rows=min_rows)
    _check_matrix(target, what, "target features", min_rows=min_rows)
    assert isinstance(source, Tensor) and isinstance(target, Tensor)
    shapes = f"source {_shape(source)} and target {_shape(target)}"
    if source.shape[1] != target.shape[1]:
        raise ConfigError(
            f"{what} needs the same feature width in both domains, got {shapes}; take both "
            "from the same layer of the same feature extractor"
        )
    if same_rows and source.shape[0] != target.shape[0]:
        raise ConfigError(f"{what} needs as many source as target rows, got {shapes}")


def _work(x: Tensor) -> Tensor:
    """Half-precision tensors are upcast to float32; others are returned as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _tiny(x: Tensor) -> float:
    return max(1e-12, torch.finfo(x.dtype).tiny)


def _multipliers(value: object, what: str, name: str = "kernel_multipliers"
                 ) -> tuple[float, ...]:
    """A non-empty sequence of finite positive numbers."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(
            f"{what}: {name} must be a non-empty list of positive numbers such as [0.5, 1, 2], "
            f"got {value!r}"
        )
    return tuple(check_number(f"{what}: each of {name}", m, positive=True) for m in value)


# --------------------------------------------------------------------------- kernels


def _sq_distances(x: Tensor, y: Tensor) -> Tensor:
    """``||x_i - y_j||^2`` as an ``len(x) x len(y)`` matrix (via Gram matrices, clamped at 0)."""
    xx = x.pow(2).sum(1, keepdim=True)
    yy = y.pow(2).sum(1, keepdim=True)
    return (xx + yy.T - 2.0 * (x @ y.T)).clamp(min=0.0)


def _bandwidth(z: Tensor) -> Tensor:
    """Mean squared distance over the ``N (N - 1)`` ordered pairs ``i != j`` of rows of ``z``.

    Computed in O(N D) with ``sum_{i,j} ||z_i - z_j||^2 = 2 N sum_i ||z_i - mean(z)||^2``;
    detached, so no gradient flows through the bandwidth.
    """
    z = z.detach()
    n = z.shape[0]
    centred = z - z.mean(0, keepdim=True)
    return 2.0 * centred.pow(2).sum() / (n - 1)


def _kernel_from_distances(sq: Tensor, multipliers: Sequence[float], sigma2: Tensor) -> Tensor:
    """Mean over ``m`` of ``exp(-sq / (m sigma2))``; a zero bandwidth is floored to ``tiny``."""
    sigma2 = sigma2.clamp(min=_tiny(sq))
    return torch.stack([torch.exp(-sq / (m * sigma2)) for m in multipliers]).mean(0)


def gaussian_kernels(
    x: Tensor,
    y: Tensor,
    kernel_multipliers: Sequence[float] = DEFAULT_KERNEL_MULTIPLIERS,
    sigma2: Tensor | float | None = None,
) -> Tensor:
    """Multi-kernel Gaussian matrix ``K_ij = mean_m exp(-||x_i - y_j||^2 / (m sigma^2))``.

    Returns a ``len(x) x len(y)`` matrix. The kernels are *averaged* over the multipliers ``m``
    (equal weights ``beta_m = 1 / M`` that sum to one, as in DAN), so every entry lies in
    ``(0, 1]``. ``sigma2=None`` takes ``sigma^2`` as the mean squared distance over distinct
    pairs of rows of the joint batch ``cat(x, y)``, detached. When ``x`` and ``y`` are the same
    set, pass ``sigma2`` explicitly (the joint batch would count every row twice).
    """
    what = "gaussian_kernels"
    _check_matrix(x, what, "x", min_rows=1)
    _check_matrix(y, what, "y", min_rows=1)
    if x.shape[1] != y.shape[1]:
        raise ConfigError(
            f"{what} needs x and y of the same width, got x {_shape(x)} and y {_shape(y)}"
        )
    multipliers = _multipliers(kernel_multipliers, what)
    x, y = _work(x), _work(y)
    if sigma2 is None:
        if x.shape[0] + y.shape[0] < 2:
            raise ConfigError(
                f"{what} estimates the bandwidth from at least 2 rows, got x {_shape(x)} and "
                f"y {_shape(y)}; pass sigma2"
            )
        sig = _bandwidth(torch.cat([x, y]))
    elif isinstance(sigma2, Tensor):
        sig = sigma2.detach().to(device=x.device, dtype=x.dtype)
    else:
        sig = torch.tensor(check_number(f"{what}: sigma2", sigma2, positive=True), dtype=x.dtype,
                           device=x.device)
    return _kernel_from_distances(_sq_distances(x, y), multipliers, sig)


def _paired_kernel(a: Tensor, b: Tensor, multipliers: Sequence[float], sigma2: Tensor) -> Tensor:
    """Row-wise kernel values ``k(a_i, b_i)`` (a vector), for the linear-time estimator."""
    return _kernel_from_distances((a - b).pow(2).sum(1), multipliers, sigma2)


def _quadratic_mmd(kernel: Tensor, n_source: int) -> Tensor:
    """Biased ``mean K_ss + mean K_tt - 2 mean K_st`` from the joint ``(n+m) x (n+m)`` kernel."""
    k_ss = kernel[:n_source, :n_source]
    k_tt = kernel[n_source:, n_source:]
    k_st = kernel[:n_source, n_source:]
    return k_ss.mean() + k_tt.mean() - 2.0 * k_st.mean()


def _layer_kernels(
    sources: Sequence[Tensor],
    targets: Sequence[Tensor],
    multipliers: Sequence[Sequence[float]],
    linear: bool,
) -> Tensor:
    """The MMD^2 estimate with the product over layers of each layer's multi-kernel."""
    if not linear:
        joint: Tensor | None = None
        for s, t, mult in zip(sources, targets, multipliers, strict=True):
            z = torch.cat([_work(s), _work(t)])
            k = _kernel_from_distances(_sq_distances(z, z), mult, _bandwidth(z))
            joint = k if joint is None else joint * k
        assert joint is not None
        return _quadratic_mmd(joint, sources[0].shape[0])
    # Gretton et al. 2012, Lemma 14: over the n/2 quadruples (x_{2i}, x_{2i+1}, y_{2i}, y_{2i+1})
    # h = k(x, x') + k(y, y') - k(x, y') - k(x', y); MMD^2_l = mean of h.
    terms: list[Tensor] | None = None
    for s, t, mult in zip(sources, targets, multipliers, strict=True):
        s, t = _work(s), _work(t)
        sig = _bandwidth(torch.cat([s, t]))
        x1, x2, y1, y2 = s[0::2], s[1::2], t[0::2], t[1::2]
        ks = [
            _paired_kernel(x1, x2, mult, sig),
            _paired_kernel(y1, y2, mult, sig),
            _paired_kernel(x1, y2, mult, sig),
            _paired_kernel(x2, y1, mult, sig),
        ]
        terms = ks if terms is None else [a * b for a, b in zip(terms, ks, strict=True)]
    assert terms is not None
    return (terms[0] + terms[1] - terms[2] - terms[3]).mean()


def _check_linear(source: Tensor, target: Tensor, what: str) -> None:
    n, m = source.shape[0], target.shape[0]
    if n != m or n % 2:
        raise ConfigError(
            f"{what} with linear=True pairs consecutive rows and needs the same even number of "
            f"source and target rows, got source {_shape(source)} and target {_shape(target)}; "
            "use linear=False for unequal or odd batches"
        )


# --------------------------------------------------------------------------- MMD


def mk_mmd(
    source: Tensor,
    target: Tensor,
    kernel_multipliers: Sequence[float] = DEFAULT_KERNEL_MULTIPLIERS,
    linear: bool = False,
) -> Tensor:
    """Multi-kernel MMD^2 of DAN (Long et al., "Learning Transferable Features with Deep
    Adaptation Networks", ICML 2015).

    ``k(a, b) = mean_m exp(-||a - b||^2 / (m sigma^2))``: Gaussian kernels averaged (not summed)
    over the multipliers ``m``, where ``sigma^2`` is the mean squared distance over distinct
    pairs of rows of the joint batch ``cat(source, target)``, detached.

    ``linear=False``: the biased quadratic estimator (diagonals included)
    ``mean K_ss + mean K_tt - 2 mean K_st``; ``source`` (n x D) and ``target`` (m x D) may have
    different row counts. It is >= 0 and 0 for identical batches.
    ``linear=True``: the unbiased linear-time estimator of Gretton et al. (JMLR 2012, Lemma 14),
    the mean over the n/2 quadruples of consecutive rows of
    ``k(x, x') + k(y, y') - k(x, y') - k(x', y)``; needs n == m and n even. It can be negative.
    """
    what = "mk_mmd"
    _check_pair(source, target, what)
    if linear:
        _check_linear(source, target, what)
    mult = _multipliers(kernel_multipliers, what)
    return _layer_kernels([source], [target], [mult], linear)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def jmmd(
    source_list: Sequence[Tensor],
    target_list: Sequence[Tensor],
    kernel_multipliers: Sequence[float] | Sequence[Sequence[float]] = DEFAULT_KERNEL_MULTIPLIERS,
    linear: bool = False,
) -> Tensor:
    """Joint MMD^2 of JAN (Long et al., "Deep Transfer Learning with Joint Adaptation Networks",
    ICML 2017).

    The kernel between two samples is the elementwise product over layers ``l`` (for example
    the bottleneck features and the softmax predictions) of each layer's multi-kernel
    ``k_l(a, b) = mean_m exp(-||a_l - b_l||^2 / (m sigma_l^2))`` (see :func:`mk_mmd`; each
    layer gets its own detached bandwidth ``sigma_l^2`` from its joint batch). The estimator is
    the same as :func:`mk_mmd`'s (quadratic, or linear-time with ``linear=True``).

    ``kernel_multipliers`` is either one sequence of numbers shared by all layers or one
    sequence per layer. Within a domain all layers must have the same number of rows; widths
    may differ between layers but not between domains. With a single layer this equals
    :func:`mk_mmd`.
    """
    what = "jmmd"
    for name, layers in (("source_list", source_list), ("target_list", target_list)):
        if isinstance(layers, Tensor) or not isinstance(layers, Sequence) or not layers:
            raise ConfigError(
                f"{what}: {name} must be a non-empty list of N x D tensors (one per layer), "
                f"got {type(layers).__name__}"
            )
    if len(source_list) != len(target_list):
        raise ConfigError(
            f"{what} needs as many source as target layers, got {len(source_list)} and "
            f"{len(target_list)}"
        )
    for i, (s, t) in enumerate(zip(source_list, target_list, strict=True)):
        _check_pair(s, t, f"{what} (layer {i})")
    for name, layers in (("source", source_list), ("target", target_list)):
        rows = [x.shape[0] for x in layers]
        if len(set(rows)) > 1:
            shapes = ", ".join(str(_shape(x)) for x in layers)
            raise ConfigError(
                f"{what} needs the same number of rows in every {name} layer (the same "
                f"samples), got {name} shapes {shapes}"
            )
    if linear:
        _check_linear(source_list[0], target_list[0], what)

    n_layers = len(source_list)
    km = kernel_multipliers
    if isinstance(km, Sequence) and not isinstance(km, str | bytes) and km and all(
        not _is_number(m) for m in km
    ):
        if len(km) != n_layers:
            raise ConfigError(
                f"{what}: kernel_multipliers has {len(km)} per-layer entries for {n_layers} "
                "layers; give one sequence per layer or one shared sequence of numbers"
            )
        per_layer = [_multipliers(m, f"{what} (layer {i})") for i, m in enumerate(km)]
    else:
        per_layer = [_multipliers(km, what)] * n_layers
    return _layer_kernels(source_list, target_list, per_layer, linear)


# --------------------------------------------------------------------------- CORAL


def _covariance(x: Tensor) -> Tensor:
    """Unbiased ``D x D`` covariance of the rows of ``x`` (divides by n - 1)."""
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


def coral_loss(source: Tensor, target: Tensor) -> Tensor:
    """Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation", ECCV-W 2016): ``||C_s - C_t||_F^2 / (4 d^2)``.

    ``C_s``, ``C_t`` are the unbiased (``n - 1``) covariances of the ``n_s x d`` source and
    ``n_t x d`` target features; the row counts may differ (each at least 2).
    """
    what = "coral_loss"
    _check_pair(source, target, what)
    s, t = _work(source), _work(target)
    d = s.shape[1]
    return (_covariance(s) - _covariance(t)).pow(2).sum() / (4.0 * d * d)


# ---------------------------------------------------------------------- feature regularisers


def afn_loss(features: Tensor, radius_step: float = 1.0) -> Tensor:
    """Stepwise adaptive feature norm, SAFN (Xu et al., "Larger Norm More Transferable: An
    Adaptive Feature Norm Approach for Unsupervised Domain Adaptation", ICCV 2019).

    ``mean_i (sg(||h_i||_2) + radius_step - ||h_i||_2)^2`` where ``sg`` stops the gradient.
    Its *value* is always ``radius_step^2``; its gradient, ``-2 radius_step h_i / (N ||h_i||)``
    per row, enlarges every feature norm by about ``radius_step`` per step. Apply it to the
    source and the target features (for example to ``cat(source, target)``).
    """
    what = "afn_loss"
    _check_matrix(features, what, "features", min_rows=1)
    step = check_number(f"{what}: radius_step", radius_step, positive=True)
    norms = torch.linalg.vector_norm(_work(features), ord=2, dim=1)
    return (norms.detach() + step - norms).pow(2).mean()


def bsp_loss(source_features: Tensor, target_features: Tensor, k: int = 1) -> Tensor:
    """Batch spectral penalisation, BSP (Chen et al., "Transferability vs. Discriminability:
    Batch Spectral Penalization for Adversarial Domain Adaptation", ICML 2019).

    ``sum_{i<=k} sigma_{s,i}^2 + sum_{i<=k} sigma_{t,i}^2``: the k largest squared singular
    values of each domain's ``N x D`` feature matrix, summed over the two domains.
    """
    what = "bsp_loss"
    _check_pair(source_features, target_features, what, min_rows=1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{what}: k must be a positive integer, got {k!r}")
    rank = min(min(x.shape) for x in (source_features, target_features))
    if k > rank:
        raise ConfigError(
            f"{what}: k={k} exceeds the number of singular values ({rank}) of source "
            f"{_shape(source_features)} and target {_shape(target_features)}"
        )
    total = 0.0
    for x in (source_features, target_features):
        total = total + torch.linalg.svdvals(_work(x))[:k].pow(2).sum()
    assert isinstance(total, Tensor)
    return total


# ------------------------------------------------------------------- prediction regularisers


def _check_logits(logits: Tensor, what: str) -> None:
    _check_matrix(logits, what, "target logits", min_rows=1, kind="N x C")
    if logits.shape[1] < 2:
        raise ConfigError(
            f"{what} needs at least 2 classes, got target logits of shape {_shape(logits)}"
        )


def mcc_loss(target_logits: Tensor, temperature: float = 2.5) -> Tensor:
    """Minimum class confusion, MCC (Jin et al., "Minimum Class Confusion for Versatile Domain
    Adaptation", ECCV 2020).

    ``p = softmax(z / T)``; ``w_i = N (1 + exp(-H_i)) / sum_j (1 + exp(-H_j))`` with ``H_i``
    the entropy of ``p_i``; ``C = p^T diag(w) p`` (C x C); every row of ``C`` is divided by its
    sum; loss ``= (sum(C) - trace(C)) / num_classes``. The weights ``w`` are detached, as in the
    authors' code (the value is unchanged).
    """
    what = "mcc_loss"
    _check_logits(target_logits, what)
    temp = check_number(f"{what}: temperature", temperature, positive=True)
    z = _work(target_logits) / temp
    p = torch.softmax(z, dim=1)
    n, num_classes = p.shape
    h = entropy(z).detach()
    w = 1.0 + torch.exp(-h)
    w = n * w / w.sum()
    confusion = (p * w[:, None]).T @ p
    confusion = confusion / confusion.sum(1, keepdim=True).clamp(min=_tiny(confusion))
    return (confusion.sum() - confusion.trace()) / num_classes


def bnm_loss(target_logits: Tensor) -> Tensor:
    """Batch nuclear-norm maximisation, BNM (Cui et al., "Towards Discriminability and Diversity:
    Batch Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020).

    ``-||softmax(z)||_* / N`` (sum of the singular values of the ``N x C`` prediction matrix,
    negated so that minimising it maximises the nuclear norm); lies in ``[-1, 0)``.
    """
    what = "bnm_loss"
    _check_logits(target_logits, what)
    p = torch.softmax(_work(target_logits), dim=1)
    return -torch.linalg.svdvals(p).sum() / p.shape[0]
