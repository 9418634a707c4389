"""One training loop for every method (distillation, adaptation, or both).

Per step: index the in-memory tensors, run the model once on source (+ target) inputs, let
each method add its named losses, sum, backward, step. Per epoch: evaluate, append a line
to ``metrics.jsonl`` and write ``checkpoint.pt`` atomically (rank 0 only under DDP).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.config import TrainConfig, settings_diff
from transferkit.data.augment import random_crop_flip, random_flip, random_translate
from transferkit.data.base import Split
from transferkit.data.inputs import InputSpec
from transferkit.engine import distributed
from transferkit.engine.batches import epoch_batches, rank_slice
from transferkit.engine.checkpoint import load_torch, load_weights, save_torch, write_text
from transferkit.engine.compiled import CompiledStep, fused_optimizer_ok
from transferkit.engine.evaluate import evaluate_split, predict
from transferkit.engine.memory_format import choose as choose_memory_format
from transferkit.engine.memory_format import to_channels_last
from transferkit.engine.objective import Objective
from transferkit.engine.optim import (
    apply_max_norm,
    build_optimizer,
    learning_rate,
    lr_factor,
    resolve_lr_factors,
    set_learning_rate,
    weight_matrices,
)
from transferkit.engine.placement import move, placement
from transferkit.engine.precision import choose_precision
from transferkit.engine.progress import ProgressBar, note
from transferkit.engine.selection import (
    LAST,
    ValidationSets,
    best_epoch,
    needs_of,
    validator_scores,
)
from transferkit.engine.tensorboard import ScalarLog, require_tensorboard
from transferkit.errors import (
    CheckpointError,
    ConfigError,
    DivergenceError,
    NonFiniteLossError,
    TransferkitError,
)
from transferkit.files import json_text
from transferkit.methods.base import Batch, Method, Phase, Tap, TrainInfo
from transferkit.models.base import module_modes, restore_modes
from transferkit.models.layers import resolve_layer

CHECKPOINT = "checkpoint.pt"
SELECTED = "selected.pt"  # the weights of the epoch that ``select`` prefers
METRICS = "metrics.jsonl"
# Settings that may differ between a run and its resumption: they do not change its numbers,
# or (``epochs``) a resumed run may be extended.
# May change at a resume: where and how the arithmetic runs, and what is shown or logged.
RESUME_FREE = {"device", "amp", "compile", "data_on_device", "memory_format", "progress",
               "eval_batch_size", "epochs", "check_divergence", "tensorboard"}
# On a GPU, reading the loss back every step stalls the queue of kernels; the finiteness
# check there looks every this many steps (and at each epoch's end) instead.
FINITE_CHECK_EVERY_GPU = 25
# Training tensors stay on the GPU (data_on_device=auto) when they take at most this share
# of its free memory.
RESIDENT_SHARE = 0.25
# A training loss this many times the untrained model's (at least EXPLODE_FLOOR) has diverged.
EXPLODE_FACTOR = 1e3
EXPLODE_FLOOR = 0.1
# Predictions collapsed: one class takes this share of a test split whose largest class is at
# most COLLAPSE_MAX_TRUE_SHARE of it.
COLLAPSE_SHARE = 0.9
COLLAPSE_MAX_TRUE_SHARE = 0.5
# Fewer steps than this leave a model merely untrained (often one class), not collapsed.
COLLAPSE_MIN_STEPS = 100
ACCEPT_DIVERGENCE = "--no-divergence-check, or check_divergence=False in Python,"


@dataclass
class TrainData:
    """Training tensors: inputs, labels (None when unlabelled) and optional target inputs.

    ``inputs`` is their convention (the Dataset's or DomainPair's ``inputs``; None: unknown):
    jitter and augment pad with the stored value of a raw 0 pixel, -1 on data in [-1, 1].
    """

    x: Tensor
    y: Tensor | None
    num_classes: int
    x_target: Tensor | None = None
    inputs: InputSpec | None = None

    @property
    def black(self) -> float:
        """The stored value of a raw 0 (``(0 - mean) / std``), as torchvision pads raw images
        before normalising; 0 when the convention is unknown."""
        return 0.0 if self.inputs is None else self.inputs.range[0]

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
        validation: ValidationSets | None = None,
    ) -> None:
        self.config = config
        self.validation = validation
        if config.tensorboard:  # before anything is built or trained
            require_tensorboard()
            if run_dir is None:
                raise ConfigError("tensorboard=True writes into the run directory: give out=")
        if config.select != LAST and validation is None:
            raise ConfigError(
                f"select={config.select} chooses an epoch by scores on target data; only "
                "adapt computes them (a domain pair): leave select at 'last' here"
            )
        if validation is not None and validation.source_x is None and (
                "source_val" in needs_of(config.select)):
            why = ("source_holdout=0: hold some out (CLI: --source-holdout 0.1) or"
                   if config.source_holdout == 0 else "a source-free run reads no source data:")
            raise ConfigError(
                f"select={config.select} reads held-out source rows, and this run has none "
                f"({why} choose entropy, im or snd)"
            )
        self.data = data
        self.evals = evals or {}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = distributed.local_device(config.device)
        distributed.init_from_env(self.device)
        self.precision = choose_precision(config.amp, self.device)  # fp32 or native bf16
        if self.precision.requested != "off":
            note(f"precision: {self.precision.reason}", config.progress and distributed.is_main())
        self._check_data(methods)
        self.fill = data.black  # jitter's and augment's padding: the data's black
        torch.manual_seed(config.seed)  # before networks that methods create (DML's peers)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.objective = Objective(model, methods, feature_layer, data.x[:2].to(device))
        self.steps_per_epoch = config.steps_per_epoch or max(1, len(data.x) // config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.objective.to(self.device)  # methods may compute on the device in setup
        trains = any(m.trains_network for m in methods)
        try:
            with _batchnorm_values(self.objective) as bn_values:
                tap_shapes = self._probe_taps()
            if trains:  # before setup changes the model (adabn's statistics, tent's freezing)
                self._check_batchnorm(bn_values)
        except TransferkitError:
            self.objective.remove_hooks()  # a refused model leaves without the tap hooks
            raise
        feature_tap = self.objective.feature_tap
        if feature_tap is not None and feature_layer is None and not hasattr(model, "head"):
            note(f"features: the input of layer {feature_tap.layer!r} "
                 f"({math.prod(tap_shapes[feature_tap])} values), the layer that gives the "
                 "logits; feature_layer= (--feature-layer) names another",
                 config.progress and distributed.is_main())
        info = TrainInfo(
            num_classes=data.num_classes,
            feature_dim=None if feature_tap is None else math.prod(tap_shapes[feature_tap]),
            feature_layer=None if feature_tap is None else feature_tap.layer,
            class_counts=data.class_counts(),
            total_steps=self.total_steps,
            x=data.x,
            x_target=data.x_target,
            jitter=config.jitter or int(config.augment != "none"),
            y=data.y,
            student=model,
            teachers=dict(self.objective.teachers),
            tap_shapes=tap_shapes,
            steps_per_epoch=self.steps_per_epoch,
            epochs=config.epochs,
            device=self.device,
        )
        for method in methods:
            method.setup(info)
        if trains:  # again for the modules setup built (a discriminator with BatchNorm)
            try:
                self._check_batchnorm(bn_values)
            except ConfigError:
                self.objective.remove_hooks()
                for method in reversed(methods):  # give back what setup changed
                    method.close()
                raise
        self.objective.to(self.device)  # and move the modules setup created
        # before the optimizers and DDP see the parameters (converted in place)
        channels_last, self.memory_format = choose_memory_format(
            config.memory_format, self.objective, self.device)
        if config.memory_format == "channels_last" and not channels_last:
            note(f"memory_format: {self.memory_format}", config.progress and distributed.is_main())
        self._restore_format = to_channels_last(self.objective) if channels_last else None
        self.phases = self.objective.phases()
        # No optimizer when no method trains anything (adabn alone): epochs only evaluate.
        self.optimizers = [self._phase_optimizer(p) for p in self.phases] if trains else []
        self.max_norm_weights = weight_matrices(model) if config.optim.max_norm else []
        self.step_fn: nn.Module = self.objective
        if distributed.world_size() > 1:
            # Buffers a method keeps in sync itself (CRD's memory banks, n_data x 128 each)
            # would otherwise be broadcast from rank 0 at every step.
            synced = [f"methods.{name}.{buffer}" for name, m in self.objective.methods.items()
                      for buffer in m.self_synced_buffers()]
            ignore = getattr(nn.parallel.DistributedDataParallel,
                             "_set_params_and_buffers_to_ignore_for_model", None)
            if synced and ignore is not None:
                ignore(self.objective, synced)
            self.step_fn = nn.parallel.DistributedDataParallel(
                self.objective, find_unused_parameters=len(self.phases) > 1
            )
        self.compiled = CompiledStep.build(config.compile, self.step_fn, self.device,
                                           config.progress and distributed.is_main(),
                                           len(self.phases), distributed.world_size())
        # A compiled step reads the progress from this tensor: one graph for the whole run.
        # float64, so schedules computed from it equal the eager step's Python floats.
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._progress = torch.zeros((), dtype=dtype, device=self.device)
        self.finite_every = 1 if self.device.type == "cpu" else FINITE_CHECK_EVERY_GPU
        self._nonfinite: Tensor | None = None  # any non-finite loss since the last check
        tensors = [data.x, data.y, data.x_target]
        on_device, self.data_placement = placement(tensors, self.device, config.data_on_device,
                                                   RESIDENT_SHARE)
        # the tensors batches are gathered from: the training data, or its copy on the GPU
        self.resident = data
        if on_device:
            x, y, x_target = move(tensors, self.device)
            assert x is not None
            self.resident = TrainData(x, y, data.num_classes, x_target)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.global_step = 0
        self.initial_loss: float | None = None  # the untrained model's loss (first step)
        self.warning: str | None = None  # set when the final predictions collapsed
        # The epoch ``select`` prefers so far: {"epoch": n, "state": the model's weights}.
        self.selected: dict[str, Any] | None = None
        self.validation_layer = None if feature_tap is None else feature_tap.layer
        if self.validation_layer is None and feature_layer is not None:
            # no method reads features: the validators do (dev); a wrong name was skipped
            self.validation_layer = resolve_layer(model, feature_layer)
        self.board: ScalarLog | None = None  # RUN/tensorboard, opened by fit (rank 0)

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
        cfg, world = self.config, distributed.world_size()
        sizes = {"batch_size": cfg.batch_size}
        if any(m.needs_target for m in methods):
            sizes["target_batch_size"] = cfg.target_batch_size
        empty = [f"{name}={size}" for name, size in sizes.items()
                 if size is not None and size < world]
        if empty:  # a process with no rows would average an empty batch into NaN
            raise ConfigError(
                f"{' and '.join(empty)} over {world} processes leaves some processes without "
                f"a row per step (each takes batch_size // {world}); give at least {world} "
                "(a batch is split across the processes), or start fewer processes")
        shifts = [f"jitter={cfg.jitter}"] if cfg.jitter else []
        shifts += [f"augment={cfg.augment!r}"] if cfg.augment != "none" else []
        if shifts and self.data.x.dim() != 4:  # else the first step fails inside augment.py
            raise ConfigError(
                f"{' and '.join(shifts)} (image augmentation) need{'s' * (len(shifts) == 1)} "
                f"image inputs (N x C x H x W), but the training inputs are "
                f"{' x '.join(map(str, ('N', *self.data.x.shape[1:])))}; leave them out "
                "(jitter=0, augment='none') for feature vectors"
            )

    def _check_batchnorm(self, values: dict[nn.Module, int]) -> None:
        """Refuse one-row batches when a BatchNorm layer in training mode would see a single
        value per channel, where torch would fail inside the first step ("Expected more than
        1 value per channel when training").

        Batches are always whole (:func:`epoch_batches` concatenates permutations, so there
        is no short last batch), but under DDP a process gets ``batch_size // world`` rows or
        one more. On a pair, methods may run one domain's rows alone (fixmatch's strong view,
        a discriminator), so ``target_batch_size`` counts too. ``values``: per-sample values per
        channel of the layers the tap probe ran (``H x W`` for maps); a layer it did not run
        (one setup built) counts 1 when it is a BatchNorm1d.
        """
        cfg, world = self.config, distributed.world_size()
        sizes = {"batch_size": cfg.batch_size}  # also the target batch's, when unset
        if self.objective.needs_target and cfg.target_batch_size is not None:
            sizes["target_batch_size"] = cfg.target_batch_size
        small = [name for name, size in sizes.items() if size // world <= 1]
        if not small:
            return
        modes = module_modes(self.objective)
        self.objective.train()  # the modes of a step (a teacher stays in eval mode)
        try:
            layer = next((name for name, m in self.objective.named_modules()
                          if isinstance(m, _BatchNorm) and m.training
                          and values.get(m, int(isinstance(m, nn.BatchNorm1d))) == 1), None)
        finally:
            restore_modes(modes)
        if layer is None:
            return
        given = " and ".join(f"{name}={sizes[name]}" for name in small)
        over = f" over {world} processes" if world > 1 else ""
        fix = " and ".join(f"{name} >= {2 * world}" for name in small)
        raise ConfigError(
            f"{given}{over} give{'s' * (len(small) == 1)} training batches of one row, and "
            f"BatchNorm layer {layer.removeprefix('model.')!r} (in training mode) needs more "
            f"than one value per channel; give {fix} (or take that BatchNorm out)"
        )

    def _probe_taps(self) -> dict[Tap, tuple[int, ...]]:
        """Per-sample shapes of every tap, from two training rows (eval mode)."""
        x_target = None if self.data.x_target is None else self.data.x_target[:2]
        try:
            return self.objective.probe(
                self.data.x[:2].to(self.device),
                None if x_target is None else x_target.to(self.device),
            )
        except TransferkitError:
            raise
        except Exception as exc:  # a layer that cannot take the inputs: say which network
            reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            raise ConfigError(f"the networks of this run cannot take the training inputs "
                              f"{tuple(self.data.x.shape[1:])}: {reason}") from None

    def _phase_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        """An optimizer over ``phase``'s parameters, in groups by their lr factor."""
        factors = resolve_lr_factors(self.model, self.config.optim.lr_factors)
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.objective.phase_parameters(phase):
            groups.setdefault(lr_factor(name, factors), []).append(param)
        if not groups:
            raise ConfigError(
                "the model has no trainable parameters" if phase.trains is None
                else f"phase {phase.name!r} trains nothing: no trainable parameter under "
                f"{', '.join(phase.trains)}"
            )
        return build_optimizer(
            [{"params": params, "lr_factor": factor} for factor, params in groups.items()],
            self.config.optim,
            fused=self.config.compile != "off" and fused_optimizer_ok(self.device),
        )

    @property
    def networks(self) -> dict[str, nn.Module]:
        """The student and every peer: the networks that are trained, evaluated and saved."""
        return self.objective.trained_networks()

    # ---- checkpoints -------------------------------------------------------------------
    def _resume_key(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.model_dump().items() if k not in RESUME_FREE}

    def state(self, epoch: int, rank_rngs: list[Any] | None = None) -> dict[str, Any]:
        """Everything a resume needs; ``rank_rngs`` holds every rank's RNG states."""
        return {
            "epoch": epoch,
            "step": self.global_step,
            "objective": self.objective.state_dict(),
            "optimizer": [opt.state_dict() for opt in self.optimizers],
            "rank_rngs": rank_rngs or [_rng_state()],
            "world_size": distributed.world_size(),
            "config": self._resume_key(),
            "history": self.history,
            "initial_loss": self.initial_loss,
        }

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``checkpoint.pt`` from the run directory; False when there is none yet."""
        path = Path(path) if path else (self.run_dir / CHECKPOINT if self.run_dir else None)
        if path is None or not path.exists():
            return False
        state = load_torch(path)
        old = state.get("config") if isinstance(state.get("config"), dict) else {}
        # a setting made resume-free after the checkpoint was written no longer binds it
        old = {k: v for k, v in old.items() if k not in RESUME_FREE}
        defaults = {k: v for k, v in TrainConfig().model_dump().items() if k not in RESUME_FREE}
        diff = settings_diff(old, self._resume_key(), defaults)
        if diff:
            raise CheckpointError(
                f"cannot resume from {path}: settings differ ({', '.join(diff)}); "
                "resume with the settings of the interrupted run or start a new run directory"
            )
        try:
            self._apply_state(state, path)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint {path} is damaged or was not written by transferkit "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); resume from an "
                "intact run or start a new run directory"
            ) from None
        if self.run_dir is not None and distributed.is_main():
            self._rewrite_metrics()
        self._restore_selected()
        return True

    def _keep_if_selected(self) -> None:
        """Keep the weights of the last epoch when ``select`` now prefers it (strictly)."""
        if self.config.select == LAST or not self.history:
            return
        if best_epoch(self.history, self.config.select) != len(self.history) - 1:
            return
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.selected = {"epoch": self.history[-1]["epoch"], "select": self.config.select,
                         "state": state}
        if self.run_dir is not None and distributed.is_main():
            save_torch(self.selected, self.run_dir / SELECTED)

    def _restore_selected(self) -> None:
        """After a resume: the preferred epoch's weights, from the checkpoint itself when it
        is that epoch (a kill between checkpoint and ``selected.pt``), else from the file."""
        if self.config.select == LAST or not self.history:
            return
        best = best_epoch(self.history, self.config.select)
        if best is None:
            return
        if best == len(self.history) - 1:  # the checkpoint holds the preferred weights
            self._keep_if_selected()
            return
        path = self.run_dir / SELECTED if self.run_dir is not None else None
        want = self.history[best]["epoch"]
        saved = load_torch(path) if path is not None and path.is_file() else {}
        if saved.get("epoch") != want or not isinstance(saved.get("state"), dict):
            raise CheckpointError(
                f"cannot resume: {self.config.select} prefers epoch {want}, but {path} does "
                f"not hold its weights (it holds epoch {saved.get('epoch')}); start a new run "
                "directory"
            )
        self.selected = saved

    def _apply_state(self, state: dict[str, Any], path: Path) -> None:
        """Check the checkpoint against this run, then load weights, optimizer and RNGs."""
        rank, rngs = distributed.rank(), state.get("rank_rngs") or []
        saved_world = int(state.get("world_size", len(rngs)))
        if saved_world != distributed.world_size():
            # Each rank's data shard and random stream depend on the number of ranks: another
            # count would silently continue a different run.
            how = (f"torchrun --nproc_per_node={saved_world} ..." if saved_world > 1
                   else "one process (without torchrun)")
            raise CheckpointError(
                f"cannot resume {path}: it was trained by {saved_world} process(es) and this "
                f"run has {distributed.world_size()}; resume it with {how}, or start a new "
                "run directory"
            )
        epoch = int(state["epoch"])
        if epoch > self.config.epochs:
            raise CheckpointError(
                f"cannot resume {path} with epochs={self.config.epochs}: it has already trained "
                f"{epoch} epochs; give --epochs {epoch} or more"
            )
        load_weights(self.objective, state["objective"], str(path), "this model and its methods")
        saved = state["optimizer"]
        saved = saved if isinstance(saved, list) else [saved]
        if len(saved) != len(self.optimizers):
            raise ValueError(f"{len(saved)} optimizer states for {len(self.optimizers)} phases")
        for optimizer, optimizer_state in zip(self.optimizers, saved, strict=True):
            optimizer.load_state_dict(optimizer_state)
        _set_rng_state(rngs[rank])
        initial = state.get("initial_loss")
        self.initial_loss = None if initial is None else float(initial)
        self.start_epoch = epoch
        self.global_step = int(state["step"])
        self.history = list(state["history"])
        if not all(isinstance(row, dict) for row in self.history):
            raise TypeError("history rows must be mappings")

    def _rewrite_metrics(self) -> None:
        """Make ``metrics.jsonl`` exactly the checkpoint's history (atomically).

        Written after each checkpoint and at a resume, so after a kill at any moment the
        metrics never hold an epoch the checkpoint lacks, nor one twice.
        """
        assert self.run_dir is not None
        text = "".join(json_text(r, indent=None) + "\n" for r in self.history)
        write_text(self.run_dir / METRICS, text)

    # ---- training ----------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train the remaining epochs; returns one metrics row per epoch."""
        cfg = self.config
        main = distributed.is_main()
        if self.start_epoch == 0:  # ranks draw different dropout masks and shifts
            torch.manual_seed(_rank_seed(cfg.seed, distributed.rank()))
            if self.run_dir is not None and main:  # left by a run killed before its 1st epoch
                (self.run_dir / METRICS).unlink(missing_ok=True)
        if cfg.tensorboard and self.run_dir is not None and main and self.board is None:
            self.board = ScalarLog(self.run_dir, self.history)  # the checkpoint's epochs
        with ProgressBar(cfg.progress and main, cfg.epochs) as bar:
            for epoch in range(self.start_epoch, cfg.epochs):
                row = self._train_epoch(epoch, bar)
                self._check_weights_finite(epoch)  # before the checkpoint, as the losses are
                if cfg.check_divergence:  # before the checkpoint: the last good one is kept
                    self._check_explosion(epoch, row["train"]["loss"])
                if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                    row["eval"] = self._evaluate(self.model)
                    self._check_outputs_finite(epoch, row["eval"])
                    peers = {name: self._evaluate(net) for name, net in self.networks.items()
                             if net is not self.model}
                    if peers:
                        row["peers"] = peers
                    if self.validation is not None:
                        row["validators"] = validator_scores(
                            self.model, self.validation, self.validation_layer, self.device,
                            cfg.eval_batch_size)
                        if "target_test" not in self.evals:  # a target without labels
                            row["target_predictions"] = self._target_predictions()
                bar.end_epoch(row)
                self.history.append(row)
                if self.run_dir is not None:  # the same on every rank: the gather is collective
                    rank_rngs = distributed.all_gather_object(_rng_state())
                    if main:
                        save_torch(self.state(epoch + 1, rank_rngs), self.run_dir / CHECKPOINT)
                        self._rewrite_metrics()
                        if self.board is not None:  # after the checkpoint, as the metrics
                            self.board.add(row)
                self._keep_if_selected()  # after the checkpoint: see _restore_selected
                distributed.barrier()
        trained = self.start_epoch < cfg.epochs and self.total_steps >= COLLAPSE_MIN_STEPS
        if self.history and trained:
            self.warning = self._collapse(self.history[-1].get("eval", {}))
        return self.history

    def _evaluate(self, network: nn.Module) -> dict[str, dict[str, Any]]:
        return {
            name: evaluate_split(network, split, self.device, self.config.eval_batch_size)
            for name, split in self.evals.items()
        }

    def _target_predictions(self) -> dict[str, Any]:
        """The most predicted class on the (unlabelled) target rows the validators read and
        its share: with no labels to score, the one sign of a collapse a user can see."""
        assert self.validation is not None
        with torch.no_grad():
            logits = predict(self.model, self.validation.target_x, self.device,
                             self.config.eval_batch_size)
        counts = torch.bincount(logits.argmax(1), minlength=self.data.num_classes)
        top = int(counts.argmax())
        return {"top_class": top, "top_class_share": float(counts[top]) / max(len(logits), 1),
                "rows": len(logits)}

    def _check_explosion(self, epoch: int, loss: float) -> None:
        """Stop when the epoch's mean loss is far above the untrained model's loss."""
        reference = max(self.initial_loss or 0.0, EXPLODE_FLOOR)
        if loss <= EXPLODE_FACTOR * reference:
            return
        kept = (
            f"the last good checkpoint (epoch {epoch}) is kept in {self.run_dir}"
            if self.run_dir is not None and epoch > 0
            else "no checkpoint was written"
        )
        first = self.initial_loss or 0.0
        ratio = (f"{loss / reference:.3g} times the untrained model's ({first:.3g})"
                 if first >= EXPLODE_FLOOR else f"above the limit {EXPLODE_FACTOR * reference:g} "
                 f"(the untrained model's loss was {first:.3g})")
        raise DivergenceError(
            f"training diverged: the mean loss of epoch {epoch + 1} is {loss:.3g}, {ratio}; "
            f"{kept}; lower the learning rate (--lr, now {self.config.optim.lr:g}) or add "
            f"--max-norm ({ACCEPT_DIVERGENCE} trains on regardless)"
        )

    def _collapse(self, evals: dict[str, dict[str, Any]]) -> str | None:
        """A message when the final predictions on a test split are (almost) all one class."""
        for name, values in evals.items():
            split = self.evals[name]
            true_share = float(torch.bincount(split.y).max()) / max(len(split), 1)
            share = values.get("top_class_share", 0.0)
            if share >= COLLAPSE_SHARE and true_share <= COLLAPSE_MAX_TRUE_SHARE:
                return (
                    f"predictions collapsed: the model predicts class {values['top_class']} "
                    f"for {share:.0%} of {name} (accuracy {values['accuracy']:.2%}); lower the "
                    f"learning rate (--lr, now {self.config.optim.lr:g}), train longer, or "
                    "check the method's options (l2: scale=auto)"
                )
        return None

    def close(self) -> None:
        """Remove the feature hook and let methods restore what they changed (the teacher)."""
        self.objective.remove_hooks()
        if self._restore_format is not None:  # the networks leave as they came
            self._restore_format()
            self._restore_format = None
        # The first to freeze a module is the last to restore it.
        for method in reversed(list(self.objective.methods.values())):
            method.close()
        if self.board is not None:
            self.board.close()
            self.board = None

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
        resident = self.resident
        x, y, xt = resident.x, resident.y, resident.x_target
        if resident.x.device.type != "cpu":  # the data lives on the GPU: so do the indices
            order = order.to(device)
            target_order = None if target_order is None else target_order.to(device)
        sums: dict[str, Tensor] = {}
        self.objective.train()
        for method in self.objective.methods.values():
            method.start_epoch(epoch)
        bar.start_epoch(epoch + 1, steps)
        constant_lr = cfg.optim.schedule == "constant"
        if constant_lr:
            for optimizer in self.optimizers:
                set_learning_rate(optimizer, cfg.optim.lr)
        lr = cfg.optim.lr
        start = time.perf_counter()
        autocast = self.precision.autocast(device)
        single = len(self.phases) == 1
        for step in range(steps if self.optimizers else 0):
            if not constant_lr:
                lr = learning_rate(cfg.optim, self.global_step, epoch, self.total_steps)
                for optimizer in self.optimizers:
                    set_learning_rate(optimizer, lr)
            idx = order[step]
            batch = Batch(
                x[idx].to(device, non_blocking=True),
                None if y is None else y[idx].to(device, non_blocking=True),
                None if target_order is None else xt[target_order[step]].to(device),
                idx,
                None if target_order is None else target_order[step],
            )
            if cfg.jitter:
                batch.x = random_translate(batch.x, cfg.jitter, self.fill)
            if cfg.augment == "cifar":
                batch.x = random_crop_flip(batch.x, padding=4, fill=self.fill)
            elif cfg.augment == "flip":
                batch.x = random_flip(batch.x)
            progress = self.global_step / self.total_steps
            if self.compiled.active:
                self._progress.fill_(progress)  # a kernel argument, no copy from the host
            for phase, optimizer in zip(self.phases, self.optimizers, strict=True):
                for _ in range(phase.repeat):
                    losses = self._step(batch, progress, None if single else phase.name,
                                        optimizer, epoch, step, autocast)
                    for key, term in losses.items():
                        detached = term.detach() / phase.repeat
                        sums[key] = sums[key] + detached if key in sums else detached
            if self.max_norm_weights:
                apply_max_norm(self.max_norm_weights, cfg.optim.max_norm)
            if step == 0:
                self.compiled.after_step()
            self.global_step += 1
            if bar.due():  # the epoch's mean loss so far
                mean = sum(float(v) for v in sums.values()) / (step + 1)
                bar.update(step + 1, f"loss={mean:.4f}")
        for method in self.objective.methods.values():
            method.end_epoch(epoch)
        bar.update(steps)
        names = sorted(sums)
        train: dict[str, float] = {}
        if names:
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

    def _step(self, batch: Batch, progress: float, phase: str | None,
              optimizer: torch.optim.Optimizer, epoch: int, step: int,
              autocast: torch.autocast) -> dict[str, Tensor]:
        """One phase's forward, backward and update; a compiled step that fails to compile
        is redone eagerly (the optimizer has not stepped), and the run stays eager."""
        if self.compiled.active:
            snapshot = self.compiled.snapshot(phase)
            try:
                self.compiled.begin_step()
                with autocast:
                    losses = self.compiled.call(batch, self._progress, phase)
                self._backward_step(losses, optimizer, epoch, step)
                self.compiled.ran(phase)
                return losses
            except (NonFiniteLossError, DivergenceError):  # the numbers, not the compiler
                raise
            except Exception as exc:
                self.compiled.fall_back(exc, snapshot)
        with autocast:
            losses = self.step_fn(batch, progress, phase)
        self._backward_step(losses, optimizer, epoch, step)
        self.compiled.fell_back()
        return losses

    def _backward_step(
        self, losses: dict[str, Tensor], optimizer: torch.optim.Optimizer, epoch: int, step: int
    ) -> None:
        """Backward the sum of ``losses`` and step ``optimizer`` (one phase's parameters)."""
        if not losses:
            raise ConfigError("no method gave a loss for this step; check the method list")
        total = sum(losses.values())
        assert isinstance(total, Tensor)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.initial_loss is None:  # the same on every rank: they decide together
            first = total.detach().double().reshape(1)
            world = distributed.world_size()
            self.initial_loss = float(distributed.all_reduce_sum(first).item()) / world
        # Every rank stops at the same step, also when only one rank's batch gave NaN
        # (DDP has already averaged its gradients into everyone's).
        if self.finite_every == 1:
            if distributed.any_rank(not math.isfinite(total.item()), self.device):
                self._non_finite(epoch, step, losses)
        else:  # on a GPU: remember, and look every finite_every steps and at the epoch's end
            bad = ~torch.isfinite(total.detach())
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
            if (step + 1) % self.finite_every == 0 or step + 1 == self.steps_per_epoch:
                seen = bool(self._nonfinite.item())
                self._nonfinite = None
                if distributed.any_rank(seen, self.device):
                    self._non_finite(epoch, step, losses, since=step - step % self.finite_every)
        optimizer.step()

    def _check_weights_finite(self, epoch: int) -> None:
        """The model's weights and buffers after the epoch's last step: a loss is only seen
        finite or not at the next forward, and gradient reversal (DANN, MDD) scales only the
        backward pass, so an update to NaN at the last step would otherwise be saved."""
        tensors = [t for t in (*self.model.parameters(), *self.model.buffers())
                   if t.is_floating_point() and t.numel()]
        if not tensors:
            return
        finite = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
        if not distributed.any_rank(not bool(finite.item()), self.device):
            return
        names = [n for n, t in (*self.model.named_parameters(), *self.model.named_buffers())
                 if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]
        kept = (f"the last good checkpoint (epoch {epoch}) is kept in {self.run_dir}"
                if self.run_dir is not None and epoch > 0 else "no checkpoint was written yet")
        distributed.shutdown(synchronize=True)
        first = names[0] if names else "on another rank"
        raise NonFiniteLossError(
            f"the model's weights became non-finite in epoch {epoch + 1} ({first}"
            f"{f' and {len(names) - 1} more' if len(names) > 1 else ''}) although its losses "
            f"were finite: a step too large; {kept}; lower the learning rate (--lr, now "
            f"{self.config.optim.lr:g}) or a large loss weight")

    def _check_outputs_finite(self, epoch: int, evals: dict[str, dict[str, Any]]) -> None:
        """A test loss that is not finite: the outputs are (cross-entropy of finite logits is
        finite), so the weights, though finite, are unusable (a learning rate of 1e30)."""
        bad = [name for name, values in evals.items()
               if not math.isfinite(float(values.get("loss", 0.0)))]
        if not bad:
            return
        kept = (f"the last good checkpoint (epoch {epoch}) is kept in {self.run_dir}"
                if self.run_dir is not None and epoch > 0 else "no checkpoint was written yet")
        raise NonFiniteLossError(
            f"the model's outputs on {bad[0]} are not finite after epoch {epoch + 1} (its "
            f"weights overflow); {kept}; lower the learning rate (--lr, now "
            f"{self.config.optim.lr:g}) or a large loss weight")

    def _non_finite(self, epoch: int, step: int, losses: dict[str, Tensor],
                    since: int | None = None) -> None:
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        if since is not None and since < step:  # a checked window: the bad step may be earlier
            terms = f"checked every {self.finite_every} steps on {self.device.type}; at step " \
                f"{step + 1}: {terms}"
        elif all(math.isfinite(v.item()) for v in losses.values()):
            terms = f"on another rank; here {terms}"
        kept = (
            f"the last good checkpoint (epoch {epoch}) is kept in {self.run_dir}"
            if self.run_dir is not None and epoch > 0
            else "no checkpoint was written yet"
        )
        distributed.shutdown(synchronize=True)  # every rank is here, at the same step
        where = f"step {step + 1}" if since is None or since >= step else \
            f"steps {since + 1}-{step + 1}"
        raise NonFiniteLossError(
            f"loss became non-finite at epoch {epoch + 1}, {where} ({terms}); {kept}; "
            "lower the learning rate or check the inputs for NaN"
        )


@contextmanager
def _batchnorm_values(module: nn.Module) -> Iterator[dict[nn.Module, int]]:
    """Per-sample values per channel (``H x W`` for maps, 1 for vectors) that each BatchNorm
    layer of ``module`` sees while the body runs (the tap probe): a one-row batch fails only
    where this is 1."""
    seen: dict[nn.Module, int] = {}

    def hook(layer: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor):
            seen[layer] = math.prod(args[0].shape[2:])

    handles = [m.register_forward_pre_hook(hook) for m in module.modules()
               if isinstance(m, _BatchNorm)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


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
