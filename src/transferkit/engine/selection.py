"""Choosing the kept epoch of a domain-adaptation run without target labels.

After each evaluation the engine scores the model with the label-free validators of
:mod:`transferkit.validators` on a held-out split of the labelled source training set and on
(a fixed sample of) the unlabelled target training inputs. ``select`` names the score that
chooses the kept epoch: ``last`` (the default), a validator, or ``oracle`` (the best
target-test accuracy: it reads target labels, so only when asked for, and the summary says
so). Whatever is selected, :func:`choices` reports for every validator the epoch it would
pick, beside the last epoch and the oracle, so tables show what each choice costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.engine.evaluate import predict
from transferkit.errors import ConfigError
from transferkit.models.features import features_and_logits
from transferkit.validators import VALIDATORS, ValidationData, choose_epoch, score

LAST = "last"
ORACLE = "oracle"
ORACLE_SPLIT = "target_test"
# Rows scored per domain: enough for stable scores, few enough that SND's n x n similarity and
# DEV's logistic regression stay cheap at every epoch.
MAX_ROWS = 2000


def needs_of(select: str) -> frozenset[str]:
    """What ``select`` reads: a validator's needs; nothing for ``last``; ``oracle`` reads the
    target test split (its labels)."""
    if select in VALIDATORS:
        return VALIDATORS[select].needs
    return frozenset({"target_test"}) if select == ORACLE else frozenset()


def holdout_rows(y: Tensor, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(kept rows, held-out rows): ``fraction`` of every class held out, at least one row of
    each class with two or more rows; a fixed seed, so every run of a pair holds out the same
    rows whatever its training seed."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"source_holdout must be in [0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    held: list[Tensor] = []
    for cls in torch.unique(y):
        rows = torch.nonzero(y == cls).flatten()
        rows = rows[torch.randperm(len(rows), generator=gen)]
        n = round(fraction * len(rows))
        if fraction > 0 and n == 0 and len(rows) > 1:
            n = 1
        held.append(rows[:n])
    out = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.long)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[out] = False
    return torch.nonzero(mask).flatten(), out


def sample_rows(n: int, limit: int = MAX_ROWS, seed: int = 0) -> Tensor:
    """At most ``limit`` of ``n`` row indices, a fixed sample."""
    if n <= limit:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@dataclass
class ValidationSets:
    """What validators read: the held-out labelled source rows and unlabelled target rows."""

    source_x: Tensor | None
    source_y: Tensor | None
    target_x: Tensor

    @classmethod
    def build(cls, source_x: Tensor | None, source_y: Tensor | None,
              target_x: Tensor) -> ValidationSets:
        target = target_x[sample_rows(len(target_x))]
        if source_x is None or source_y is None or len(source_x) == 0:
            return cls(None, None, target)
        keep = sample_rows(len(source_x))
        return cls(source_x[keep], source_y[keep], target)


def validator_scores(model: nn.Module, sets: ValidationSets, layer: str | None,
                     device: torch.device, batch_size: int = 1024) -> dict[str, float]:
    """Every validator the sets allow; a validator that fails on the data scores NaN. A model
    whose features cannot be read (TorchScript) gets the validators of its logits only."""

    def read(x: Tensor) -> tuple[Tensor | None, Tensor]:
        try:
            return features_and_logits(model, x, layer, device, batch_size)
        except ConfigError:  # no hookable feature layer: dev is skipped
            return None, predict(model, x, device, batch_size)

    target_features, target_logits = read(sets.target_x)
    data: dict[str, Any] = {"target_logits": target_logits, "target_features": target_features}
    if sets.source_x is not None:
        features, logits = read(sets.source_x)
        data.update(source_logits=logits, source_labels=sets.source_y,
                    source_features=features)
    given = ValidationData(**data)
    scores: dict[str, float] = {}
    for name, validator in VALIDATORS.items():
        if any(getattr(given, f) is None for f in validator.fields):
            continue
        try:
            scores[name] = score(name, given)
        except ConfigError:  # e.g. too few rows for this validator
            scores[name] = math.nan
    return scores


def epoch_score(row: dict[str, Any], select: str) -> float | None:
    """The score ``select`` gives an epoch's metrics row; None when it was not evaluated."""
    if select == ORACLE:
        value = row.get("eval", {}).get(ORACLE_SPLIT, {}).get("accuracy")
    else:
        value = row.get("validators", {}).get(select)
    return None if value is None else float(value)


def best_epoch(history: Sequence[dict[str, Any]], select: str) -> int | None:
    """Index of the epoch ``select`` prefers (ties: the earlier); None when none scored."""
    scored = [{} if (v := epoch_score(row, select)) is None else {select: v} for row in history]
    if not any(scored):
        return None
    try:
        return choose_epoch(scored, select, allow_target_labels=select == ORACLE)
    except ConfigError:  # every score NaN
        return None


def choices(history: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For ``last``, every validator in the history and the ``oracle``: the epoch it picks
    and the test accuracies of that epoch."""
    evaluated = [i for i, row in enumerate(history) if "eval" in row]
    if not evaluated:
        return {}
    picks: dict[str, int | None] = {LAST: evaluated[-1]}
    names = sorted({name for row in history for name in row.get("validators", {})})
    for name in [*names, ORACLE]:
        picks[name] = best_epoch(history, name)
    out: dict[str, dict[str, Any]] = {}
    for name, index in picks.items():
        if index is None:
            continue
        row = history[index]
        out[name] = {"epoch": row["epoch"],
                     **{split: v["accuracy"] for split, v in row.get("eval", {}).items()}}
    if ORACLE in out:
        out[ORACLE]["note"] = ("best target-test accuracy: reads target labels, reported for "
                               "reference, never used to choose unless select=oracle")
    return out
