"""Label-free validators: scores for choosing a domain-adapted model without target labels.

Unsupervised domain adaptation has no labelled target data, so the usual "pick the epoch or
hyper-parameters with the best validation accuracy" cannot be done on the target domain. A
*validator* replaces it with a number computed from what is available: a held-out labelled
split of the source domain and the model's outputs on unlabelled target data. See Musgrave,
Belongie and Lim, "Benchmarking Validation Methods for Unsupervised Domain Adaptation" (2022)
for how well each one tracks target accuracy (often not very well: report them with care).

Conventions
-----------
* Every validator returns a Python ``float`` where **higher is better**, so a loss-like
  quantity is negated (``entropy`` is minus the mean entropy, ``dev`` is minus a risk).
* Inputs come in one :class:`ValidationData`. Tensors are detached and computed on the CPU in
  float64, so a score does not depend on the device or on the model's dtype. NumPy arrays are
  accepted and converted.
* A model whose logits or features contain NaN or infinity scores ``nan``; :func:`choose_epoch`
  never chooses a ``nan``. Missing or malformed inputs (a list or ``None`` for a tensor, a
  non-numeric dtype, an option such as ``tau`` out of range) raise :class:`ConfigError` naming
  the field of :class:`ValidationData` or the argument, and how to fix it, before any work.
* Entropies use the natural logarithm.
* Accuracy measured with target labels (the "oracle") is never a validator: :func:`score`
  refuses the names ``oracle`` and ``target_accuracy``; call :func:`oracle_accuracy` when a
  reference number computed from target labels is really wanted (e.g. for a benchmark table).

Validators (``VALIDATORS``)
---------------------------
``source_accuracy``
    Accuracy on the held-out labelled source split.
``entropy``
    ``-mean_i H(p_i)`` on target predictions (Morerio et al., ICLR 2018). It rewards
    confident predictions, including a collapse of all target rows onto one class.
``im``
    Information maximisation, ``H(mean_i p_i) - mean_i H(p_i)``: confident per row *and*
    diverse over the target set, so a collapse onto one class scores ``0`` while
    confident, balanced predictions over ``C`` classes score up to ``log C``.
``snd``
    Soft neighbourhood density (Saito et al., ICCV 2021), computed exactly as follows: take
    the softmax target predictions ``P`` (``n x C``, as in the paper, which uses the classifier's
    outputs rather than features), L2-normalise each row, form ``S = P P^T``, set the diagonal
    to ``-inf`` (a row is not its own neighbour), take the row-wise softmax of ``S / tau`` with
    ``tau = 0.05`` and return the mean row entropy of that matrix. Rows whose predictions have
    many close neighbours spread their soft-neighbour distribution widely, so the score is
    higher for predictions that form dense clusters. It is at most ``log(n - 1)``, reached by
    identical predictions for every row, so like ``entropy`` it does not penalise a collapse.
``dev``
    Deep embedded validation (You et al., ICML 2019): an importance-weighted source validation
    loss with a control variate; see :func:`dev_weights` and :func:`dev_risk` for the choices
    (domain classifier, cross-fitting, clipping). The score is ``-risk``.

Choices made here
-----------------
* ``dev`` domain classifier: L2-regularised logistic regression (``l2 = 0.1`` on the mean
  loss, intercept not penalised) on features standardised with the mean and standard
  deviation of its training rows, fitted to convergence by a truncated Newton method in
  float64 (deterministic; no autograd and no ``torch.optim``). ``l2`` trades variance for
  bias: with high-dimensional features and few rows, weights of two identical domains
  scatter around 1 and a larger ``l2`` (or lower-dimensional features) helps, while a
  larger ``l2`` also shrinks the weights of truly shifted domains towards 1, i.e. towards
  plain source validation loss. When ``train_source_features`` is given, the classifier is
  trained on them against all target features and the weights of the held-out rows are read
  off it, as in the paper. Otherwise the source validation rows are split into two halves at
  random (``seed = 0``) and each half is weighted by a classifier trained on the other half
  against all target rows (2-fold cross-fitting), so that no row is weighted by a classifier
  that saw it. Weights ``w = p(target|x) / p(source|x) * n_source_train / n_target_train``
  are clipped to ``[1/20, 20]`` (before the control variate), so that a few rows the
  classifier finds very target-like cannot dominate the estimate.
* :func:`choose_epoch` breaks ties towards the **earlier** epoch, as an early stopper that
  keeps a checkpoint only on strict improvement would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from transferkit.errors import ConfigError, UnknownNameError

__all__ = [
    "ORACLE_NAMES",
    "VALIDATORS",
    "UnknownValidatorError",
    "ValidationData",
    "Validator",
    "accuracy",
    "choose_epoch",
    "dev_risk",
    "dev_score",
    "dev_weights",
    "entropy_score",
    "im_score",
    "oracle_accuracy",
    "score",
    "snd_score",
    "source_accuracy_score",
]

# Names that would mean "choose with target labels"; score() and choose_epoch() refuse them.
ORACLE_NAMES = frozenset({"oracle", "target_accuracy", "target_acc"})

_FIELD_HELP = {
    "source_logits": "the model's logits [rows, classes] on the held-out labelled source split",
    "source_labels": "the integer class labels [rows] of the held-out labelled source split",
    "source_features": "the model's features [rows, dim] on the held-out labelled source split, "
    "in the same row order as source_logits",
    "target_logits": "the model's logits [rows, classes] on unlabelled target data",
    "target_features": "the model's features [rows, dim] on unlabelled target data",
    "train_source_features": "optional: the model's features [rows, dim] on the source "
    "training split, used to train dev's domain classifier",
}


class UnknownValidatorError(UnknownNameError, ConfigError):
    """An unknown validator name; the message lists the valid ones.

    It is both a :class:`ConfigError` and an :class:`~transferkit.errors.UnknownNameError`
    (hence a ``KeyError``), so either kind of handler catches it.
    """


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class ValidationData:
    """What the validators may read; every field is optional and only the needed ones are read.

    ``source_*`` describe a held-out *labelled source* split (not the rows the model trained
    on); ``target_*`` describe *unlabelled target* data. Row orders must agree within a domain
    (``source_logits[i]``, ``source_labels[i]`` and ``source_features[i]`` are one example).
    ``train_source_features`` (source *training* rows) is only read by ``dev``, which then
    trains its domain classifier on them instead of cross-fitting on the validation rows.
    """

    source_logits: torch.Tensor | None = None
    source_labels: torch.Tensor | None = None
    source_features: torch.Tensor | None = None
    target_logits: torch.Tensor | None = None
    target_features: torch.Tensor | None = None
    train_source_features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, _tensor(f.name, value))


def _shown(field: str) -> str:
    """How an input is named in messages: ``ValidationData.<field>`` or a plain argument."""
    return f"ValidationData.{field}" if field in _FIELD_HELP else field


# NumPy dtypes torch.from_numpy can take (any byte order); object, str, float128... cannot.
_NUMPY_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64", "complex64", "complex128"}
)


def _tensor(field: str, x: object) -> torch.Tensor:
    """Return a tensor as is, or a numeric NumPy array as a tensor; refuse anything else.

    Every public entry point passes its array inputs through here first, so that ``None``, a
    string, a list or an ``object``/``str`` array gets a one-line :class:`ConfigError` naming
    ``field`` instead of whatever torch raises deep inside a validator. Lists are refused
    rather than guessed at, as :class:`ValidationData` always did. Values are not changed.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.name not in _NUMPY_DTYPES:
            to = "np.int64" if "labels" in field else "np.float32"
            raise ConfigError(
                f"{_shown(field)} must hold numbers, got a numpy array of dtype {x.dtype}; "
                f"convert it with .astype({to})"
            )
        return torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
    what = f"; pass {_FIELD_HELP[field]}" if field in _FIELD_HELP else ""
    raise ConfigError(
        f"{_shown(field)} must be a torch.Tensor or numpy array, got {type(x).__name__}{what}"
    )


