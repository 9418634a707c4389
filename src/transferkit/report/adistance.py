"""Proxy A-distance (Ben-David et al., NeurIPS 2006; as used by Ganin et al., JMLR 2016).

A linear classifier learns to tell source features from target features on one half of a
balanced sample and is tested on the other half; with its test error ``e``,
``d_A = 2 (1 - 2 e)``: 0 when the domains cannot be told apart, 2 when they separate
perfectly (an error above 0.5 is counted as 0.5, so ``d_A`` stays in ``[0, 2]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from transferkit.errors import ConfigError

MAX_ROWS = 2000  # per domain


def _balanced(source: Tensor, target: Tensor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    n = min(len(source), len(target), MAX_ROWS)
    s = source[torch.randperm(len(source), generator=gen)[:n]]
    t = target[torch.randperm(len(target), generator=gen)[:n]]
    x = torch.cat([s, t]).double().numpy()
    y = np.concatenate([np.ones(n), np.zeros(n)])
    return x, y


def proxy_a_distance(source: Tensor, target: Tensor, seed: int = 0) -> dict[str, float]:
    """``{"a_distance", "domain_error", "rows"}`` for two ``N x D`` feature matrices;
    ``rows`` (an int): how many rows the domain classifier used, both domains and both halves
    together (``2 * min(N_source, N_target, MAX_ROWS)``)."""
    from sklearn.linear_model import LogisticRegression

    for name, x in (("source", source), ("target", target)):
        if x.dim() != 2:
            raise ConfigError(f"proxy A-distance needs N x D {name} features, got shape "
                              f"{tuple(x.shape)}")
        if len(x) < 4:
            raise ConfigError(f"proxy A-distance needs N x D {name} features with N >= 4, got "
                              f"shape {tuple(x.shape)}: too few {name} rows; use more rows "
                              "(--data-opt test=all uses every row of a data file, not only "
                              "its held-out test rows)")
    if source.shape[1] != target.shape[1]:
        raise ConfigError(f"source features {tuple(source.shape)} and target features "
                          f"{tuple(target.shape)} differ in width")
    x, y = _balanced(source, target, seed)
    if not np.isfinite(x).all():
        raise ConfigError("the features hold NaN or infinity; the model has diverged")
    order = np.random.default_rng(seed).permutation(len(y))
    half = len(order) // 2
    train, test = order[:half], order[half:]
    if len(np.unique(y[train])) < 2:  # a few rows may draw one domain only: split each alike
        ones, zeros = order[y[order] == 1], order[y[order] == 0]
        train = np.concatenate([ones[:len(ones) // 2], zeros[:len(zeros) // 2]])
        test = np.concatenate([ones[len(ones) // 2:], zeros[len(zeros) // 2:]])
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8
    x = (x - mean) / std
    classifier = LogisticRegression(C=1.0, max_iter=2000)
    classifier.fit(x[train], y[train])
    error = float((classifier.predict(x[test]) != y[test]).mean())
    return {"a_distance": 2.0 * (1.0 - 2.0 * min(error, 0.5)), "domain_error": error,
            "rows": len(y)}


def rows_words(dataset: Any) -> str:
    """Which of ``dataset``'s rows its test split (the rows inspect and the report measure)
    holds, truthfully: ``12 test rows``, ``all 60 rows (test=all)``, ``all 3 rows
    (no labels)`` or ``5 labelled test rows``."""
    test, train = dataset.test.x, dataset.train.x
    n = len(test)
    same = test is train or (test.data_ptr() == train.data_ptr() and test.shape == train.shape)
    if not dataset.labelled:
        return f"all {n} rows (no labels)"
    if same:
        return f"all {n} rows (test=all)"
    if not dataset.train_labelled:
        return f"{n} labelled test rows"
    return f"{n} test rows"


def feature_rows(pair: Any) -> dict[str, str]:
    """``{"source": ..., "target": ...}``: the rows of a domain pair whose features are
    measured (its test splits), in words (see :func:`rows_words`)."""
    return {"source": rows_words(pair.source), "target": rows_words(pair.target)}
