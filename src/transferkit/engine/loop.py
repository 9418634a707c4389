"""One training loop for every method (distillation, adaptation, or both).

Per step: index the in-memory tensors, run the model once on source (+ target) inputs, let
each method add its named losses, sum, backward, step. Per epoch: evaluate, append a line
to ``metrics.jsonl`` and write ``checkpoint.pt`` atomically (rank 0 only under DDP).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.config import TrainConfig
from transferkit.data.base import Split
from transferkit.engine import distributed
from transferkit.engine.augment import random_translate
from transferkit.engine.batches import epoch_batches, rank_slice
from transferkit.engine.checkpoint import atomic_write, load_torch, load_weights, save_torch
from transferkit.engine.evaluate import evaluate_split
from transferkit.engine.objective import Objective
from transferkit.engine.optim import (
    apply_max_norm,
    build_optimizer,
    learning_rate,
    set_learning_rate,
    weight_matrices,
)
from transferkit.engine.progress import ProgressBar
from transferkit.errors import CheckpointError, ConfigError, NonFiniteLossError
from transferkit.methods.base import Batch, Method, TrainInfo

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
# Settings that may differ between a run and its resumption without changing its numbers.
RESUME_FREE = {"device", "progress", "eval_batch_size"}


@dataclass
class TrainData:
    """Training tensors: inputs, labels (None when unlabelled) and optional target inputs."""

    x: Tensor
    y: Tensor | None
    num_classes: int
    x_target: Tensor | None = None

    def class_counts(self) -> Tensor | None:
        if self.y is None:
            return None
        return torch.bincount(self.y, minlength=self.num_classes)


class Trainer:
    """Trains ``model`` with the sum of ``methods``' losses; see :meth:`fit`."""

    def __init__(
        self,
        model: nn.Module,
        methods: list[Method],
        data: TrainData,
        config: TrainConfig,
        evals: dict[str, Split] | None = None,
        run_dir: str | Path | None = None,
        feature_layer: str | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.evals = evals or {}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = distributed.local_device(config.device)
        distributed.init_from_env(self.device)
        self._check_data(methods)
        self.objective = Objective(model, methods, feature_layer)
        self.steps_per_epoch = config.steps_per_epoch or max(1, len(data.x) // config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        torch.manual_seed(config.seed)
        info = TrainInfo(
            num_classes=data.num_classes,
            feature_dim=self._feature_dim(model) if self.objective.needs_features else None,
            class_counts=data.class_counts(),
            total_steps=self.total_steps,
            x=data.x,
            x_target=data.x_target,
            jitter=config.jitter,
        )
        self.objective.to(self.device)  # methods may compute on the device in setup
        for method in methods:
            method.setup(info)
        self.objective.to(self.device)  # and move the modules setup created
        params = [p for p in self.objective.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters")
        self.optimizer = build_optimizer(params, config.optim)
        self.max_norm_weights = weight_matrices(model) if config.optim.max_norm else []
        self.step_fn: nn.Module = self.objective
        if distributed.world_size() > 1:
            self.step_fn = nn.parallel.DistributedDataParallel(self.objective)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.global_step = 0

    @property
    def model(self) -> nn.Module:
        return self.objective.model

    def _check_data(self, methods: list[Method]) -> None:
        names = ", ".join(m.name for m in methods)
        if not methods:
            raise ConfigError("give at least one method")
        if any(m.needs_labels for m in methods) and self.data.y is None:
            raise ConfigError(f"methods [{names}] need labels but the training data has none")
        if any(m.needs_target for m in methods) and self.data.x_target is None:
            raise ConfigError(f"methods [{names}] need target inputs: train on a domain pair")

    @torch.no_grad()
    def _feature_dim(self, model: nn.Module) -> int:
        was_training = model.training
        model.eval()
        model(self.data.x[:2])
        model.train(was_training)
        assert self.objective.tap is not None
        return int(self.objective.tap.value.shape[1])

    # ---- checkpoints -------------------------------------------------------------------
    def _resume_key(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.model_dump().items() if k not in RESUME_FREE}

    def state(self, epoch: int, rank_rngs: list[Any] | None = None) -> dict[str, Any]:
        """Everything a resume needs; ``rank_rngs`` holds every rank's RNG states."""
        return {
            "epoch": epoch,
            "step": self.global_step,
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rank_rngs": rank_rngs or [_rng_state()],
            "config": self._resume_key(),
            "history": self.history,
        }

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``checkpoint.pt`` from the run directory; False when there is none yet."""
        path = Path(path) if path else (self.run_dir / CHECKPOINT if self.run_dir else None)
        if path is None or not path.exists():
            return False
        state = load_torch(path)
        if state.get("config") != self._resume_key():
            old, new = state.get("config") or {}, self._resume_key()
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise CheckpointError(
                f"cannot resume from {path}: settings differ ({', '.join(diff)}); "
                "resume with the settings of the interrupted run or start a new run directory"
            )
        load_weights(self.objective, state["objective"], str(path), "this model and its methods")
        self.optimizer.load_state_dict(state["optimizer"])
        rank, rngs = distributed.rank(), state["rank_rngs"]
        if len(rngs) == distributed.world_size():
            _set_rng_state(rngs[rank])
        else:  # saved with another number of ranks: rank 0's state, other ranks reseeded
            _set_rng_state(rngs[0])
            if rank:
                torch.manual_seed(_rank_seed(self.config.seed, rank) + int(state["epoch"]))
        self.start_epoch = int(state["epoch"])
        self.global_step = int(state["step"])
        self.history = list(state["history"])
        if self.run_dir is not None and distributed.is_main():
            self._rewrite_metrics()
        return True

    def _rewrite_metrics(self) -> None:
        """Make ``metrics.jsonl`` match the checkpoint (drop lines of a lost epoch)."""
        assert self.run_dir is not None
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write(self.run_dir / METRICS, lambda f: f.write(text.encode()))

    # ---- training ----------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train the remaining epochs; returns one metrics row per epoch."""
        cfg = self.config
        if self.start_epoch == 0:  # ranks draw different dropout masks and shifts
            torch.manual_seed(_rank_seed(cfg.seed, distributed.rank()))
        main = distributed.is_main()
        with ProgressBar(cfg.progress and main, cfg.epochs) as bar:
            for epoch in range(self.start_epoch, cfg.epochs):
                row = self._train_epoch(epoch, bar)
                if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                    row["eval"] = {
                        name: evaluate_split(self.model, split, self.device, cfg.eval_batch_size)
                        for name, split in self.evals.items()
                    }
                    bar.status = _status(row)
                self.history.append(row)
                if self.run_dir is not None:  # the same on every rank: the gather is collective
                    rank_rngs = distributed.all_gather_object(_rng_state())
                    if main:
                        with open(self.run_dir / METRICS, "a") as handle:
                            handle.write(json.dumps(row) + "\n")
                        save_torch(self.state(epoch + 1, rank_rngs), self.run_dir / CHECKPOINT)
                distributed.barrier()
        return self.history

    def close(self) -> None:
        """Remove the feature hook so the trained model is returned as it came."""
        if self.objective.tap is not None:
            self.objective.tap.remove()

    def _train_epoch(self, epoch: int, bar: ProgressBar) -> dict[str, Any]:
        cfg, data, device = self.config, self.data, self.device
        rank, world = distributed.rank(), distributed.world_size()
        steps = self.steps_per_epoch
        order = rank_slice(
            epoch_batches(len(data.x), cfg.batch_size, steps, cfg.seed, epoch), rank, world
        )
        target_order = None
        if self.objective.needs_target and data.x_target is not None:
            target_bs = cfg.target_batch_size or cfg.batch_size
            target_order = rank_slice(
                epoch_batches(len(data.x_target), target_bs, steps, cfg.seed, epoch, stream=1),
                rank,
                world,
            )
        x, y, xt = data.x, data.y, data.x_target
        sums: dict[str, Tensor] = {}
        self.objective.train()
        bar.start_epoch(epoch + 1, steps)
        constant_lr = cfg.optim.schedule == "constant"
        if constant_lr:
            set_learning_rate(self.optimizer, cfg.optim.lr)
        lr = cfg.optim.lr
        start = time.perf_counter()
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
        for step in range(steps):
            if not constant_lr:
                lr = learning_rate(cfg.optim, self.global_step, epoch, self.total_steps)
                set_learning_rate(self.optimizer, lr)
            idx = order[step]
            batch = Batch(
                x[idx].to(device, non_blocking=True),
                None if y is None else y[idx].to(device, non_blocking=True),
                None if target_order is None else xt[target_order[step]].to(device),
                idx,
                None if target_order is None else target_order[step],
            )
            if cfg.jitter:
                batch.x = random_translate(batch.x, cfg.jitter)
            with autocast:
                losses = self.step_fn(batch, self.global_step / self.total_steps)
            total = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            value = total.item()
            # Every rank stops at the same step, also when only one rank's batch gave NaN
            # (DDP has already averaged its gradients into everyone's).
            if distributed.any_rank(not math.isfinite(value), device):
                self._non_finite(epoch, step, losses)
            self.optimizer.step()
            if self.max_norm_weights:
                apply_max_norm(self.max_norm_weights, cfg.optim.max_norm)
            self.global_step += 1
            for key, term in losses.items():
                detached = term.detach()
                sums[key] = sums[key] + detached if key in sums else detached
            if bar.due():
                bar.update(step + 1, _loss_status(losses, bar.status))
        bar.update(steps)
        names = sorted(sums)
        means = torch.stack([sums[k].float() for k in names]).cpu().double() / steps
        means = distributed.all_reduce_sum(means) / world
        train = {k: float(v) for k, v in zip(names, means.tolist(), strict=True)}
        train["loss"] = float(sum(train.values()))
        return {
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": lr,
            "train": train,
            **self.objective.method_metrics(),
            "seconds": round(time.perf_counter() - start, 3),
        }

    def _non_finite(self, epoch: int, step: int, losses: dict[str, Tensor]) -> None:
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        if all(math.isfinite(v.item()) for v in losses.values()):
            terms = f"on another rank; here {terms}"
        kept = (
            f"the last good checkpoint (epoch {epoch}) is kept in {self.run_dir}"
            if self.run_dir is not None and epoch > 0
            else "no checkpoint was written yet"
        )
        distributed.shutdown(synchronize=True)  # every rank is here, at the same step
        raise NonFiniteLossError(
            f"loss became non-finite at epoch {epoch + 1}, step {step + 1} ({terms}); {kept}; "
            "lower the learning rate or check the inputs for NaN"
        )


def _rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps ``seed`` (a one-process run is unchanged); other ranks get their own."""
    return seed if rank == 0 else (seed * 1_000_003 + rank) % 2**63


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loss_status(losses: dict[str, Tensor], previous: str) -> str:
    live = " ".join(f"{k}={v.item():.3f}" for k, v in losses.items())
    evals = previous.split(" | ", 1)[-1] if " | " in previous else ""
    return f"{live} | {evals}" if evals else live


def _status(row: dict[str, Any]) -> str:
    evals = " ".join(f"{k}={v['accuracy']:.3f}" for k, v in row.get("eval", {}).items())
    return f"loss={row['train']['loss']:.3f} | {evals}" if evals else ""
