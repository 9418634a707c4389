"""Self-training losses for domain adaptation: entropy, SHOT's information maximisation and
clustering pseudo-labels, confidence-thresholded pseudo-labels and the FixMatch loss.

All entropies use the natural log. Functions that produce labels (``confident_pseudo_labels``,
``shot_cluster_labels`` and the labels inside ``fixmatch_loss``) run without gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_number


def _check_logits(name: str, logits: Tensor) -> None:
    """``N x C`` with ``N >= 1`` and ``C >= 2``."""
    if logits.dim() != 2:
        raise ConfigError(
            f"{name} must be N x num_classes (2-d), got shape {tuple(logits.shape)}; flatten "
            "the extra dimensions into the batch first"
        )
    n, c = logits.shape
    if n < 1 or c < 2:
        raise ConfigError(
            f"{name} needs at least 1 sample and 2 classes, got shape {tuple(logits.shape)}"
        )


# ------------------------------------------------------------------------------- entropy


def entropy(logits: Tensor) -> Tensor:
    """Per-row Shannon entropy ``H(p_i) = -sum_c p_ic log p_ic`` of ``p = softmax(logits)``.

    Computed from ``log_softmax`` (no epsilon); classes with ``p = 0`` (logit ``-inf``)
    contribute 0, with a finite gradient. Returns ``N`` values in ``[0, log C]``.
    """
    _check_logits("logits", logits)
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    safe_log_p = torch.where(p > 0, log_p, torch.zeros_like(log_p))
    return -(p * safe_log_p).sum(dim=1)


def mean_entropy(logits: Tensor) -> Tensor:
    """``mean_i H(softmax(logits_i))``: the entropy-minimisation loss (Grandvalet & Bengio)."""
    return entropy(logits).mean()


def information_maximization(
    logits: Tensor, diversity_weight: float = 1.0, eps: float = 1e-5
) -> Tensor:
    """SHOT's information-maximisation loss ``L_ent - diversity_weight * L_div``, minimised.

    Liang et al., ICML 2020, "Do We Really Need to Access the Source Data?".
    ``L_ent = mean_i H(p_i)`` (exact, as :func:`entropy`) makes each prediction confident;
    ``L_div = H(p_bar) = -sum_c p_bar_c log(p_bar_c + eps)`` with ``p_bar = mean_i p_i``
    rewards predictions spread over the classes, so subtracting it avoids collapse to one class.
    Its lower bound ``-diversity_weight * log C`` is reached (up to ``eps``) by one-hot
    predictions that use every class equally often; uniform predictions give about
    ``(1 - diversity_weight) * log C``.
    """
    _check_logits("logits", logits)
    w = check_number("diversity_weight", diversity_weight)
    eps = check_number("eps", eps)
    p_bar = F.softmax(logits, dim=1).mean(dim=0)
    diversity = -(p_bar * torch.log(p_bar + eps)).sum()
    return mean_entropy(logits) - w * diversity


# ------------------------------------------------------------------------- pseudo labels


@torch.no_grad()
def confident_pseudo_labels(
    logits: Tensor, threshold: float, class_balance: bool = False
) -> tuple[Tensor, Tensor]:
    """``(labels, mask)``: ``labels = argmax_c p_ic`` and ``mask = max_c p_ic >= threshold``
    with ``p = softmax(logits)``; no gradient.

    With ``class_balance=True`` the mask is widened so that no predicted class is starved by
    a global threshold: let ``q = kept / N`` be the fraction the threshold keeps; for every
    class ``c`` predicted for ``n_c`` rows, its ``ceil(q * n_c)`` most confident rows are kept
    too (ties go to the lower row index). A row is therefore kept if it passes the threshold
    OR is among the top ``ceil(q * n_c)`` of its predicted class; every predicted class keeps
    at least the global fraction of its rows, and nothing is kept when nothing passes.
    """
    _check_logits("logits", logits)
    threshold = check_number("threshold", threshold, high=1.0)
    probs = F.softmax(logits.detach(), dim=1)
    confidence, labels = probs.max(dim=1)
    mask = confidence >= threshold
    if class_balance:
        n = labels.numel()
        kept = int(mask.sum())
        for c in labels.unique().tolist():
            rows = (labels == c).nonzero().flatten()
            k = -(-kept * rows.numel() // n)  # ceil(kept * n_c / n) in integers
            if k > 0:
                order = torch.argsort(confidence[rows], descending=True, stable=True)
                mask[rows[order[:k]]] = True
    return labels, mask


def fixmatch_loss(
    weak_logits: Tensor, strong_logits: Tensor, threshold: float = 0.95
) -> tuple[Tensor, Tensor]:
    """FixMatch's unlabelled loss (Sohn et al., NeurIPS 2020) and its mask rate:
    ``(mean_i m_i CE(strong_i, y_i), mean_i m_i)``.

    ``y_i = argmax softmax(weak_i)`` and ``m_i = [max softmax(weak_i) >= threshold]`` come from
    the weakly augmented view without gradient; the mean runs over *all* rows (masked rows
    count as 0), as in the paper, so the loss shrinks when few rows pass. The mask rate is a
    detached scalar tensor, useful for logging.
    """
    _check_logits("weak_logits", weak_logits)
    if weak_logits.shape != strong_logits.shape:
        raise ConfigError(
            f"weak_logits {tuple(weak_logits.shape)} and strong_logits "
            f"{tuple(strong_logits.shape)} differ; pass both views of the same batch"
        )
    threshold = check_number("threshold", threshold, high=1.0)
    with torch.no_grad():
        confidence, labels = F.softmax(weak_logits.detach(), dim=1).max(dim=1)
        mask = (confidence >= threshold).to(strong_logits.dtype)
    ce = F.cross_entropy(strong_logits, labels, reduction="none")
    return (ce * mask).mean(), mask.mean()


# --------------------------------------------------------------------- SHOT clustering


@torch.no_grad()
def shot_cluster_labels(
    features: Tensor, probs: Tensor, rounds: int = 1, metric: str = "cosine"
) -> Tensor:
    """SHOT's self-supervised pseudo-labels by weighted k-means (Liang et al., ICML 2020).

    Centroids ``c_k = sum_i w_ik f_i / sum_i w_ik`` with soft weights ``w = probs`` first;
    each row gets the label of its nearest centroid; then ``rounds`` more rounds with one-hot
    weights of the current labels. Returns ``N`` int64 labels, without gradient.

    With ``metric="cosine"`` (distance ``1 - cos``), a constant 1 is appended to every
    feature vector and the result is L2-normalised before anything else, as SHOT does; the
    centroids then always have a positive last coordinate, so never vanish.
    ``metric="euclidean"`` uses the raw features. Only classes that are the argmax of at least
    one row of ``probs`` can be assigned (SHOT's label set), and a class left without members
    in a one-hot round drops out of the following rounds.
    """
    if features.dim() != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ConfigError(f"features must be N x d (2-d), got shape {tuple(features.shape)}")
    _check_logits("probs", probs)
    if features.shape[0] != probs.shape[0]:
        raise ConfigError(
            f"features {tuple(features.shape)} and probs {tuple(probs.shape)} have different "
            "batch sizes; pass one row per sample to both"
        )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ConfigError(f"rounds must be an integer >= 0, got {rounds!r}")
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    f = features.detach()
    if not f.is_floating_point():
        f = f.float()
    p = probs.detach().to(f.dtype)
    if bool((p < 0).any()) or not bool((p.sum(dim=1) > 0).all()):
        raise ConfigError("probs must be non-negative with a positive sum in every row")
    if metric == "cosine":
        f = torch.cat([f, torch.ones_like(f[:, :1])], dim=1)
        f = f / f.norm(dim=1, keepdim=True)

    num_classes = p.shape[1]
    allowed = torch.zeros(num_classes, dtype=torch.bool, device=p.device)
    allowed[p.argmax(dim=1)] = True
    weights = p
    labels = p.argmax(dim=1)
    for _ in range(rounds + 1):
        mass = weights.sum(dim=0)
        active = allowed & (mass > 0)
        centroids = (weights.T @ f) / mass.clamp_min(torch.finfo(f.dtype).tiny).unsqueeze(1)
        if metric == "cosine":
            norms = centroids.norm(dim=1).clamp_min(torch.finfo(f.dtype).tiny)
            distances = 1.0 - (f @ centroids.T) / norms
        else:
            distances = torch.cdist(f, centroids)
        distances = distances.masked_fill(~active, float("inf"))
        labels = distances.argmin(dim=1)
        weights = F.one_hot(labels, num_classes).to(f.dtype)
    return labels