def _is_real(value: object) -> bool:
    """A Python or NumPy real number; not a bool, a string, a tensor or ``None``."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    """A Python or NumPy integer; not a bool (``True`` would silently mean 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _require(ok: bool, arg: str, value: object, rule: str) -> None:
    """Refuse an option unless ``ok``, naming it and the rule it breaks.

    Options are checked up front because a bad one otherwise fails late with a raw Python
    error (``chunk_rows=0``) or silently gives a wrong number (``chunk_rows=-1`` loops over
    nothing, ``tau=inf`` gives log(n - 1), ``l2=inf`` gives ``nan``).
    """
    if not ok:
        raise ConfigError(f"{arg} must be {rule}; got {value!r}")


def _matrix(field: str, x: torch.Tensor, *, min_rows: int = 1) -> torch.Tensor:
    """Check a [rows, columns] real input and return it detached, on the CPU, in float64."""
    if x.dim() != 2 or x.shape[1] < 1:
        what = f"; pass {_FIELD_HELP[field]}" if field in _FIELD_HELP else ""
        raise ConfigError(
            f"{_shown(field)} must be a 2-D [rows, columns] tensor; got shape "
            f"{tuple(x.shape)}{what}"
        )
    if x.shape[0] < min_rows:
        raise ConfigError(f"{_shown(field)} has {x.shape[0]} rows; this needs at least {min_rows}")
    if x.dtype == torch.bool or x.is_complex():
        raise ConfigError(f"{_shown(field)} must hold real numbers, got {x.dtype}")
    return x.detach().to("cpu", torch.float64)


def _labels(field: str, y: torch.Tensor, rows: int, classes: int) -> torch.Tensor:
    """Check integer labels, one per logits row (``rows``), each in ``[0, classes)``."""
    logits = _shown(field.replace("labels", "logits"))
    if y.dim() != 1 or y.shape[0] != rows:
        raise ConfigError(
            f"{_shown(field)} must be 1-D with one label per row of {logits} ({rows}); "
            f"got shape {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(
            f"{_shown(field)} must hold integer class indices, got {y.dtype}; convert with .long()"
        )
    y = y.detach().to("cpu", torch.long)
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise ConfigError(
            f"{_shown(field)} holds labels in [{int(y.min())}, {int(y.max())}], but {logits} "
            f"has {classes} classes; labels must lie in [0, {classes - 1}]"
        )
    return y


def _same_rows(a: str, xa: torch.Tensor, b: str, xb: torch.Tensor) -> None:
    if xa.shape[0] != xb.shape[0]:
        raise ConfigError(
            f"ValidationData.{a} has {xa.shape[0]} rows but ValidationData.{b} has "
            f"{xb.shape[0]}; they must describe the same examples in the same order"
        )


def _same_width(a: str, xa: torch.Tensor, b: str, xb: torch.Tensor) -> None:
    if xa.shape[1] != xb.shape[1]:
        raise ConfigError(
            f"ValidationData.{a} has {xa.shape[1]} columns but ValidationData.{b} has "
            f"{xb.shape[1]}; both must come from the same layer of the same model"
        )


def _finite(*xs: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(x).all()) for x in xs)


