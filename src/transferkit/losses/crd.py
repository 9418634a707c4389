"""Tian, Krishnan & Isola, ICLR 2020, "Contrastive Representation Distillation" (CRD).

Student and teacher features are embedded into a shared unit sphere (:class:`Embed`). For
every sample ``i`` the student embedding is scored against the teacher memory bank and the
teacher embedding against the student memory bank, at row ``i`` (the positive) and at ``K``
rows drawn as negatives (:class:`ContrastMemory`). The scores
``exp(<bank row, v> / T) / Z`` are read as unnormalised probabilities and trained with the
noise-contrastive estimation loss of :func:`nce_loss`; :class:`CRDLoss` composes the pieces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError


def nce_loss(scores: Tensor, n_data: int, eps: float = 1e-7) -> Tensor:
    """CRD's NCE loss over ``N x (K+1)`` scores, column 0 the positive (Tian et al. 2020).

    With noise ``P_n = 1/n_data`` and ``m = K`` noise samples per positive:
    ``P(D=1 | x_0) = x_0 / (x_0 + m P_n + eps)`` and ``P(D=0 | x_k) = m P_n / (x_k + m P_n + eps)``;
    the loss is ``-(sum_i log P(D=1 | x_i0) + sum_{i,k>=1} log P(D=0 | x_ik)) / N``. ``eps``
    (reference: 1e-7) only guards the division. An ``N x (K+1) x 1`` input is accepted too.
    """
    if scores.dim() == 3 and scores.shape[2] == 1:
        scores = scores.squeeze(2)
    if scores.dim() != 2 or scores.shape[0] < 1 or scores.shape[1] < 2:
        raise ConfigError(
            f"NCE scores must be N x (K+1) with N >= 1 and K >= 1, got {tuple(scores.shape)}; "
            "column 0 is the positive, the rest are negatives"
        )
    if isinstance(n_data, bool) or not isinstance(n_data, int) or n_data < 1:
        raise ConfigError(f"NCE n_data must be the dataset size (an int >= 1), got {n_data!r}")
    m_pn = (scores.shape[1] - 1) / float(n_data)
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + m_pn + eps))
    log_d0 = torch.log(m_pn / (neg + m_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class Embed(nn.Module):
    """``normalize(W x + b)``: a linear projection of the flattened features to ``feat_dim``
    (reference default 128), then L2 normalisation per sample.

    ``N x ...`` inputs are flattened to ``N x dim_in``. :func:`torch.nn.functional.normalize`
    (norm clamped at 1e-12) keeps an all-zero row finite instead of dividing by zero.
    """

    def __init__(self, dim_in: int, feat_dim: int = 128) -> None:
        super().__init__()
        if dim_in < 1 or feat_dim < 1:
            raise ConfigError(
                f"CRD embedding sizes must be >= 1, got dim_in={dim_in}, feat_dim={feat_dim}"
            )
        self.dim_in = dim_in
        self.linear = nn.Linear(dim_in, feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.dim_in:
            raise ConfigError(
                f"CRD embedding got features of width {x.shape[1]} (flattened), built for "
                f"{self.dim_in}; build Embed with dim_in = the flattened feature size"
            )
        return F.normalize(self.linear(x), dim=1)


def _check_index(index: Tensor, n_data: int, what: str = "index") -> None:
    if what == "index" and index.dim() != 1:
        raise ConfigError(
            f"CRD index must be a vector of N dataset positions, got shape {tuple(index.shape)}"
        )
    if index.dtype not in (torch.int64, torch.int32):
        raise ConfigError(
            f"CRD {what} must be an integer tensor of dataset positions, got {index.dtype}; "
            "pass the sample indices as torch.long"
        )
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_data):
        raise ConfigError(
            f"CRD {what} has values outside [0, {n_data}); it must hold dataset positions "
            "and the memory must be built with n_data = the training set size"
        )


# Score the whole memory bank when it has at most this many times the sampled columns.
DENSE_FACTOR = 8

class ContrastMemory(nn.Module):
    """The two memory banks of CRD and the scores of positives and sampled negatives.

    Buffers ``memory_s`` and ``memory_t`` (``n_data x feat_dim``) start uniform in
    ``[-stdv, stdv]``, ``stdv = 1/sqrt(feat_dim/3)`` (reference init; drawn from the global RNG),
    and hold one student and one teacher embedding per training sample.

    ``forward(v_s, v_t, index, contrast_idx)`` returns ``(out_s, out_t)``, both ``N x (K+1)``::

        out_t[i, j] = exp(<memory_s[idx_ij], v_t[i]> / T) / Z_t
        out_s[i, j] = exp(<memory_t[idx_ij], v_s[i]> / T) / Z_s

    with ``idx_i0 = index[i]`` (the positive) and ``idx_ij, j >= 1`` the negatives. ``Z_s`` and
    ``Z_t`` are set once, from the first batch, to ``mean(unnormalised out) * n_data`` and then
    stay fixed (reference behaviour); they are buffers (``z_s``, ``z_t``; -1 = not yet set) so a
    checkpoint keeps them. Under DDP every rank sets them from its own first batch; averaging
    them across ranks after that call (or DDP's buffer broadcast) makes them agree. Scores are
    computed in float32 at least, since ``exp(1/T)`` overflows float16 for the default T.

    Negatives (:meth:`contrast_index`) are drawn uniformly over ``[0, n_data)`` with
    replacement from the given ``torch.Generator`` or the global torch RNG, so
    ``torch.manual_seed`` reproduces them. As in the reference (an alias sampler over uniform
    weights), a negative may equal the positive; that is the noise distribution
    ``P_n = 1/n_data`` that :func:`nce_loss` assumes. ``exclude_positive=True`` instead draws
    uniformly over the other ``n_data - 1`` rows.

    ``k`` (reference default 16384) is clamped to ``n_data - 1``: a sample has only
    ``n_data - 1`` others, so more draws would only repeat rows at extra cost, and the noise
    ratio ``K * P_n`` of the NCE loss would exceed 1 (noise outweighing data). :attr:`k` is
    the value used, :attr:`requested_k` the one asked for.

    :meth:`update` is not called by ``forward``: the owner calls it after scoring (with the
    rows gathered from every DDP rank, if any), which is the reference's order.
    """

    memory_s: Tensor
    memory_t: Tensor
    z_s: Tensor
    z_t: Tensor

    def __init__(
        self,
        feat_dim: int,
        n_data: int,
        k: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        exclude_positive: bool = False,
    ) -> None:
        super().__init__()
        if feat_dim < 1 or n_data < 2 or k < 1:
            raise ConfigError(
                f"CRD memory needs feat_dim >= 1, n_data >= 2 and k >= 1, got feat_dim={feat_dim},"
                f" n_data={n_data}, k={k}; n_data is the number of training samples"
            )
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"CRD temperature must be a finite number > 0, got {temperature!r}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"CRD memory momentum must be in [0, 1), got {momentum!r}")
        self.feat_dim, self.n_data = feat_dim, n_data
        self.requested_k = k
        self.k = min(k, n_data - 1)
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.exclude_positive = exclude_positive
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def contrast_index(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``N x (K+1)`` memory rows: column 0 is ``index``, columns 1..K uniform negatives."""
        _check_index(index, self.n_data)
        return self._draw(index, generator)

    def _draw(self, index: Tensor, generator: torch.Generator | None) -> Tensor:
        device = self.memory_s.device
        draw_on = generator.device if generator is not None else device
        n = index.shape[0]
        high = self.n_data - 1 if self.exclude_positive else self.n_data
        neg = torch.randint(0, high, (n, self.k), generator=generator, device=draw_on).to(device)
        index = index.to(device=device, dtype=torch.long)
        if self.exclude_positive:  # shift [index, n_data-1) up by one: uniform over the others
            neg = neg + (neg >= index[:, None]).long()
        return torch.cat([index[:, None], neg], dim=1)

    def _check_embeddings(self, v_s: Tensor, v_t: Tensor, index: Tensor) -> None:
        n = index.shape[0] if index.dim() == 1 else -1
        for name, v in (("student", v_s), ("teacher", v_t)):
            if v.dim() != 2 or v.shape != (n, self.feat_dim):
                raise ConfigError(
                    f"CRD {name} embeddings {tuple(v.shape)} must be N x {self.feat_dim} for an "
                    f"index of shape {tuple(index.shape)}; embed both models' features with Embed"
                )

    def forward(
        self,
        v_s: Tensor,
        v_t: Tensor,
        index: Tensor,
        contrast_idx: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(out_s, out_t)`` for ``N x feat_dim`` embeddings; ``contrast_idx`` (default: drawn by
        :meth:`contrast_index`) must have the positive ``index`` in column 0."""
        _check_index(index, self.n_data)
        self._check_embeddings(v_s, v_t, index)
        if contrast_idx is None:
            contrast_idx = self._draw(index, generator)
        else:
            if contrast_idx.dim() != 2 or contrast_idx.shape[0] != index.shape[0] or (
                contrast_idx.shape[1] < 2
            ):
                raise ConfigError(
                    f"CRD contrast_idx {tuple(contrast_idx.shape)} must be N x (K+1) with K >= 1 "
                    f"for an index of shape {tuple(index.shape)}; column 0 is the positive"
                )
            _check_index(contrast_idx, self.n_data, "contrast_idx")
            contrast_idx = contrast_idx.to(device=self.memory_s.device, dtype=torch.long)
        n, cols = contrast_idx.shape
        flat = contrast_idx.reshape(-1)
        dtype = torch.promote_types(v_s.dtype, torch.float32)
        # Outside autocast: exp(<m, v> / T) reaches exp(1/0.07) ~ 1.6e6, past float16's range.
        with torch.autocast(device_type=self.memory_s.device.type, enabled=False):
            t = self.temperature
            if self.n_data <= DENSE_FACTOR * cols:
                # Score against the whole bank, then pick the sampled columns: the same
                # numbers without materialising N x (K+1) x D gathered rows (10x faster on CPU
                # at K = 16384 for 60,000 rows).
                # (copies: update() rewrites the banks in place before the backward pass)
                dots_t = v_t.to(dtype) @ self.memory_s.to(dtype, copy=True).T
                dots_s = v_s.to(dtype) @ self.memory_t.to(dtype, copy=True).T
                out_t = torch.exp(dots_t.gather(1, contrast_idx) / t)
                out_s = torch.exp(dots_s.gather(1, contrast_idx) / t)
            else:
                rows_s = self.memory_s.index_select(0, flat).view(n, cols, -1).to(dtype)
                rows_t = self.memory_t.index_select(0, flat).view(n, cols, -1).to(dtype)
                out_t = torch.exp(torch.bmm(rows_s, v_t.to(dtype).unsqueeze(2)).squeeze(2) / t)
                out_s = torch.exp(torch.bmm(rows_t, v_s.to(dtype).unsqueeze(2)).squeeze(2) / t)
        with torch.no_grad():  # set once (where Z < 0, i.e. unset), without a host sync
            for z, out in ((self.z_s, out_s), (self.z_t, out_t)):
                z.copy_(torch.where(z < 0, out.mean().to(z) * self.n_data, z))
        # Copies: a later call's in-place write to the buffers must not touch this graph.
        return out_s / self.z_s.to(dtype).clone(), out_t / self.z_t.to(dtype).clone()

    @torch.no_grad()
    def update(self, index: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        """``memory[i] <- normalize(momentum * memory[i] + (1 - momentum) * v)`` for both banks.

        A plain function of the given rows (no gradient). If ``index`` repeats a position (a
        DDP sampler pads with repeats), the last occurrence is used, on every device alike.
        """
        _check_index(index, self.n_data)
        self._check_embeddings(v_s, v_t, index)
        device = self.memory_s.device
        index = index.to(device=device, dtype=torch.long)
        uniq, inverse = torch.unique(index, return_inverse=True)
        order = torch.arange(index.shape[0], device=device)
        last = torch.full_like(uniq, -1).scatter_reduce(0, inverse, order, reduce="amax")
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            rows = bank.index_select(0, uniq) * self.momentum
            rows = rows + (1.0 - self.momentum) * v.detach()[last].to(bank)
            bank.index_copy_(0, uniq, F.normalize(rows, dim=1))


class CRDLoss(nn.Module):
    """``nce(out_s) + nce(out_t)``: the CRD objective with its embeddings and memory.

    ``embed_s``/``embed_t`` (:class:`Embed`) map flattened student/teacher features to
    ``feat_dim``; both are trained (the teacher network itself is not: pass detached teacher
    features). ``forward(fs, ft, index)`` needs ``index``, the dataset positions of the batch.
    With ``update_memory=True`` it updates the banks with this batch's embeddings after
    scoring; a DDP owner passes ``update_memory=False, return_embeddings=True``, gathers
    ``index`` and the returned embeddings from all ranks and calls ``memory.update``.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        n_data: int,
        feat_dim: int = 128,
        k: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        exclude_positive: bool = False,
    ) -> None:
        super().__init__()
        self.embed_s = Embed(student_dim, feat_dim)
        self.embed_t = Embed(teacher_dim, feat_dim)
        self.memory = ContrastMemory(feat_dim, n_data, k, temperature, momentum, exclude_positive)
        self.n_data = n_data

    def contrast_index(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``N x (K+1)`` rows for ``index``: the positive, then ``K`` sampled negatives."""
        return self.memory.contrast_index(index, generator)

    def forward(
        self,
        fs: Tensor,
        ft: Tensor,
        index: Tensor,
        contrast_idx: Tensor | None = None,
        generator: torch.Generator | None = None,
        update_memory: bool = True,
        return_embeddings: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        if fs.shape[0] != ft.shape[0]:
            raise ConfigError(
                f"CRD student {tuple(fs.shape)} and teacher {tuple(ft.shape)} features have "
                "different batch sizes; feed both models the same batch"
            )
        v_s, v_t = self.embed_s(fs), self.embed_t(ft)
        out_s, out_t = self.memory(v_s, v_t, index, contrast_idx, generator)
        loss = nce_loss(out_s, self.n_data) + nce_loss(out_t, self.n_data)
        if update_memory:
            self.memory.update(index, v_s, v_t)
        if return_embeddings:
            return loss, v_s.detach(), v_t.detach()
        return loss
