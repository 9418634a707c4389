"""Validated settings for training runs (pydantic 2).

A field of the wrong type or range raises :class:`ConfigError` with one line that names the
field, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from transferkit.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OptimConfig(_Strict):
    """Optimizer and learning-rate schedule.

    Schedules: ``constant``; ``step``: ``lr * gamma^floor(epoch / step_size)``; ``inverse``
    (DANN's): ``lr * (1 + inv_alpha * t)^(-inv_beta)`` at step t; ``cosine`` over all steps.
    ``max_norm`` (Srivastava et al. 2014, with dropout): after every step each unit's incoming
    weight vector ``w`` becomes ``min(1, c / ||w||_2) * w``.
    """

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "inverse", "cosine"] = "constant"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    inv_alpha: float = Field(0.001, ge=0)
    inv_beta: float = Field(0.75, ge=0)
    max_norm: float | None = Field(None, gt=0)


class TrainConfig(_Strict):
    """How long and how to train; ``steps_per_epoch`` defaults to ``len(train) // batch_size``."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    target_batch_size: int | None = Field(None, ge=1)
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = Field(1024, ge=1)
    eval_every: int = Field(1, ge=1)
    progress: bool = True
    amp: bool = False
    jitter: int = Field(0, ge=0, description="random translation of up to N pixels (images)")
    optim: OptimConfig = Field(default_factory=OptimConfig)


def validate(model: type[BaseModel], data: dict[str, Any], where: str = "config") -> Any:
    """Build ``model`` from ``data``, turning pydantic's report into one clear line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def format_validation_error(exc: ValidationError, where: str = "config") -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{field}: {err['msg']}{shown}")
    return f"{where}: " + "; ".join(parts)


class ModelSpec(_Strict):
    """A registered model name (or ``package.module:factory``) with its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class RunConfig(_Strict):
    """Everything one CLI run (or YAML file) asks for; saved as ``config.yaml`` in the run."""

    command: Literal["train", "distill", "adapt"]
    data: str = "digits"
    data_dir: str | None = None
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="mlp"))
    method: str = "supervised"
    method_options: dict[str, Any] = Field(default_factory=dict)
    teacher: ModelSpec | None = None
    teacher_checkpoint: str | None = None
    teacher_train: TrainConfig | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str | None = None
    feature_layer: str | None = None