def _row_entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of a matrix of log-probabilities; 0 * log 0 counts as 0."""
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=1)


# --------------------------------------------------------------------------------------------
# Accuracy (source validation, and the clearly labelled oracle)


def _accuracy(logits: object, labels: object, logits_field: str, labels_field: str) -> float:
    z = _matrix(logits_field, _tensor(logits_field, logits))
    y = _labels(labels_field, _tensor(labels_field, labels), z.shape[0], z.shape[1])
    if not _finite(z):
        return math.nan
    return float((z.argmax(dim=1) == y).double().mean())


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max logit equals the label; ``nan`` if a logit is not finite."""
    return _accuracy(logits, labels, "logits", "labels")


def source_accuracy_score(source_logits: torch.Tensor, source_labels: torch.Tensor) -> float:
    """Accuracy on the held-out labelled source split (the ``source_accuracy`` validator)."""
    return _accuracy(source_logits, source_labels, "source_logits", "source_labels")


def oracle_accuracy(target_logits: torch.Tensor, target_labels: torch.Tensor) -> float:
    """ORACLE: accuracy measured with *target labels*, which unsupervised adaptation lacks.

    Use it only to report how good a choice made by a validator was, or as an explicitly
    labelled upper bound; choosing a model with it is not unsupervised model selection.
    """
    return _accuracy(target_logits, target_labels, "logits", "labels")


# --------------------------------------------------------------------------------------------
# Target-prediction validators


def entropy_score(target_logits: torch.Tensor) -> float:
    """Minus the mean entropy (nats) of the target predictions; higher means more confident."""
    z = _matrix("target_logits", _tensor("target_logits", target_logits))
    if not _finite(z):
        return math.nan
    return -float(_row_entropy(torch.log_softmax(z, dim=1)).mean())


def im_score(target_logits: torch.Tensor) -> float:
    """Information maximisation: ``H(mean prediction) - mean per-row entropy`` (nats).

    Lies in ``[-log C, log C]``; high when each row is confident and the classes are used
    evenly over the target set, ``0`` when every row confidently predicts the same class.
    """
    z = _matrix("target_logits", _tensor("target_logits", target_logits))
    if not _finite(z):
        return math.nan
    log_p = torch.log_softmax(z, dim=1)
    mean_p = log_p.exp().mean(dim=0)
    marginal = -torch.special.xlogy(mean_p, mean_p).sum()
    return float(marginal - _row_entropy(log_p).mean())


def snd_score(target_logits: torch.Tensor, tau: float = 0.05, chunk_rows: int = 1024) -> float:
    """Soft neighbourhood density of the target predictions (Saito et al., ICCV 2021).

    Softmax predictions, L2-normalised per row; similarities ``S = P P^T`` with the diagonal
    set to ``-inf``; row-softmax of ``S / tau``; mean row entropy (nats). Rows are processed
    ``chunk_rows`` at a time so memory stays ``O(chunk_rows * n)``. Needs at least 2 rows.
    """
    tau_ok = _is_real(tau) and 0 < tau < math.inf  # NaN fails both comparisons
    _require(tau_ok, "snd's temperature tau", tau, "a finite number > 0 (the paper uses 0.05)")
    rows_ok = _is_int(chunk_rows) and chunk_rows >= 1
    _require(rows_ok, "snd's chunk_rows", chunk_rows, "a positive integer (default 1024)")
    z = _matrix("target_logits", _tensor("target_logits", target_logits), min_rows=2)
    if not _finite(z):
        return math.nan
    q = F.normalize(torch.softmax(z, dim=1), p=2.0, dim=1)
    n = q.shape[0]
    total = 0.0
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        sim = q[start:stop] @ q.T / tau
        rows = torch.arange(stop - start)
        sim[rows, rows + start] = -math.inf
        total += float(_row_entropy(torch.log_softmax(sim, dim=1)).sum())
    return total / n


# --------------------------------------------------------------------------------------------
# Deep embedded validation


def _fit_logistic(
    x0: torch.Tensor, x1: torch.Tensor, l2: float, max_iter: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """L2-regularised logistic regression of class 1 (``x1``) against class 0 (``x0``).

    Minimises ``mean BCE + l2 / 2 * ||coef||^2`` (intercept not penalised) on features
    standardised with the training rows' mean and population standard deviation, by a
    truncated Newton method (conjugate-gradient steps with an Armijo backtracking line search;
    at most ``max_iter`` Newton steps, stopping once the gradient norm is below 1e-10). It is
    deterministic, needs no autograd (so it runs under ``torch.inference_mode()`` too) and
    costs a few Hessian-vector products, ``O(rows * dim)`` each, per step. Returns a function
    mapping rows to the fitted logit ``log p(1|x) / p(0|x)``.
    """
    x = torch.cat([x0, x1])
    n, d = x.shape
    y = torch.cat([x.new_zeros(len(x0)), x.new_ones(len(x1))])
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    xa = torch.cat([(x - mean) / std, x.new_ones(n, 1)], dim=1)  # last column: intercept
    pen = x.new_full((d + 1,), l2)
    pen[-1] = 0.0

    def objective(beta: torch.Tensor) -> float:
        bce = F.binary_cross_entropy_with_logits(xa @ beta, y)
        return float(bce + 0.5 * (pen * beta * beta).sum())

    beta = x.new_zeros(d + 1)
    for _ in range(max_iter):
        p = torch.sigmoid(xa @ beta)
        grad = xa.T @ (p - y) / n + pen * beta
        gnorm = float(grad.norm())
        if gnorm < 1e-10:
            break
        curvature = p * (1 - p) / n
        # Conjugate gradient for H step = -grad, H = xa^T diag(curvature) xa + diag(pen).
        step = torch.zeros_like(beta)
        r = -grad
        direction = r.clone()
        rr = float(r @ r)
        tol = min(0.5, gnorm**0.5) * gnorm
        for _ in range(min(d + 1, 200)):
            h_dir = xa.T @ (curvature * (xa @ direction)) + pen * direction
            d_h_d = float(direction @ h_dir)
            if d_h_d <= 0:
                break
            alpha = rr / d_h_d
            step = step + alpha * direction
            r = r - alpha * h_dir
            rr_new = float(r @ r)
            if rr_new**0.5 <= tol:
                break
            direction = r + (rr_new / rr) * direction
            rr = rr_new
        if not bool(step.any()):
            step = -grad
        f0, slope, t = objective(beta), float(grad @ step), 1.0
        while objective(beta + t * step) > f0 + 1e-4 * t * slope:
            t *= 0.5
            if t < 1e-10:
                break
        if t < 1e-10:
            break
        beta = beta + t * step
    coef, bias = beta[:-1], beta[-1]
    return lambda rows: ((rows - mean) / std) @ coef + bias


def _check_dev_options(l2: object, max_iter: object, max_weight: object, seed: object) -> None:
    """The keyword options of :func:`dev_weights` and :func:`dev_score`, checked before any work.

    ``l2`` must be finite (``inf`` makes every weight ``nan``) and > 0 (with 0 separable
    domains have no optimum). ``max_weight = inf`` is allowed: it turns clipping off.
    """
    l2_ok = _is_real(l2) and 0 < l2 < math.inf
    _require(l2_ok, "dev's l2", l2, "a finite number > 0 (default 0.1)")
    iter_ok = _is_int(max_iter) and max_iter >= 1
    _require(iter_ok, "dev's max_iter", max_iter, "a positive integer (default 100)")
    weight_ok = _is_real(max_weight) and max_weight >= 1
    _require(weight_ok, "dev's max_weight", max_weight, "a number >= 1 (default 20; inf: no clip)")
    seed_ok = _is_int(seed) and -(2**63) <= seed < 2**64  # what torch's manual_seed takes
    _require(seed_ok, "dev's seed", seed, "an integer that fits in 64 bits (default 0)")


def dev_weights(
    source_features: torch.Tensor,
    target_features: torch.Tensor,
    train_source_features: torch.Tensor | None = None,
    *,
    l2: float = 0.1,
    max_iter: int = 100,
    max_weight: float = 20.0,
    seed: int = 0,
) -> torch.Tensor:
    """Importance weights ``p(target|x) / p(source|x) * n_s / n_t`` of the source validation rows.

    The domain classifier is :func:`_fit_logistic` (source = 0, target = 1), and ``n_s``,
    ``n_t`` are the numbers of source and target rows it was trained on, which turns its odds
    into a density ratio ``p_target(x) / p_source(x)``. With ``train_source_features`` it is
    trained once on those rows against all target rows; without, the validation rows are split
    at random (``seed``) into two halves and each half is weighted by a classifier trained on
    the other half against all target rows. Weights are clipped to
    ``[1 / max_weight, max_weight]``. Returns a float64 tensor with one weight per row of
    ``source_features``; all ones-ish when the two domains look alike.
    """
    _check_dev_options(l2, max_iter, max_weight, seed)
    xt = _matrix("target_features", _tensor("target_features", target_features))
    xv = _tensor("source_features", source_features)
    xv = _matrix("source_features", xv, min_rows=2 if train_source_features is None else 1)
    _same_width("source_features", xv, "target_features", xt)
    lo, hi = -math.log(max_weight), math.log(max_weight)

    def weights(train: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        logit = _fit_logistic(train, xt, l2, max_iter)(rows)
        return (logit + math.log(len(train) / len(xt))).clamp(lo, hi).exp()

    if train_source_features is not None:
        xtr = _tensor("train_source_features", train_source_features)
        xtr = _matrix("train_source_features", xtr)
        _same_width("train_source_features", xtr, "target_features", xt)
        return weights(xtr, xv)
    gen = torch.Generator().manual_seed(int(seed))  # manual_seed refuses NumPy integers
    perm = torch.randperm(len(xv), generator=gen)
    half = len(xv) // 2
    fold_a, fold_b = perm[:half], perm[half:]
    w = torch.empty(len(xv), dtype=torch.float64)
    w[fold_a] = weights(xv[fold_b], xv[fold_a])
    w[fold_b] = weights(xv[fold_a], xv[fold_b])
    return w


def dev_risk(losses: torch.Tensor, weights: torch.Tensor) -> float:
    """DEV's control-variate estimate of the target risk from weighted source losses.

    With ``a_i = w_i * l_i``: ``eta = -Cov(a, w) / Var(w)`` (sample moments) and
    ``risk = mean(a) + eta * mean(w) - eta``; ``eta = 0`` when the weights do not vary.
    """
    l_ = _tensor("losses", losses).detach().to("cpu", torch.float64).reshape(-1)
    w = _tensor("weights", weights).detach().to("cpu", torch.float64).reshape(-1)
    if l_.shape != w.shape or len(w) < 1:
        raise ConfigError(
            f"dev_risk needs one weight per loss; got {len(l_)} losses and {len(w)} weights"
        )
    a = w * l_
    if len(w) < 2:
        return float(a.mean())
    var = float(w.var())
    eta = 0.0
    if var > 1e-12:
        cov = float(((a - a.mean()) * (w - w.mean())).sum() / (len(w) - 1))
        eta = -cov / var
    return float(a.mean() + eta * w.mean() - eta)


def dev_score(
    source_logits: torch.Tensor,
    source_labels: torch.Tensor,
    source_features: torch.Tensor,
    target_features: torch.Tensor,
    train_source_features: torch.Tensor | None = None,
    *,
    l2: float = 0.1,
    max_iter: int = 100,
    max_weight: float = 20.0,
    seed: int = 0,
) -> float:
    """Minus the DEV risk: per-row cross-entropy of the source validation rows, weighted by
    :func:`dev_weights` (which takes the keyword options) and combined by :func:`dev_risk`."""
    _check_dev_options(l2, max_iter, max_weight, seed)
    z = _matrix("source_logits", _tensor("source_logits", source_logits))
    y = _labels("source_labels", _tensor("source_labels", source_labels), z.shape[0], z.shape[1])
    xs = _matrix("source_features", _tensor("source_features", source_features))
    _same_rows("source_logits", z, "source_features", xs)
    xt = _matrix("target_features", _tensor("target_features", target_features))
    extra: list[torch.Tensor] = []
    if train_source_features is not None:
        xtr = _tensor("train_source_features", train_source_features)
        extra.append(_matrix("train_source_features", xtr))
    if not _finite(z, xs, xt, *extra):
        return math.nan
    options = {"l2": l2, "max_iter": max_iter, "max_weight": max_weight, "seed": seed}
    w = dev_weights(xs, xt, *extra, **options)
    return -dev_risk(F.cross_entropy(z, y, reduction="none"), w)


# --------------------------------------------------------------------------------------------
# Registry and entry points


@dataclass(frozen=True)
class Validator:
    """A named, label-free score of a model; higher is better.

    ``needs`` says which data it reads ("source_val": the held-out labelled source split,
    "target": unlabelled target data); ``fields`` are the exact :class:`ValidationData` fields
    it requires; ``optional`` are fields it reads when given.
    """

    name: str
    needs: frozenset[str]
    fields: tuple[str, ...]
    description: str
    paper: str
    fn: Callable[[ValidationData], float]
    optional: tuple[str, ...] = ()

    def __call__(self, data: ValidationData) -> float:
        if not isinstance(data, ValidationData):
            raise ConfigError(
                f"validator {self.name!r} takes a ValidationData, got {type(data).__name__}"
            )
        for field in self.fields:
            if getattr(data, field) is None:
                others = sorted(
                    v.name
                    for v in VALIDATORS.values()
                    if all(getattr(data, f) is not None for f in v.fields)
                )
                hint = f"; validators the given data allows: {', '.join(others)}" if others else ""
                raise ConfigError(
                    f"validator {self.name!r} needs ValidationData.{field}: pass "
                    f"{field}= {_FIELD_HELP[field]}{hint}"
                )
        return float(self.fn(data))


VALIDATORS: dict[str, Validator] = {
    v.name: v
    for v in (
        Validator(
            name="source_accuracy",
            needs=frozenset({"source_val"}),
            fields=("source_logits", "source_labels"),
            description="accuracy on the held-out labelled source split",
            paper="source-validation baseline, as benchmarked by Musgrave et al. 2022, "
            "'Benchmarking Validation Methods for Unsupervised Domain Adaptation'",
            fn=lambda d: source_accuracy_score(d.source_logits, d.source_labels),
        ),
        Validator(
            name="entropy",
            needs=frozenset({"target"}),
            fields=("target_logits",),
            description="minus the mean entropy of the target predictions (confidence)",
            paper="Morerio et al. 2018, 'Minimal-Entropy Correlation Alignment for "
            "Unsupervised Deep Domain Adaptation' (ICLR)",
            fn=lambda d: entropy_score(d.target_logits),
        ),
        Validator(
            name="im",
            needs=frozenset({"target"}),
            fields=("target_logits",),
            description="information maximisation: entropy of the mean target prediction "
            "minus the mean per-row entropy (confident and diverse)",
            paper="Musgrave et al. 2022, 'Benchmarking Validation Methods for Unsupervised "
            "Domain Adaptation' (IM objective as in Liang et al. 2020, SHOT, ICML)",
            fn=lambda d: im_score(d.target_logits),
        ),
        Validator(
            name="snd",
            needs=frozenset({"target"}),
            fields=("target_logits",),
            description="soft neighbourhood density of the target softmax predictions "
            "(tau = 0.05)",
            paper="Saito et al. 2021, 'Tune it the Right Way: Unsupervised Validation of "
            "Domain Adaptation via Soft Neighborhood Density' (ICCV)",
            fn=lambda d: snd_score(d.target_logits),
        ),
        Validator(
            name="dev",
            needs=frozenset({"source_val", "target"}),
            fields=("source_logits", "source_labels", "source_features", "target_features"),
            optional=("train_source_features",),
            description="deep embedded validation: minus the importance-weighted source "
            "validation loss with a control variate",
            paper="You et al. 2019, 'Towards Accurate Model Selection in Deep Unsupervised "
            "Domain Adaptation' (ICML)",
            fn=lambda d: dev_score(
                d.source_logits,
                d.source_labels,
                d.source_features,
                d.target_features,
                d.train_source_features,
            ),
        ),
    )
}


def _check_name(name: object) -> None:
    """Refuse a name that is not a string (``["im"]`` would otherwise fail on hashing)."""
    if not isinstance(name, str):
        raise ConfigError(
            f"the validator name must be a string, one of {', '.join(sorted(VALIDATORS))}; "
            f"got {type(name).__name__} {name!r}"
        )


def _check_history(history: object) -> None:
    """Refuse a history that is not a list of per-epoch mappings before any epoch is read."""
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
        raise ConfigError(
            "choose_epoch's history must be a list with one dict of scores per epoch, e.g. "
            f"[{{'im': 0.3}}, {{'im': 0.5}}]; got {type(history).__name__}"
        )
    for i, epoch in enumerate(history):
        if not isinstance(epoch, Mapping):
            raise ConfigError(
                f"history[{i}] must be a dict of validator name to score, e.g. {{'im': 0.3}}; "
                f"got {type(epoch).__name__}"
            )


def _refuse_oracle(name: str) -> None:
    if str(name).lower() in ORACLE_NAMES:
        raise ConfigError(
            f"{name!r} chooses with target labels, which label-free validation must not read; "
            f"if that is really wanted, ask for it explicitly with oracle_accuracy("
            f"target_logits, target_labels) and report it as an oracle, not as a validator"
        )


def score(name: str, data: ValidationData) -> float:
    """Score ``data`` with the validator called ``name``; higher is better.

    Raises :class:`ConfigError` for a name that is not a string, for a missing field (naming
    it and what to pass), for the oracle names (see :func:`oracle_accuracy`) and, as
    :class:`UnknownValidatorError`, for an unknown name (listing the valid ones).
    """
    _check_name(name)
    _refuse_oracle(name)
    if name not in VALIDATORS:
        raise UnknownValidatorError("validator", name, list(VALIDATORS))
    return VALIDATORS[name](data)


def choose_epoch(
    history: Sequence[Mapping[str, float]], name: str, *, allow_target_labels: bool = False
) -> int:
    """Index of the epoch whose ``history[i][name]`` is highest (all scores: higher is better).

    Ties go to the **earlier** epoch. Epochs whose score is NaN, or that lack ``name`` (a
    validator computed only every few epochs), are never chosen. Raises :class:`ConfigError`
    for a history that is not a list of dicts, for an empty history, when no epoch has a
    finite score, for a non-number score, and for the oracle names unless
    ``allow_target_labels=True`` is passed explicitly.
    """
    _check_name(name)
    _check_history(history)
    if not allow_target_labels:
        _refuse_oracle(name)
    if len(history) == 0:
        raise ConfigError(f"choose_epoch({name!r}) got an empty history: score at least one epoch")
    best, best_value = -1, -math.inf
    for i, epoch in enumerate(history):
        if name not in epoch:
            continue
        value = epoch[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ConfigError(
                f"history[{i}][{name!r}] must be a number, got {type(value).__name__}"
            )
        value = float(value)
        if math.isnan(value):
            continue
        if best < 0 or value > best_value:
            best, best_value = i, value
    if best < 0:
        keys = sorted({k for epoch in history for k in epoch})
        raise ConfigError(
            f"no epoch of the history has a non-NaN {name!r} score; keys present: "
            f"{', '.join(keys) if keys else 'none'}"
        )
    return best
