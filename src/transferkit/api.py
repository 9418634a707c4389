"""The Python API: ``train``, ``distill``, ``adapt`` and ``evaluate`` in a line each.

    import transferkit as tk
    teacher = tk.train("seed-cnn", "mnist", epochs=3).model
    student = tk.distill(teacher, "seed-mlp", "mnist", method="kd", temperature=4).model
    adapted = tk.adapt("lenet", "mnist->usps", method="dann", epochs=10).model

Models are an ``nn.Module``, a registered name or a ``package.module:factory`` path; data is
a :class:`Dataset`, a :class:`DomainPair` (arrays in memory: :func:`from_arrays` and
:func:`pair`), a file or a registered name (``a->b`` names a pair). With
``out=...`` a run directory is written: ``config.yaml``, ``metrics.jsonl``,
``checkpoint.pt`` (every epoch, atomically), ``model.pt`` and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from inspect import signature as inspect_signature
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.config import (
    OptimConfig,
    TrainConfig,
    read_yaml,
    validate,
)
from transferkit.data import (
    Dataset,
    DomainPair,
    Split,
    load_dataset,
    load_pair,
    load_pair_target,
)
from transferkit.data.file_records import InMemory
from transferkit.data.inputs import (
    CLASSES_ATTR,
    COLUMNS_ATTR,
    IMAGE_READ_ATTR,
    INPUTS_ATTR,
    NORMALIZATION_ATTR,
    RAW_ROWS_ATTR,
    SHAPE_ATTR,
    InputConverted,
    InputSpec,
    check_raw_rows,
    fit_data,
    fit_splits,
    fit_teacher,
)
from transferkit.data.normalize import Normalization
from transferkit.data.recorded import ColumnsReordered, check_class_names, fit_columns
from transferkit.data.teacher_input import (
    TeacherInput,
    check_declared,
    parse_teacher_input,
    with_teacher_input,
)
from transferkit.engine.checkpoint import (
    load_torch,
    save_json,
    save_torch,
)
from transferkit.engine.distributed import is_main, local_device
from transferkit.engine.evaluate import evaluate_split
from transferkit.engine.loop import (
    ACCEPT_DIVERGENCE,
    CHECKPOINT,
    TrainData,
    Trainer,
)
from transferkit.engine.progress import note
from transferkit.engine.selection import (
    ValidationSets,
    choices,
    holdout_rows,
    validator_scores,
)
from transferkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    NonFiniteLossError,
    TransferkitError,
)
from transferkit.files import RunLock
from transferkit.losses._checks import check_count
from transferkit.methods import (
    METHODS,
    Method,
    build_methods,
    check_needs,
    method_names,
    takes_teacher,
)
from transferkit.model_file import (
    MODEL_FILE,
    class_names,
    column_names,
    fitted_normalization,
    image_read_options,
    is_saved_model,
    load_model,
    load_record,
    save_model,
)
from transferkit.models import MODELS, count_parameters, resolve_model
from transferkit.models.base import eval_mode, weights_sha256
from transferkit.models.features import features_and_logits
from transferkit.models.onnx import is_torchscript
from transferkit.predict import (
    Predictions,
    check_finite_outputs,
    predictions,
    rows_to_predict,
)
from transferkit.run_dir import (  # noqa: F401  (load_run: part of the API)
    IN_MEMORY,
    SUMMARY_FILE,
    RunResult,
    finished_summary,
    load_run,
    prepare_run_dir,
    run_record,
    write_config,
)

TRAIN_FIELDS = set(TrainConfig.model_fields)
DEFAULT_SOURCE_HOLDOUT = TrainConfig.model_fields["source_holdout"].default
OPTIM_FIELDS = set(OptimConfig.model_fields) - {"name"}


# ---- resolving arguments -------------------------------------------------------------------
def resolve_data(data: Dataset | DomainPair | str, data_dir: str | Path | None = None,
                 data_options: dict[str, Any] | None = None,
                 unlabelled_classes: Callable[[torch.Tensor], int | list[Any]] | None = None):
    """A dataset or pair object, or load it by name or path (``a->b`` is a domain pair; a
    side may be a ``.npz``/``.mat``/``.csv`` file or an image folder, read with
    ``data_options``: see :func:`load_data`). ``unlabelled_classes``: a lone file may have no
    labels, its class count then taken from its inputs (a trained model's outputs)."""
    if isinstance(data, Dataset | DomainPair):
        origin = _origin(data)
        if origin is not None:
            options = _arrays_options(data, data_options)
            if isinstance(data, Dataset) and unlabelled_classes is not None and \
                    not data.train_labelled:  # arrays without labels: the model's classes
                from transferkit.data.files import load_file_dataset, parse_file_options

                return load_file_dataset(origin, parse_file_options(options),
                                         unlabelled_classes=unlabelled_classes)
        if data_options:
            raise ConfigError("data options apply to data files; this data is already loaded")
        return data
    data = _data_spec(data)
    from transferkit.data.files import (
        is_data_path,
        load_file_dataset,
        load_file_pair,
        parse_file_options,
    )

    sides = data.split("->")
    if any(is_data_path(side) for side in sides):
        options = parse_file_options(data_options)
        if len(sides) == 1:
            return load_file_dataset(data, options, unlabelled_classes=unlabelled_classes)
        if len(sides) == 2 and all(sides):
            return load_file_pair(sides[0], sides[1], options, data_dir=data_dir)
        raise ConfigError(f"data {data!r}: write one file, or two joined by '->'")
    if data_options:
        raise ConfigError(f"data options apply to data files, and {data!r} is a registered "
                          "name; remove them")
    return load_pair(data, data_dir) if "->" in data else load_dataset(data, data_dir)


def _data_spec(data: Any) -> str:
    """A data name or path as text: a pathlib.Path as its str, and no spaces around ``->``
    (``"a.npz -> b.npz"``); anything else is refused in one line."""
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if not isinstance(data, str):
        raise ConfigError(
            f"data must be a dataset name, file, Dataset or DomainPair, got "
            f"{type(data).__name__}; arrays in memory: tk.from_arrays(x, y) (a pair: "
            "tk.pair(source, target))"
        )
    return "->".join(side.strip() for side in data.split("->"))


def _origin(data: Any) -> InMemory | None:
    """The arrays in memory a dataset (or a pair's target) was read from, else None."""
    data = data.target if isinstance(data, DomainPair) else data
    return data.origin if isinstance(data, Dataset) else None


def _arrays_options(data: Dataset | DomainPair, data_options: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """The options ``data``'s arrays were read with (``from_arrays``), to read them again
    alike; options given again here are refused: the arrays keep one set."""
    origin = _origin(data)
    assert origin is not None
    if data_options:
        raise ConfigError(f"data options ({', '.join(map(str, data_options))}) apply to data "
                          f"files; arrays in memory keep those given to tk.from_arrays")
    return origin.options


def _data_record(data: Any, data_options: dict[str, Any] | None) -> dict[str, Any]:
    """What a run records of its data: how files were read and the sha256 of each file, or
    of arrays in memory (their dtypes, shapes, bytes and options), so a resume reads them
    alike and refuses data that changed."""
    from transferkit.data.files import data_digest, is_data_path

    record: dict[str, Any] = {"data_options": dict(data_options)} if data_options else {}
    roles = {"source": data.source, "target": data.target} if isinstance(data, DomainPair) \
        else {"data": data}
    arrays = {role: side for role, side in roles.items()
              if isinstance(side, Dataset) and side.origin is not None}
    named = len({side.name for side in arrays.values()}) == len(arrays)  # else: by role too
    digests = {side.name if named else f"{role} {side.name}": side.origin.sha256
               for role, side in arrays.items()}
    files = [side for side in getattr(data, "name", "").split("->")
             if side not in digests and is_data_path(side) and Path(side).exists()]
    if files:
        digests = {**data_digest("->".join(files)), **digests}
    if digests:
        record["data_sha256"] = digests
    if arrays:  # readers of the run (report, export) are told, never read a file of that name
        record[IN_MEMORY] = [side.name for side in arrays.values()]
    return record


def _recorded_on_disk(record: dict[str, Any], where: Path, verb: str) -> str:
    """The data a run recorded, to read it again; a run trained on arrays in memory is
    refused in one line (its name, ``arrays``, is no file, or a file that is other data)."""
    if not isinstance(record.get("data"), str):
        raise ConfigError(f"{where} does not record its data; give --data")
    if record.get(IN_MEMORY):
        raise ConfigError(f"{where} trained on arrays in memory (tk.from_arrays: "
                          f"{', '.join(map(str, record[IN_MEMORY]))}), which {verb} cannot read "
                          "again; give its data (--data FILE, or data= in Python)")
    return record["data"]


def load_data(data: str, data_dir: str | Path | None = None, **options: Any):
    """A registered dataset or pair, or your own files: ``.npz`` (arrays ``x``, ``y``,
    optional ``x_test``, ``y_test``), ``.mat`` (``fts``/``labels`` and the like), ``.csv``
    (feature columns and a label column) or an image folder (one sub-folder per class);
    ``'a.mat->b.mat'`` is a pair. ``options``: ``x``, ``y``, ``x_test``, ``y_test`` (names),
    ``test`` (a held-out fraction, or ``"all"``: the training rows, transductive),
    ``normalize`` (``zscore``, ``l1``, ``log``, from training rows only), ``size``,
    ``channels`` (images), ``seed``."""
    return resolve_data(data, data_dir, options or None)


def split_settings(
    settings: dict[str, Any], method_options: dict[str, Any] | None = None
) -> tuple[TrainConfig, dict[str, Any]]:
    """Separate training settings (epochs, lr, ...) from the method's own options.

    A keyword that names a training setting is one (``gamma`` is the step schedule's factor);
    ``method_options`` go to the method whatever their names (DANN's ``gamma``).
    """
    train = {k: settings.pop(k) for k in list(settings) if k in TRAIN_FIELDS}
    optim = {k: settings.pop(k) for k in list(settings) if k in OPTIM_FIELDS}
    if "optimizer" in settings:
        optim["name"] = settings.pop("optimizer")
    if optim:
        base = train.get("optim")
        merged = (base.model_dump() if isinstance(base, OptimConfig) else dict(base or {}))
        train["optim"] = {**merged, **optim}
    if method_options is not None and not isinstance(method_options, Mapping):
        raise ConfigError(f"method_options must be a mapping such as {{'trade_off': 0.5}}, got "
                          f"{type(method_options).__name__} {method_options!r:.80}")
    extra = {k: _plain(v) for k, v in {**settings, **(method_options or {})}.items()}
    return validate(TrainConfig, train, "training settings"), extra


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as Python numbers and lists (``np.float32(0.5)`` is 0.5), so
    options check and record (YAML) as the same values typed by hand would."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _probe(model: nn.Module, x: torch.Tensor, who: str, trained: bool = False) -> int:
    """Number of classes the model outputs, with a clear error when the input does not fit.

    ``trained``: the run trains this model, so its output must be floating point and depend
    on its trainable weights (a ``.detach()`` in ``forward`` would fail deep in backward)."""
    grad = trained and any(p.requires_grad for p in model.parameters())
    try:  # a copy of two rows: a forward that edits its input must not edit the data
        with eval_mode(model), torch.set_grad_enabled(grad):
            out = model(x[:2].clone())
    except TransferkitError:
        raise
    except Exception as exc:  # foreign models raise ValueError, TypeError, IndexError, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # TorchScript puts its own header first and the cause last
        reason = (lines[-1] if "TorchScript" in lines[0] else lines[0]) if lines else type(
            exc).__name__
        fix = ("; if it was trained on other inputs, convert them with --teacher-input "
               "'mean=[...],std=[...],size=N,channels=C' (teacher_input= in the API)"
               if who == "teacher" else "")
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()} - {x.dtype}
        if dtypes:  # a float64 / half model: the shape is not what is wrong
            fix += (f"; its weights are {sorted(map(str, dtypes))[0]} and the data "
                    f"{x.dtype}: convert the model with .float()")
        raise ConfigError(
            f"{who} cannot take inputs of shape {tuple(x.shape[1:])}: {reason[:300]}{fix}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{who} must return a tensor of N x classes logits, got "
                          f"{type(out).__name__}")
    if out.dim() != 2:
        raise ConfigError(f"{who} must return N x classes logits, got shape {tuple(out.shape)}")
    if not out.is_floating_point():
        raise ConfigError(f"{who} must return floating-point logits, got {out.dtype} (class "
                          "indices?); return the scores before argmax")
    if out.shape[1] > 1 and out.numel() and bool((out >= 0).all()) and torch.allclose(
            out.detach().sum(1).double(), torch.ones(len(out), dtype=torch.float64), atol=1e-4):
        raise ConfigError(f"the {who} returns probabilities (every row >= 0 and summing to 1: a "
                          "softmax at the end of forward?); return the logits, the scores "
                          "before softmax: the losses apply softmax themselves, and a second "
                          "one flattens every prediction towards uniform")
    if grad and not out.requires_grad:
        raise ConfigError(f"the {who}'s output does not depend on its trainable weights (a "
                          ".detach() or torch.no_grad() in forward?), so training cannot change "
                          "it; return logits computed with gradients")
    return int(out.shape[1])


# ---- the verbs -------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """Everything one training run needs, as the verbs resolve it from their arguments."""

    command: str
    model: nn.Module
    data: Any  # the Dataset or DomainPair (its input convention is saved with the model)
    methods: list[Method]
    train_data: TrainData
    evals: dict[str, Split]
    cfg: TrainConfig
    spec: dict[str, Any] | None  # how to rebuild the model (None: a module given as is)
    record: dict[str, Any]  # what config.yaml records besides the training settings
    feature_layer: str | None = None
    validation: ValidationSets | None = None  # adapt: what the validators score


STEP_SETTINGS = ("epochs", "batch_size", "steps_per_epoch", "jitter", "augment")


def _step_settings(cfg: TrainConfig) -> list[str]:
    """The settings given (not defaulted) that only shape optimizer steps: the optimizer's
    and the epochs' (a run of adabn alone steps nothing, each epoch only evaluates)."""
    optim = ["optimizer" if name == "name" else name for name in cfg.optim.model_fields_set]
    return [name for name in STEP_SETTINGS if name in cfg.model_fields_set] + sorted(optim)


def _run(plan: RunPlan, out: str | Path | None, resume: bool) -> RunResult:
    command, model, data, methods = plan.command, plan.model, plan.data, plan.methods
    cfg, spec, record = plan.cfg, plan.spec, plan.record
    config = {"command": command, **record, "train": cfg.model_dump()}
    try:
        fresh = out is not None and bool(str(out).strip()) and not Path(out).exists()
    except OSError:  # a name too long: prepare_run_dir says so
        fresh = False
    run_dir, lock = prepare_run_dir(out, config, resume)
    if cfg.target_batch_size is not None and not (
            plan.train_data.x_target is not None and any(m.needs_target for m in methods)):
        note(f"target_batch_size={cfg.target_batch_size} has no effect: this run draws no "
             "separate target batch (only adapt with a source and a target does)",
             cfg.progress and is_main())
    if not any(m.trains_network for m in methods) and (unused := _step_settings(cfg)):
        note(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect: "
             f"{'+'.join(m.name for m in methods)} takes no optimizer step (adabn re-estimates "
             "BatchNorm statistics in one pass over the target)", cfg.progress and is_main())
    try:
        start = time.perf_counter()
        trainer = Trainer(model, methods, plan.train_data, cfg, plan.evals, run_dir,
                          plan.feature_layer, plan.validation)
        resumed = resume and trainer.resume()
        if resumed and trainer.start_epoch >= cfg.epochs and run_dir is not None:
            finished = finished_summary(run_dir)
            if finished is not None:  # nothing left to train: the run as it was saved
                trainer.close()
                return RunResult(trainer.model, finished, trainer.history, run_dir)
        write_config(run_dir, config)  # only now: a refused resume leaves the old record
        try:
            history = trainer.fit()
        except (NonFiniteLossError, DivergenceError) as exc:
            hint = "; ".join(h for h in (_large_options_hint(record.get("method_options"),
                                                             methods),
                                         _large_inputs_hint(plan.train_data)) if h)
            if not hint:
                raise
            raise type(exc)(f"{exc}; {hint}") from None
        finally:
            trainer.close()
        final = history[-1].get("eval", {}) if history else {}
        summary = {
            "command": command,
            **record,
            "parameters": count_parameters(trainer.model),
            "epochs": cfg.epochs,
            "steps": trainer.global_step,
            "final": {name: values["accuracy"] for name, values in final.items()},
            "selection": _selection_note(cfg.select, trainer.selected),
            "resumed": bool(resumed),
            "seconds_this_session": round(time.perf_counter() - start, 2),
            "precision": trainer.precision.record(),
            "compile": trainer.compiled.record(),
            "data_placement": trainer.data_placement,
            "memory_format": trainer.memory_format,
        }
        if (tap := trainer.objective.feature_tap) is not None:  # given or found: the layer
            summary["feature_layer"] = tap.layer  # whose input the methods read as features
        peers = {name: net for name, net in trainer.networks.items() if net is not trainer.model}
        if peers:  # DML's peers: each evaluated and saved beside the student
            last = history[-1].get("peers", {}) if history else {}
            summary["networks"] = {
                name: {"final": {split: v["accuracy"] for split, v in last.get(name, {}).items()},
                       "parameters": count_parameters(net), "file": f"{name}.pt"}
                for name, net in peers.items()
            }
        if plan.validation is not None:  # what each validator (and the oracle) would keep
            summary["choices"] = choices(history)
            summary["validators"] = history[-1].get("validators", {}) if history else {}
            if history:  # the last epoch's scores, also when model.pt holds another epoch
                summary["validators_epoch"] = history[-1].get("epoch")
        if trainer.selected is not None:  # the kept model is the preferred epoch's
            trainer.model.load_state_dict(trainer.selected["state"])
            summary["selected"] = summary.get("choices", {}).get(cfg.select)
        target = data.target if isinstance(data, DomainPair) else data
        if not target.labelled:  # said where a reader looks for the target's accuracy
            shares = history[-1].get("target_predictions") if history else None
            names = target.classes or ()
            top = shares["top_class"] if shares else None
            shown = names[top] if top is not None and top < len(names) else top
            seen = "" if not shares else (
                f"; the model predicts class {shown!r} for "
                f"{shares['top_class_share']:.0%} of its rows (a share near 100% is a collapse "
                "unless the target is mostly that class)")
            summary["target"] = (f"{target.name} has no labels: no target accuracy measured"
                                 + ("; the validators' scores are label-free"
                                    if plan.validation is not None else "") + seen)
        if trainer.warning:
            summary["warning"] = trainer.warning
        disk_caches = {m.name: m.cache_record for m in methods if getattr(m, "cache_record", None)}
        if disk_caches:  # cache_teacher=disk: hit or written, and which file
            summary["teacher_cache"] = disk_caches
        setattr(trainer.model, INPUTS_ATTR, getattr(data, "inputs", None))  # as load_model
        setattr(trainer.model, SHAPE_ATTR, tuple(data.input_shape))
        setattr(trainer.model, CLASSES_ATTR, class_names(data, trainer.model))
        setattr(trainer.model, NORMALIZATION_ATTR, fitted_normalization(data))
        setattr(trainer.model, COLUMNS_ATTR, column_names(data))
        setattr(trainer.model, IMAGE_READ_ATTR, image_read_options(data))
        if run_dir is not None and is_main():
            save_model(trainer.model, run_dir / MODEL_FILE, spec, data)
            for name, net in peers.items():
                save_model(net, run_dir / f"{name}.pt", spec, data)
            save_json(summary, run_dir / SUMMARY_FILE)
        if trainer.warning and cfg.check_divergence:
            saved = f"the model is saved in {run_dir}, " if run_dir is not None else ""
            raise DivergenceError(
                f"{trainer.warning}; {saved}but do not use it ({ACCEPT_DIVERGENCE} accepts it)"
            )
        return RunResult(trainer.model, summary, history, run_dir)
    except BaseException:
        if fresh and lock is not None and run_dir is not None:
            lock.remove_if_alone(("config.yaml",))  # a folder it made, with nothing saved
        raise
    finally:
        if lock is not None:
            lock.release()


LARGE_OPTION = 100.0  # a loss weight this large is a likely cause when a run blows up


def _float_options(methods: list[Method]) -> set[str]:
    """Names of the methods' real-valued options (weights, temperatures; not counts)."""
    names: set[str] = set()
    for method in methods:
        for name, param in inspect_signature(type(method).__init__).parameters.items():
            if "float" in str(param.annotation):
                names.add(name)
    return names


def _large_options_hint(options: dict[str, Any] | None, methods: list[Method]) -> str:
    """For a run that diverged: the real-valued method options set to large numbers (a loss
    weight of 1e30 diverges as a learning rate of 1e30 does; the message only named the lr)."""
    real = _float_options(methods)
    divisors = {name for method in methods for name in method.loss_divisors}
    numbers = {k: v for k, v in (options or {}).items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    large = [f"{k}={v:g}" for k, v in numbers.items()
             if k in real and k not in divisors and not abs(v) < LARGE_OPTION]
    small = [f"{k}={v:g}" for k, v in numbers.items()
             if k in divisors and abs(v) < 1 / LARGE_OPTION]
    hints = []
    if large:
        hints.append(f"the method options include {', '.join(large)}: a large loss weight "
                     "diverges as a large learning rate does; lower it")
    if small:
        hints.append(f"the method options include {', '.join(small)}, which divides the loss: "
                     "a tiny divisor is a huge loss weight; raise it (or scale=auto)")
    return "; ".join(hints) + " (see transferkit list METHOD)" if hints else ""


def _large_inputs_hint(data: TrainData) -> str:
    """For a run that diverged: feature vectors with large raw values (counts, prices,
    sensor readings) blow up a network at a usual learning rate; normalising them is the fix
    a new user misses."""
    largest = max(float(x.abs().max()) if x is not None and x.dim() == 2 and x.numel() else 0.0
                  for x in (data.x, data.x_target))
    if largest < LARGE_OPTION:
        return ""
    return (f"the input features reach |x| = {largest:.3g}: normalise them (--normalize zscore, "
            "or normalize= in data_options)")


def _selection_note(select: str, selected: dict[str, Any] | None) -> str:
    if select == "last":
        return "last epoch (no early stopping; no target labels used to choose a model)"
    if selected is None:  # asked for, but no epoch had a finite score: say so, not "last"
        return (f"last epoch: select={select} gave no finite score at any epoch (see "
                f"'validators' and metrics.jsonl; e.g. too few target rows), so it chose "
                "nothing (no target labels used)")
    if select == "oracle":
        return (f"epoch {selected['epoch']}, the best target-test accuracy: chosen WITH target "
                "labels (oracle), as asked for; not a label-free result")
    from transferkit.validators import VALIDATORS

    needs = VALIDATORS[select].needs
    read = " and ".join(what for need, what in (("source_val", "held-out source rows"),
                                                 ("target", "unlabelled target inputs"))
                        if need in needs)
    return (f"epoch {selected['epoch']}, preferred by the {select} validator ({read}; no "
            "target labels)")


def _check_labelled(data: Dataset, command: str, select: str = "last") -> None:
    """Labels where the run reads them: a dataset trained on, or the target of select=oracle."""
    if data.labelled and data.train_labelled:
        return
    if command == "train" and not data.train_labelled:
        raise ConfigError(f"train: dataset {data.name!r} has no labels; train learns from "
                          "labelled rows (an unlabelled target belongs in a pair: adapt; a "
                          "teacher can label it: distill)")
    if select == "oracle" and not data.labelled:
        raise ConfigError(f"select=oracle picks the epoch by target-test accuracy, and the target "
                          f"{data.name!r} has no labels; choose a validator (e.g. im) or last")


def _say_unlabelled(target: Dataset) -> None:
    """Before a run on a target without labels: say so, with what reading it left unread (a
    labels array of an unusual name shows here, not after the run)."""
    if not target.train_labelled:
        what = "without labels" if not target.labelled else "with labelled test rows only"
        note(f"target {what}: {target.description}", is_main())


def _evals(data) -> dict[str, Split]:
    """The labelled test splits a run scores; a target without labels has none to score."""
    if isinstance(data, DomainPair):
        scored = {"source_test": data.source.test, "target_test": data.target.test}
        return scored if data.target.labelled else {"source_test": data.source.test}
    return {"test": data.test} if data.labelled else {}


def train(
    model: nn.Module | str,
    data: Dataset | DomainPair | str,
    *,
    method: str = "supervised",
    out: str | Path | None = None,
    resume: bool = False,
    data_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    **settings: Any,
) -> RunResult:
    """Train ``model`` on labelled data (on a pair: the source domain, i.e. source-only).

    An ``nn.Module`` given as ``model`` is trained in place (and returned as the result's
    ``model``); pass a copy to keep the original.
    """
    data = resolve_data(data, data_dir, data_options)
    cfg, options = split_settings(dict(settings), method_options)
    torch.manual_seed(cfg.seed)
    module, spec = resolve_model(model, data.input_shape, data.num_classes, **(model_options or {}))
    labelled = data.source if isinstance(data, DomainPair) else data
    _check_labelled(labelled, "train")
    _check_classes(module, labelled.train.x, data.num_classes, "model", trained=True)
    methods = build_methods(method, None, options)
    check_needs(methods, {"labels"}, "train", " (train fits labels; distil or adapt for more)")
    train_data = TrainData(labelled.train.x, labelled.train.y, data.num_classes,
                           inputs=labelled.inputs)
    record = {"data": data.name, **_data_record(data, data_options), "model": spec,
              "method": _method_spec(method),
              "method_options": options}
    return _run(RunPlan("train", module, data, methods, train_data, _evals(data), cfg, spec,
                        record), out, resume)


def distill(
    teacher: nn.Module | str | Path | list[nn.Module | str | Path],
    student: nn.Module | str,
    data: Dataset | DomainPair | str,
    *,
    method: str | list[str] = "kd",
    out: str | Path | None = None,
    resume: bool = False,
    data_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    student_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    teacher_input: str | dict[str, Any] | TeacherInput | None = None,
    generations: int = 1,
    **settings: Any,
) -> RunResult:
    """Distil ``teacher`` into ``student`` with a method or a list (``"kd+fitnet"``).

    On a dataset the student sees its labelled training data (methods without their own
    hard-label term get ``supervised`` beside them); on a domain pair it learns from the
    teacher alone on the unlabelled target training inputs (adapt, then distil); ``data-free``
    trains on inputs synthesised from the teacher instead. ``teacher`` may be a module, a
    path to a ``model.pt`` / run directory, or a list of them (``ensemble``). A teacher module
    is frozen (eval mode, no grad) only while the student trains: its mode, ``requires_grad``
    flags and device are given back afterwards. A student module is trained in place.
    ``teacher_input`` (``{"mean": [...], "std": [...], "size": 28, "channels": 3}`` or the
    CLI's ``'mean=[0.1307],std=[0.3081],size=28'``) converts each batch to what a teacher
    trained elsewhere expects (data/teacher_input.py); the student sees the data as it is.
    ``generations=N`` (born-again networks, Furlanello et al. 2018): each generation's student
    teaches the next, fresh one; run directories ``<out>/gen1`` ... and the last is returned.
    """
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ConfigError(f"generations must be an integer >= 1, got {generations!r}")
    if generations > 1:
        return _born_again(teacher, student, data, generations, method=method, out=out,
                           resume=resume, data_dir=data_dir, data_options=data_options,
                           student_options=student_options, method_options=method_options,
                           teacher_input=teacher_input, **settings)
    names = method_names(method)
    if not any(takes_teacher(n) for n in names):
        raise ConfigError(f"distill: no method in {'+'.join(names)} reads a teacher, so it "
                          "would be loaded and ignored; add a distillation method (e.g. "
                          f"{'+'.join([*names, 'kd'])}), or use adapt/train without a teacher")
    given = list(teacher) if isinstance(teacher, list | tuple) else [teacher]
    given = [one.model if isinstance(one, RunResult) else one for one in given]
    if not given:
        raise ConfigError("distill needs a teacher; the list of teachers is empty")

    def classes_of(x: torch.Tensor) -> int | list[Any]:
        """Inputs without labels: the teacher's classes, by name where it records them (their
        labelled test rows map by them, as in source-free adapt), else their count."""
        first = given[0]
        net = load_model(first) if isinstance(first, str | Path) else first
        count = _probe(net, x, "teacher")
        names = getattr(net, CLASSES_ATTR, None)
        return list(names) if names and len(names) == count else count

    data = resolve_data(data, data_dir, data_options, classes_of)
    cfg, options = split_settings(dict(settings), method_options)
    torch.manual_seed(cfg.seed)
    conversion = None if teacher_input is None else parse_teacher_input(teacher_input)
    teachers, sources, conventions = [], [], []
    teacher_classes = None  # the first teacher's class names: a student on unlabelled data
    for one in given:
        source = f"module {type(one).__name__} (from Python)"
        if isinstance(one, str | Path):
            source, one = str(one), load_model(one)
        teacher_classes = teacher_classes or getattr(one, CLASSES_ATTR, None)
        one, reordered = _fit_recorded(one, data, "teacher")
        if reordered:
            note(reordered, cfg.progress and is_main())
        one, convention = _fit_teacher_inputs(one, conversion, data)
        if isinstance(one, InputConverted):
            note(f"teacher inputs {convention}", cfg.progress and is_main())
        teachers.append(one)
        sources.append(source)
        conventions.append(convention)
    module, spec = resolve_model(
        student, data.input_shape, data.num_classes, **(student_options or {})
    )
    _check_own_weights(teachers, module, "student")
    if teacher_classes and getattr(module, CLASSES_ATTR, None) is None:
        setattr(module, CLASSES_ATTR, list(teacher_classes))  # kept if the data has no names
    methods = build_methods(names, teachers if len(teachers) > 1 else teachers[0], options)
    with _given_back_on_error(methods):
        synthetic = [m for m in methods if getattr(m, "replaces_training_data", False)]
        if synthetic:  # no real training image: the teacher's own transfer set
            x, _ = _transfer_set(synthetic[0], data, out, resume, cfg)
            train_data = TrainData(x, None, data.num_classes, inputs=data.inputs)
            provides = {"teacher"}
        elif isinstance(data, DomainPair) and any("target" in m.needs for m in methods):
            # e.g. dann+kd: labelled source, unlabelled target (kd reads inputs=target or both)
            train_data = TrainData(data.source.train.x, data.source.train.y, data.num_classes,
                                   data.target.train.x, inputs=data.inputs)
            provides = {"teacher", "labels", "target"}
        elif isinstance(data, DomainPair):  # the teacher alone on unlabelled target inputs
            train_data = TrainData(data.target.train.x, None, data.num_classes,
                                   inputs=data.inputs)
            provides = {"teacher"}
        elif not data.train_labelled:  # inputs without labels: the teacher alone labels them
            train_data = TrainData(data.train.x, None, data.num_classes, inputs=data.inputs)
            provides = {"teacher"}
        else:
            train_data = TrainData(data.train.x, data.train.y, data.num_classes,
                                   inputs=data.inputs)
            provides = {"teacher", "labels"}
        why = " (on a pair, distill learns from unlabelled target inputs)" if isinstance(
            data, DomainPair) else " (data-free trains on synthesised inputs)" if synthetic \
            else "" if data.train_labelled else f" ({data.name} has no labels)"
        check_needs(methods, provides, "distill", why)
        if "labels" in provides and not any(m.own_label_term for m in methods):
            methods.insert(0, build_methods("supervised")[0])  # the hard labels, as papers do
        leak = _target_labels_note(given, data.name) if "labels" in provides else None
        if leak:
            note(leak, cfg.progress and is_main())
        if not any(m.trains_logits for m in methods):  # no labels, and layers alone
            raise ConfigError(
                f"distill: {'+'.join(names)} compare{'s' * (len(names) == 1)} intermediate "
                f"layers only, and {data.name} gives no labels here{why}, so nothing would "
                "train the student's classifier; add a method on the outputs, e.g. "
                f"{'+'.join(['kd', *names])}")
        for one in teachers:
            _check_classes(one, train_data.x, data.num_classes, "teacher")
        _check_classes(module, train_data.x, data.num_classes, "student", trained=True)
        evals = _evals(data)
        described = [_describe_teacher(t, s, evals, cfg) for t, s in zip(teachers, sources,
                                                                        strict=True)]
        one_teacher = len(teachers) == 1
        record = {"data": data.name, **_data_record(data, data_options), "model": spec,
                  "method": _method_spec(method), "methods": [m.name for m in methods],
                  "method_options": _recorded_options(options),
                  "teacher": described[0][0] if one_teacher else [d[0] for d in described],
                  "teacher_accuracy": described[0][1] if one_teacher
                  else [d[1] for d in described],
                  "teacher_parameters": sum(count_parameters(t) for t in teachers),
                  "teacher_inputs": conventions[0] if one_teacher else conventions}
        if conversion is not None:  # part of what a resume must match
            record["teacher_input"] = conversion.to_dict()
        if leak:
            record["label_note"] = leak
        if synthetic:
            record["training_data"] = f"{len(train_data.x)} inputs synthesised from the " \
                "teacher (no real training image)"
        return _run(RunPlan("distill", module, data, methods, train_data, evals, cfg, spec,
                            record), out, resume)


TRANSFER_SET = "transfer_set.pt"


def _transfer_set(
    method: Method, data, out: str | Path | None, resume: bool, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data-free method's synthesised inputs: read back from ``<out>/transfer_set.pt`` on
    a resume, else synthesised (seeded by the run's seed) and saved there."""
    path = None if out is None else Path(out) / TRANSFER_SET
    if path is not None and resume and path.is_file():
        saved = load_torch(path)
        x, y = saved.get("x"), saved.get("y")
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and (
            tuple(x.shape[1:]) == tuple(data.input_shape)
        ):
            return x, y
        raise CheckpointError(f"{path} is not a transfer set for {data.name}; remove it")
    inputs = data.inputs
    bounds = None if inputs is None else ((0.0 - inputs.mean) / inputs.std,
                                          (1.0 - inputs.mean) / inputs.std)
    note(f"synthesising {method.n_synthetic} inputs from the teacher (data-free)",
         cfg.progress and is_main())
    lock = None
    if path is not None and is_main():  # a second run into the directory is refused now
        if (path.parent / CHECKPOINT).exists() and not resume:
            raise ConfigError(
                f"run directory {path.parent} already holds a run; pass resume=True (--resume) "
                "to continue it or choose another directory"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path.parent).acquire()
    try:
        x, y = method.transfer_set(tuple(data.input_shape), data.num_classes, cfg.seed, bounds)
        if path is not None and is_main():
            save_torch({"x": x, "y": y}, path)
    finally:
        if lock is not None:
            lock.release()  # _run takes it again for the training
    return x, y


def _born_again(teacher, student, data, generations: int, *, out, resume, **kwargs: Any):
    """Born-again networks: generation k's student (a fresh ``student``) learns from
    generation k-1's; each generation is its own run directory ``<out>/gen<k>``."""
    if not isinstance(student, str):
        raise ConfigError("generations > 1 need the student by name (each generation is a new "
                          "network of that architecture), not a module")
    results: list[RunResult] = []
    for generation in range(1, generations + 1):
        run_out = None if out is None else Path(out) / f"gen{generation}"
        result = distill(teacher, student, data, out=run_out, resume=resume, **kwargs)
        results.append(result)
        teacher = result.model if run_out is None else run_out
    last = results[-1]
    last.summary = {**last.summary, "generations": [
        {"generation": k, "final": r.summary["final"], "run_dir": str(r.run_dir or "")}
        for k, r in enumerate(results, start=1)]}
    if out is not None and is_main():
        save_json(last.summary, Path(out) / SUMMARY_FILE)
    return last


def _check_own_weights(teachers: list[nn.Module], module: nn.Module, who: str) -> None:
    """The trained network must not share a parameter with a teacher: the teacher is frozen
    for the run, so the student would not train (and would learn from itself)."""
    frozen = {id(p) for teacher in teachers for p in teacher.parameters()}
    if any(id(p) in frozen for p in module.parameters()):
        raise ConfigError(
            f"the {who} shares its weights with the teacher (the same module?); give the {who} "
            "its own copy (copy.deepcopy(teacher)) or a model name"
        )


@contextmanager
def _given_back_on_error(methods: list[Method]) -> Iterator[None]:
    """Building a method freezes the modules it was given (a teacher: eval mode, no grad) at
    once; a run refused or failed before its Trainer closes them gives them back here (a
    method's close() is idempotent, so closing again after the Trainer's is harmless)."""
    try:
        yield
    except BaseException:
        for method in reversed(methods):
            method.close()
        raise


def _method_spec(method: str | list[str]) -> str:
    """The method list as recorded in config.yaml: ``kd+fitnet``."""
    return "+".join(method_names(method))


def _recorded_options(options: dict[str, Any]) -> dict[str, Any]:
    """Method options for config.yaml: a module given from Python (DANN's ``discriminator``)
    is named, since YAML cannot hold it."""
    return {k: f"module {type(v).__name__} (from Python)" if isinstance(v, nn.Module) else v
            for k, v in options.items()}


def _fit_teacher_inputs(
    teacher: nn.Module, conversion: TeacherInput | None, data: Dataset | DomainPair,
    inputs: InputSpec | None = None,
) -> tuple[nn.Module, str]:
    """The teacher fed batches of ``data`` in what it expects, and one line for the record:
    the user's ``teacher_input`` conversion, else the teacher's recorded convention."""
    inputs = inputs or data.inputs
    if conversion is not None:
        return with_teacher_input(teacher, conversion, inputs, tuple(data.input_shape))
    if getattr(teacher, INPUTS_ATTR, None) is None:  # else fit_teacher checks the shape
        check_declared(teacher, tuple(data.input_shape), f"data {data.name!r}")
    check_raw_rows(teacher, data, "the teacher")
    # A teacher that records another input convention sees each batch converted to it.
    return fit_teacher(teacher, inputs, data.input_shape, data.name)


def _adapt_teacher(
    teacher: nn.Module | str | Path, data: DomainPair, module: nn.Module, cfg: TrainConfig,
    conversion: TeacherInput | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A teacher for adaptation methods composed with distillation (``dann+kd``)."""
    if isinstance(teacher, RunResult):
        teacher = teacher.model
    source = f"module {type(teacher).__name__} (from Python)"
    if isinstance(teacher, str | Path):
        source, teacher = str(teacher), load_model(teacher)
    teacher, reordered = _fit_recorded(teacher, data, "teacher")
    if reordered:
        note(reordered, cfg.progress and is_main())
    teacher, _ = _fit_teacher_inputs(teacher, conversion, data,
                                     getattr(module, INPUTS_ATTR, None))
    _check_classes(teacher, data.source.train.x, data.num_classes, "teacher")
    record, _ = _describe_teacher(teacher, source, _evals(data), cfg)
    return teacher, record


def _describe_teacher(
    teacher: nn.Module, source: str, evals: dict[str, Split], cfg: TrainConfig
) -> tuple[dict[str, Any], dict[str, float]]:
    """What identifies the teacher (source, class, sha256 of its weights) and its accuracy.

    The record goes into ``config.yaml`` so that a resume with another teacher is refused;
    the accuracy is printed now, so a wrong or broken teacher shows before any training.
    """
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    accuracy = {
        name: evaluate_split(teacher, split, device, cfg.eval_batch_size)["accuracy"]
        for name, split in evals.items()
    }
    inner = teacher.model if isinstance(teacher, InputConverted) else teacher
    record = {"source": source, "class": type(inner).__name__, "sha256": weights_sha256(teacher)}
    shown = ", ".join(f"{name} accuracy {value:.2%}" for name, value in accuracy.items())
    note(f"teacher {source}: {shown}", cfg.progress and is_main())
    return record, accuracy


def adapt(
    model: nn.Module | str,
    data: DomainPair | str,
    *,
    method: str = "dann",
    out: str | Path | None = None,
    resume: bool = False,
    data_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    feature_layer: str | None = None,
    method_options: dict[str, Any] | None = None,
    teacher: nn.Module | str | Path | None = None,
    teacher_input: str | dict[str, Any] | TeacherInput | None = None,
    **settings: Any,
) -> RunResult:
    """Adapt ``model`` from a pair's labelled source to its unlabelled target.

    ``method`` may be a list (``"dann+kd"``); methods that compare with a teacher (``kd``)
    need ``teacher`` (a module, or a saved model.pt / run directory); ``teacher_input``
    converts the teacher's batches as in :func:`distill`.

    An ``nn.Module`` given as ``model`` is trained in place; pass a copy to keep the original.

    The loss is ``supervised`` on source plus the adaptation method (``kd`` and ``l2`` mix
    their own label term instead); target labels are used only to report target accuracy,
    never to choose the model (the last epoch is kept, or ``select``'s validator's choice).

    ``feature_layer``: the module whose *input* is the feature vector that methods align
    (dan, jan, coral, cdan, mdd, afn, bsp...) and that mcd copies and shot freezes: the
    classifier. By default the model's ``head``, else the ``nn.Linear`` whose output the
    forward returns (found by running it on two rows); the summary records it as
    ``feature_layer``.
    ``model`` may also be a saved ``model.pt`` / run directory to start from; when it records
    another input convention than the pair's, the pair is converted to it (the adapted model
    keeps its convention).
    """
    names = method_names(method)
    if teacher_input is not None and teacher is None:
        raise ConfigError("teacher_input (--teacher-input) converts a teacher's inputs, and "
                          "this run has no teacher; remove it or give --teacher")
    free = [n for n in names if METHODS.get(n).source_free]
    if free:
        if teacher is not None:
            raise ConfigError(f"adapt: {'+'.join(free)} works from the trained model and "
                              "target data alone, without a teacher; remove teacher= "
                              "(CLI: --teacher)")
        if len(free) != len(names):
            others = [n for n in names if n not in free]
            raise ConfigError(
                f"adapt: {', '.join(free)} works without the source data, while "
                f"{', '.join(others)} trains on it; run them separately (the second from "
                f"the first's model.pt)"
            )
        return _adapt_source_free(model, data, names, out=out, resume=resume,
                                  data_dir=data_dir, data_options=data_options,
                                  model_options=model_options,
                                  feature_layer=feature_layer, method_options=method_options,
                                  settings=settings)
    if teacher is not None and not any(takes_teacher(n) for n in names):
        raise ConfigError(f"adapt: no method in {'+'.join(names)} reads a teacher, so it would "
                          "be loaded and ignored; remove teacher= (CLI: --teacher), or add a "
                          "distillation method, e.g. dann+kd")
    data = resolve_data(data, data_dir, data_options)
    if not isinstance(data, DomainPair):
        raise ConfigError(f"adapt needs a domain pair such as 'mnist->usps', got {data.name!r} "
                          "(arrays in memory: tk.pair(source, target))")
    data_record = _data_record(data, data_options)  # before a conversion copies the data
    cfg, options = split_settings(dict(settings), method_options)
    _check_labelled(data.target, "adapt", cfg.select)
    _say_unlabelled(data.target)
    if data.source.name == data.target.name:  # 'a.csv->a.csv': no shift to adapt to
        note(f"the source and the target are the same data ({data.source.name}): there is no "
             "shift to adapt to, and dev's importance weights (held-out source rows that are "
             "also target rows) sit at their clip, so its score is not a risk estimate",
             cfg.progress and is_main())
    torch.manual_seed(cfg.seed)
    start = str(model) if is_saved_model(model) else None
    if start is not None:
        if model_options:
            raise ConfigError(f"model options apply only to a model given by name, not {start}")
        model, saved = load_record(start)
    module, spec = resolve_model(model, data.input_shape, data.num_classes, **(model_options or {}))
    if start is not None:
        spec = saved.get("spec")  # the adapted model is rebuilt like the one it started from
    data, converted = fit_data(module, data, "model")
    if converted:
        note(converted, cfg.progress and is_main())
    _refuse_reordering(module, data)
    _check_classes(module, data.source.train.x, data.num_classes, "model", trained=True)
    conversion = None if teacher_input is None else parse_teacher_input(teacher_input)
    teacher_module, teacher_record = None, None
    if teacher is not None:
        teacher_module, teacher_record = _adapt_teacher(teacher, data, module, cfg, conversion)
    if teacher_module is not None:
        _check_own_weights([teacher_module], module, "model")
    methods = build_methods(names, teacher_module, options)
    with _given_back_on_error(methods):
        provides = {"labels", "target"} | ({"teacher"} if teacher is not None else set())
        check_needs(methods, provides, "adapt")
        if "supervised" not in names and not any(m.replaces_supervised or m.own_label_term
                                                 for m in methods):
            methods.insert(0, build_methods("supervised")[0])  # the labelled source
        source = data.source.train
        kept, held = holdout_rows(source.y, cfg.source_holdout)
        train_data = TrainData(source.x[kept], source.y[kept], data.num_classes,
                               data.target.train.x, inputs=data.inputs)
        validation = ValidationSets.build(source.x[held], source.y[held], data.target.train.x)
        record = {"data": data.name, **data_record, "model": spec,
                  "method": _method_spec(method), "methods": [m.name for m in methods],
                  "method_options": _recorded_options(options)}
        if teacher_record is not None:
            record["teacher"] = teacher_record
        if conversion is not None:
            record["teacher_input"] = conversion.to_dict()
        if feature_layer is not None:  # it changes what is aligned: part of what a resume matches
            record["feature_layer"] = feature_layer
        if start is not None:  # recorded as given, so a resume names the same file
            record["model"], record["architecture"] = {"name": start, "options": {}}, spec
        if converted:
            record["inputs"] = converted
        record["source_holdout_rows"] = len(held)
        if start is not None and len(held) and (seen := _held_rows_seen(start, data)):
            record["validation_note"] = seen
            note(seen, cfg.progress and is_main())
        return _run(RunPlan("adapt", module, data, methods, train_data, _evals(data), cfg, spec,
                            record, feature_layer, validation), out, resume)


def _target_labels_note(teachers: list[Any], data_name: str) -> str | None:
    """A note when distill reads the labels of data that a teacher was adapted to without
    them (adapt, then distil on the target dataset alone): the student then learns from the
    target labels that adaptation never read."""
    for one in teachers:
        if not isinstance(one, str | os.PathLike):
            continue
        record = run_record(Path(one))
        target = str(record.get("data", "")).split("->")[-1].strip()
        if record.get("command") == "adapt" and target == data_name:
            return (f"the teacher was adapted to {data_name} without its labels, and distill on "
                    f"{data_name} alone reads them (the student's label term); to keep them "
                    f"unread, distil on the pair SOURCE->{data_name}, which reads no label")
    return None


def _held_rows_seen(start: str, data: DomainPair) -> str | None:
    """A note when the saved model that adapt starts from was trained (by train or distill,
    which hold no row out) on this pair's source: the rows held out for source_accuracy and
    dev are then rows it has seen, and those validators read high."""
    record = run_record(Path(start))
    trained_on = str(record.get("data", "")).split("->")[0].strip()
    if record.get("command") in (None, "adapt") or trained_on != data.source.name:
        return None
    return (f"the model it starts from ({start}) was trained on all of {trained_on} by "
            f"{record['command']}, so the source rows held out for source_accuracy and dev "
            "are rows it has seen: those validators read high")


def _target_only(data: Dataset | DomainPair | str, data_dir: str | Path | None,
                 data_options: dict[str, Any] | None = None,
                 unlabelled_classes: Callable[[torch.Tensor], int] | None = None,
                 width: int | None = None, classes: list[Any] | None = None) -> Dataset:
    """The target dataset of a pair (its source never loaded) or a dataset given alone; a
    target file without labels takes its class count from ``unlabelled_classes``, and a CSV
    of exactly ``width`` columns (the model's features) is one without labels; ``classes``
    (the model's class names) fix a target file's class indices. Arrays in memory are read
    again as a file is (a pair's target alone)."""
    if isinstance(data, Dataset | DomainPair):
        origin = _origin(data)
        if origin is None:
            return data.target if isinstance(data, DomainPair) else data
        from transferkit.data.files import load_file_dataset, parse_file_options

        options = parse_file_options(_arrays_options(data, data_options))
        return load_file_dataset(origin, options, classes or None,
                                 unlabelled_classes=unlabelled_classes, width=width)
    data = _data_spec(data)
    from transferkit.data.files import is_data_path

    sides = data.split("->")
    if is_data_path(sides[-1]):  # a file, or a pair with files: the target side alone
        from transferkit.data.files import load_file_dataset, parse_file_options

        return load_file_dataset(sides[-1], parse_file_options(data_options), classes or None,
                                 unlabelled_classes=unlabelled_classes, width=width)
    if any(is_data_path(side) for side in sides):
        return resolve_data(sides[-1], data_dir, data_options)
    return load_pair_target(data, data_dir) if "->" in data else load_dataset(data, data_dir)


def _adapt_source_free(
    model: nn.Module | str,
    data: Dataset | DomainPair | str,
    names: list[str],
    *,
    out: str | Path | None,
    resume: bool,
    data_dir: str | Path | None,
    data_options: dict[str, Any] | None,
    model_options: dict[str, Any] | None,
    feature_layer: str | None,
    method_options: dict[str, Any] | None,
    settings: dict[str, Any],
) -> RunResult:
    """Adapt a trained source model with unlabelled target rows only: the source data is
    never loaded, the target's training labels never read (its test split scores)."""
    if not (isinstance(model, nn.Module) or is_saved_model(model)):
        raise ConfigError(
            f"adapt: {'+'.join(names)} starts from a trained source model: pass its model.pt "
            f"or run directory as model= (CLI: --model RUN_DIR, e.g. from `transferkit train "
            f"--data SOURCE`) or an nn.Module, not the untrained model name {model!r}"
        )
    if model_options:
        raise ConfigError("model options apply only to a model given by name; source-free "
                          "adaptation starts from a saved model")
    if settings.get("source_holdout", DEFAULT_SOURCE_HOLDOUT) not in (0, DEFAULT_SOURCE_HOLDOUT):
        # it would be ignored: there is no source data (the default is what the CLI passes,
        # and 0, holding nothing out, is what a script shares with its source-free rows)
        raise ConfigError(f"adapt: {'+'.join(names)} reads no source data, so source_holdout "
                          "holds nothing out; remove it")
    start = None if isinstance(model, nn.Module) else str(model)
    given = model

    source = given if isinstance(given, nn.Module) else load_model(str(given))
    shape = getattr(source, SHAPE_ATTR, None)

    def classes_of(x: torch.Tensor) -> int:  # a target file without labels: the model's count
        return _probe(source, x[:2], "model")

    known = getattr(source, CLASSES_ATTR, None)  # a target file's labels map to the model's
    # a CSV of exactly the model's width has no label column
    target = _target_only(data, data_dir, data_options, classes_of,
                          shape[0] if shape is not None and len(shape) == 1 else None, known)
    data_record = _data_record(target, data_options)  # before a conversion copies the data
    cfg, options = split_settings(dict(settings), method_options)
    _check_labelled(target, "adapt", cfg.select)
    _say_unlabelled(target)
    torch.manual_seed(cfg.seed)
    spec = None
    if start is not None:
        model, saved = load_record(start)
        spec = saved.get("spec")
    assert isinstance(model, nn.Module)
    target, converted = fit_data(model, target, "model")
    if converted:
        note(converted, cfg.progress and is_main())
    _refuse_reordering(model, target)
    _check_classes(model, target.train.x, target.num_classes, "model")
    if "tent" in names and (others := [n for n in names if n not in ("tent", "adabn")]):
        raise ConfigError(
            f"tent trains only the normalisation layers and freezes every other weight, so "
            f"{'+'.join(others)} beside it would train those alone; run {others[0]} alone, or "
            "tent (after adabn: adabn+tent)")
    methods = build_methods(names, None, options)
    with _given_back_on_error(methods):
        train_data = TrainData(target.train.x, None, target.num_classes,  # no labels, no source
                               inputs=target.inputs)
        record = {"data": target.name, **data_record, "source_free": True,
                  "method": "+".join(names),
                  "methods": names, "method_options": options,
                  "model": {"name": start or type(model).__name__, "options": {}}}
        if spec is not None:
            record["architecture"] = spec
        if feature_layer is not None:
            record["feature_layer"] = feature_layer
        if converted:
            record["inputs"] = converted
        validation = ValidationSets.build(None, None, target.train.x)
        evals = {"target_test": target.test} if target.labelled else {}
        return _run(RunPlan("adapt", model, target, methods, train_data, evals, cfg, spec,
                            record, feature_layer, validation), out, resume)


class Scores(dict):
    """What ``evaluate`` returns: split name -> metrics, plus ``notes`` on what was done to
    the data (e.g. inputs converted to the model's convention); a plain dict otherwise."""

    def __init__(self, scores: dict[str, dict[str, float]], notes: list[str],
                 validators: dict[str, float] | None = None) -> None:
        super().__init__(scores)
        self.notes = notes
        self.validators = validators or {}  # label-free scores, when asked for


def evaluate(
    model: nn.Module | str | Path,
    data: Dataset | DomainPair | str,
    *,
    data_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 1024,
    validators: bool = False,
    source_holdout: float | None = None,
) -> Scores:
    """Accuracy and loss on the test split(s); ``model`` may be a model.pt or run directory.

    ``validators=True`` adds the label-free validators' scores (``Scores.validators``): on a
    pair, on the held-out source rows ``adapt`` kept aside (``source_holdout``: by default the
    share the run recorded, else 0.1; the same rows) and the unlabelled target training
    inputs; on a dataset, on its training inputs as the target (entropy, im, snd only). No
    target label is read for them.

    When the model records an input convention (see ``load_model``) and the data another one
    of the same shape, the data is converted to the model's first (said in ``notes`` and on
    stderr); a different input shape is refused. An image folder is read with the
    ``size``/``channels`` the model's training images were read with, where it records them
    and ``data_options`` leave them out (said in ``notes`` and on stderr).
    """
    check_count("batch_size", batch_size)
    if source_holdout is None and is_saved_model(model):  # the rows the run held out
        source_holdout = _recorded_holdout(Path(model))
    given = model
    model, who = _trained_model(model, "evaluate")
    net = model
    arrays = data.origin if isinstance(data, Dataset) else None  # read again as a file is
    if arrays is not None:
        data_options = _arrays_options(data, data_options)
    data_options, read_alike = _recorded_steps(model, data, data_options)
    data_options, images_read = _recorded_image_read(model, data, data_options)
    recorded = getattr(model, NORMALIZATION_ATTR, None)
    if arrays is not None or _lone_file(data):  # read as predict reads it; labels mapped by
        from transferkit.data.files import (  # its classes
            HELD_OUT_MARK,
            load_file_dataset,
            parse_file_options,
        )

        names = getattr(model, CLASSES_ATTR, None)
        shape = getattr(model, SHAPE_ATTR, None)  # a CSV of exactly its width: no labels
        data = load_file_dataset(arrays or _data_spec(data), parse_file_options(data_options),
                                 names or None, unlabelled_classes=lambda x: _probe(net, x, who),
                                 width=shape[0] if shape is not None and len(shape) == 1
                                 else None, recorded=recorded if read_alike else None,
                                 indexed=not names,
                                 shape=None if shape is None else tuple(shape))
        if read_alike:
            read_alike = (f"read with the model's normalisation ({','.join(recorded.steps)}, "
                          "its training rows' statistics), as predict reads it; --normalize "
                          "names other steps, fitted on this file")
        split = data.description.rpartition("; test = ")[2]  # the reader's last clause
        if parse_file_options(data_options).test is None and HELD_OUT_MARK in split:
            every = "test='all' in tk.from_arrays" if arrays is not None else \
                "--data-opt test=all (test='all' in data_options)"
            note(f"scored on the test split that a run on {data.name} holds out, not on every "
                 f"row ({split}); {every} scores every row", is_main())
    else:
        data = resolve_data(data, data_dir, data_options,
                            lambda x: _probe(net, x, who))  # a file without labels: its classes
    model, reordered = _fit_recorded(model, data, who, steps_must_match=False)
    unlike = _normalization_mismatch(model, data) or read_alike
    if unlike is None and getattr(model, NORMALIZATION_ATTR, None) is None:
        _say_recorded_normalize(given, data_options)  # a model.pt that predates the record
    scored = _evals(data)
    if not scored and not validators:
        raise ConfigError(f"{data.name} has no labels, so there is no accuracy to measure; "
                          "validators=True (CLI: --validators) gives label-free scores")
    target = data.target if isinstance(data, DomainPair) else data
    probe = {"rows": target.train} if not scored else {}  # the model is still checked on them
    evals, converted = fit_splits(model, data, {**scored, **probe}, who)
    if converted:
        note(converted, is_main())
    dev = local_device(device)
    model = model.to(dev)
    _check_classes(model, next(iter(evals.values())).x, data.num_classes, "model")
    evals = {name: split for name, split in evals.items() if name in scored}
    scores = {name: evaluate_split(model, split, dev, batch_size) for name, split in evals.items()}
    for name, values in scores.items():  # argmax of NaN would score as a made-up accuracy
        if not math.isfinite(values["loss"]):
            with torch.no_grad(), eval_mode(model):
                logits = torch.cat([model(chunk.to(dev)) for chunk in
                                    evals[name].x.split(batch_size)])
            check_finite_outputs(model, logits, f"{data.name} ({name})")
    holdout = DEFAULT_SOURCE_HOLDOUT if source_holdout is None else source_holdout
    found = _validator_scores(model, data, who, dev, batch_size, holdout,
                              _recorded_layer(given)) if validators else None
    notes = [n for n in (images_read, converted) if n]
    if reordered:
        note(reordered, is_main())
        notes.append(reordered)
    if unlike is not None:
        note(unlike, is_main())
        notes.append(unlike)
    if found and isinstance(data, DomainPair) and is_saved_model(given):
        command = run_record(Path(given)).get("command")
        if command is not None and command != "adapt":  # it held no source row out
            notes.append(f"source_accuracy and dev score source rows that this model trained on "
                         f"(its {command} run held none out), so they read high; only an "
                         "adapt run's held-out rows are unseen")
            note(notes[-1], is_main())
    if not target.labelled:
        notes.append(f"{target.name} has no labels: no accuracy on it"
                     + ("" if validators else "; --validators (validators=True) scores the "
                        "model on it without labels"))
        note(notes[-1], is_main())
    return Scores(scores, notes, found)


def _lone_file(data: Any) -> bool:
    """A data file or image folder named alone (not a pair, not a registered name)."""
    from transferkit.data.file_options import is_data_path

    return isinstance(data, str | os.PathLike) and "->" not in os.fspath(data) and \
        is_data_path(os.fspath(data).strip())


def _recorded_steps(model: nn.Module, data: Any, options: dict[str, Any] | None
                    ) -> tuple[dict[str, Any] | None, str | None]:
    """Data files read with the normalisation steps the model trained with, when the options
    name none: each file then gets its own training rows' statistics, as in training (the
    training files are read exactly as they were). Returns the options and a note."""
    from transferkit.data.files import is_data_path

    recorded = getattr(model, NORMALIZATION_ATTR, None)
    if not isinstance(recorded, Normalization) or (options or {}).get("normalize"):
        return options, None
    arrays = isinstance(data, Dataset) and data.origin is not None  # read as a file is
    if not arrays and not (isinstance(data, str | os.PathLike) and all(
            is_data_path(part.strip()) for part in os.fspath(data).split("->"))):
        return options, None
    steps = ",".join(recorded.steps)
    return {**(options or {}), "normalize": steps}, (
        f"read with the model's normalisation ({steps}), each file with its own training rows' "
        "statistics as in training; --normalize names other steps")


def _recorded_image_read(model: nn.Module, data: Any, options: dict[str, Any] | None
                         ) -> tuple[dict[str, Any] | None, str | None]:
    """Image folders read with the ``size``/``channels`` the model's training images were
    read with (its record), where the options leave them out: field photos then reach the
    model as its training photos did. An option given explicitly is read as given, even
    when it differs from the record (the note says so, on stderr). Returns the options and
    the note (None when nothing was recorded, added or overridden, or ``data`` names no image
    folder: every data path in it must be one)."""
    from transferkit.data.file_options import _kind, is_data_path, parse_file_options

    recorded = getattr(model, IMAGE_READ_ATTR, None)
    if not isinstance(recorded, dict) or not recorded or not isinstance(data, str | os.PathLike):
        return options, None
    files = [part.strip() for part in os.fspath(data).split("->") if is_data_path(part.strip())]
    try:
        if not files or any(_kind(Path(part)) != "images" for part in files):
            return options, None
    except TransferkitError:  # a missing path: refused in one line where it is read
        return options, None
    given = parse_file_options(options)
    added = {k: v for k, v in recorded.items() if getattr(given, k) is None}
    other = {k: getattr(given, k) for k, v in recorded.items()
             if getattr(given, k) not in (None, v)}

    def words(values: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in values.items())

    said = []
    if added:
        said.append(f"read with {words(added)} as the model's training images were (its "
                    "record; --data-opt, data_options in Python, reads them otherwise)")
    if other:
        said.append(f"read with {words(other)} as given, not with "
                    f"{words({k: recorded[k] for k in other})} as the model's training images "
                    "were")
    if not said:
        return options, None
    told = f"{' and '.join(files)}: images {'; '.join(said)}"
    note(told, is_main())  # said before reading: a size given otherwise may then be refused
    return {**(options or {}), **added}, told


def _fit_recorded(model: nn.Module, data: Dataset | DomainPair, who: str,
                  steps_must_match: bool = True) -> tuple[nn.Module, str | None]:
    """``model`` checked against what it recorded of its training data: the same class names
    (check_class_names), the normalisation steps (a teacher fed raw counts that it learnt as
    z-scores teaches nothing: refused when ``steps_must_match``), and its CSV columns, put
    in its order when the data has them in another (fit_columns; the note says so)."""
    check_class_names(model, class_names(data), data.name, who)
    if steps_must_match and not getattr(model, RAW_ROWS_ATTR, False) and (
            unlike := _normalization_mismatch(model, data, who)):
        raise ConfigError(unlike)
    columns = column_names(data)
    return fit_columns(model, columns and columns["features"], data.name, who)


def _refuse_reordering(model: nn.Module, data: Dataset | DomainPair) -> None:
    """A saved model that ``adapt`` trains further meets its data as recorded: the same
    classes and normalisation, and its CSV columns in its order (a wrapper that reorders
    them would change the network that is saved)."""
    _, reordered = _fit_recorded(model, data, "model")
    if reordered:
        raise ConfigError(f"the model was trained on {data.name}'s columns in another order "
                          f"({reordered.rpartition('(')[2].rstrip(')')}); give the data with "
                          "its columns in that order")


def _normalization_mismatch(model: nn.Module, data: Dataset | DomainPair,
                            who: str = "model") -> str | None:
    """A note when ``data`` is read with other normalisation steps than the model trained on
    (scores of raw counts fed to a z-scored model mean nothing); each file is then normalised
    with its own training rows' statistics, as in training."""
    recorded = getattr(model, NORMALIZATION_ATTR, None)
    if not isinstance(recorded, Normalization):
        return None
    fitted = fitted_normalization(data)
    read = fitted.steps if fitted is not None else ()
    if read == recorded.steps:
        return None
    steps = ",".join(recorded.steps)
    how = f"normalised by {','.join(read)}" if read else "without normalisation"
    return (f"the {who} was trained on rows normalised by {steps}, but {data.name} is read "
            f"{how}: pass --normalize {steps} (normalize= in data_options) to feed it rows as "
            "in its training")


def _trained_model(model: nn.Module | str | Path, verb: str) -> tuple[nn.Module, str]:
    """A module as given (a RunResult's), or loaded from a model.pt / run directory; and how
    to name it."""
    if isinstance(model, RunResult):
        model = model.model
    if is_saved_model(model):
        return load_model(model), f"model {model}"
    if isinstance(model, str):
        raise ConfigError(f"{verb} needs a trained model: {model!r} is not a file or run dir")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{verb} needs an nn.Module or a saved model, got "
                          f"{type(model).__name__}")
    return model, "model"


def predict(
    model: nn.Module | str | Path,
    data: Dataset | DomainPair | str,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 1024,
) -> Predictions:
    """Each row's predicted class, its confidence and every class's probability; no label is
    read. A data file's every row in file order (``x`` then ``x_test``), an image folder's
    every image by path (``train/`` then ``test/``; read with the ``size``/``channels`` the
    model's training images were read with, when it records them and the options leave them
    out: said on stderr), arrays from ``from_arrays`` as the file of
    them, a pair's target (its file or arrays, or a registered target's ``split``), a
    registered dataset's ``split``. Classes are named as the
    model recorded them (the labels it trained on). ``Predictions.to_csv(path)`` writes them;
    see :mod:`transferkit.predict`.
    """
    from transferkit.data.files import is_data_path, load_rows_to_predict, parse_file_options

    check_count("batch_size", batch_size)
    module, who = _trained_model(model, "predict")
    recorded = getattr(module, NORMALIZATION_ATTR, None)
    recorded = recorded if isinstance(recorded, Normalization) else None
    if recorded is None:  # a model.pt written before models kept their normalisation
        _say_recorded_normalize(model, data_options)
    names = getattr(module, CLASSES_ATTR, None)
    shape = getattr(module, SHAPE_ATTR, None)

    def classes_of(x: torch.Tensor) -> list[Any]:  # the model's names, else its indices
        count = _probe(module, x, who)
        return list(names) if names and len(names) == count else list(range(count))

    rows: InMemory | str | None = _origin(data)  # every row of arrays, or of a data file
    if rows is not None:  # their test= chose a split for training: every row is read here
        data_options = {k: v for k, v in _arrays_options(data, data_options).items()
                        if k != "test"}
    elif isinstance(data, str | os.PathLike):
        target = os.fspath(data).split("->")[-1].strip()  # a file, or a pair's target file
        rows = target if is_data_path(target) else None
        data_options, _ = _recorded_image_read(module, rows, data_options)
    if rows is not None:
        if split != "train":
            what = "arrays in memory" if isinstance(rows, InMemory) else f"a data file ({rows})"
            raise ConfigError(f"split={split!r}: predict reads every row of {what}; split "
                              "applies to registered datasets")
        width = shape[0] if shape is not None and len(shape) == 1 else None
        columns = getattr(module, COLUMNS_ATTR, None) or {}
        data = load_rows_to_predict(rows, parse_file_options(data_options), classes_of,
                                    width, recorded, shape=shape,
                                    columns=columns.get("features"),
                                    label_column=columns.get("label"))
    else:
        data = resolve_data(data, data_dir, data_options)
    dataset, part = rows_to_predict(data, split)
    splits, converted = fit_splits(module, dataset, {part: getattr(dataset, part)}, who)
    if converted:
        note(converted, is_main())
    dev = local_device(device)
    module = module.to(dev)
    _check_classes(module, splits[part].x, dataset.num_classes, "model")
    return predictions(module, dataset, splits[part].x, part, dev, batch_size)


def _recorded_holdout(path: Path) -> float | None:
    """The ``source_holdout`` the run that saved ``path`` trained with (None: not recorded)."""
    train = run_record(path).get("train")
    holdout = train.get("source_holdout") if isinstance(train, dict) else None
    return float(holdout) if isinstance(holdout, int | float) else None


def _say_recorded_normalize(model: Any, options: dict[str, Any] | None) -> None:
    """A run that normalised its features (``--normalize zscore``) needs its data read so for
    predictions too; say so when the options leave it out (the statistics are then the
    predicted rows', not the training rows')."""
    if not is_saved_model(model) or (options or {}).get("normalize"):
        return
    recorded = (run_record(Path(model)).get("data_options") or {}).get("normalize")
    if recorded:
        steps = recorded if isinstance(recorded, str) else ",".join(map(str, recorded))
        note(f"the run that saved {model} normalised its data ({steps}); pass --normalize "
             f"{steps} (normalize= in data_options) to read these rows alike", is_main())


def _recorded_layer(given: Any) -> str | None:
    """The feature layer the run that saved ``given`` validated with (its ``dev`` and
    ``snd`` read it): the summary's, else the one its record names; None when unknown."""
    if not is_saved_model(given):
        return None
    path = Path(given)
    summary = (path if path.is_dir() else path.parent) / SUMMARY_FILE
    try:
        layer = json.loads(summary.read_text(encoding="utf-8")).get("feature_layer")
    except (OSError, ValueError, AttributeError):
        layer = None
    layer = layer or run_record(path).get("feature_layer")
    return layer if isinstance(layer, str) and layer else None


def _validator_scores(model: nn.Module, data: Dataset | DomainPair, who: str,
                      device: torch.device, batch_size: int, holdout: float,
                      layer: str | None = None) -> dict[str, float]:
    """Label-free scores of ``model`` on the rows ``adapt`` would validate on (``layer``:
    the features dev and snd read, by default the model's head input)."""
    target = data.target if isinstance(data, DomainPair) else data
    splits: dict[str, Split] = {"target_train": target.train}
    if isinstance(data, DomainPair):
        _, held = holdout_rows(data.source.train.y, holdout)
        if len(held):  # holdout 0: the run held no source rows out, so none is scored
            splits["source_holdout"] = Split(data.source.train.x[held],
                                             data.source.train.y[held])
    splits, _ = fit_splits(model, target if len(splits) == 1 else data, splits, who)
    source = splits.get("source_holdout")
    sets = ValidationSets.build(None if source is None else source.x,
                                None if source is None else source.y, splits["target_train"].x)
    if layer is not None and isinstance(model, ColumnsReordered):
        layer = f"model.{layer}"  # the wrapper's path to the same module
    return validator_scores(model, sets, layer, device, batch_size)


def inspect(
    run: str | Path,
    data: DomainPair | str,
    *,
    before: str | Path | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    device: str = "auto",
    picture: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Proxy A-distance and a t-SNE picture of source vs target features (the head's input,
    on both test splits; no label read), for the run's model and for the model it started
    from (``before``: a model.pt / run directory; by default the saved model the run was
    adapted from, when it was one). Writes ``inspect.json`` and ``tsne_after.png`` /
    ``tsne_before.png`` into ``out`` (default ``<run>/inspect``)."""
    from transferkit.report import proxy_a_distance, tsne_picture
    from transferkit.report.adistance import feature_rows

    if check_count("seed", seed, 0) > 2**32 - 1:  # t-SNE's and the split's NumPy seeds
        raise ConfigError(f"seed must be an integer from 0 to {2**32 - 1}, got {seed}")
    if out is not None and not str(out).strip():  # Path("") is the current folder
        raise ConfigError("inspect --out is empty; give the folder for inspect.json and the "
                          "pictures (e.g. --out runs/exp1/inspect; out= in Python), or leave "
                          "it off for RUN/inspect")
    after = Path(run)  # the model measured: the file given, else the run's model.pt
    run_dir = after.parent if after.is_file() else after
    data = resolve_data(data, data_dir, data_options)
    if not isinstance(data, DomainPair):
        raise ConfigError(f"inspect compares two domains: give a pair such as 'mnist->usps', "
                          f"not {data.name!r}")
    target_dir = Path(out) if out is not None else run_dir / "inspect"
    blocking = next((p for p in (target_dir, *target_dir.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"inspect --out {target_dir}: {blocking} is a file; give a folder "
                          "for inspect.json and the pictures")
    has_record = (run_dir / "config.yaml").is_file()
    record = read_yaml(run_dir / "config.yaml", "run record") if has_record else {}
    if not isinstance(record, dict):
        raise ConfigError(f"run record {run_dir / 'config.yaml'} is not a mapping of settings")
    layer = record.get("feature_layer")
    if before is None:
        spec = record.get("model")
        start = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(start, str) and is_saved_model(start):
            before = start
    dev = local_device(device)
    models = {"after": after} if before is None else {"before": Path(before), "after": after}
    report: dict[str, Any] = {"data": data.name, "rows": feature_rows(data),
                              "feature_layer": layer or "the head's input"}
    if before is None:
        report["before"] = (("not available: the run started from an untrained model"
                             if has_record else f"not available: {run_dir} holds no run record "
                             "(config.yaml) saying what the model started from")
                            + "; give --before with the source-only run")
    for when, path in models.items():
        model = load_model(path).to(dev)
        splits, _ = fit_splits(model, data, {"source": data.source.test,
                                             "target": data.target.test}, f"model {path}")
        source, _ = features_and_logits(model, splits["source"].x, layer, dev)
        target, _ = features_and_logits(model, splits["target"].x, layer, dev)
        entry: dict[str, Any] = {"model": str(path), **proxy_a_distance(source, target, seed)}
        if picture:
            png = target_dir / f"tsne_{when}.png"
            title = f"{data.name}, {when} adaptation: proxy A-distance {entry['a_distance']:.2f}"
            entry["picture"] = str(tsne_picture(source, target, png, title, seed))
        report[when] = entry
    if is_main():
        target_dir.mkdir(parents=True, exist_ok=True)
        save_json(report, target_dir / "inspect.json")
    return report


def export(
    run: str | Path,
    fmt: str = "onnx",
    *,
    quantize: str | None = None,
    data: Dataset | DomainPair | str | None = None,
    data_dir: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    out: str | Path | None = None,
    rows: int = 2000,
    threads: int = 1,
) -> dict[str, Any]:
    """Write the run's model as ONNX or TorchScript (``quantize="int8"``: dynamic int8), check
    it against PyTorch on the test split of ``data`` (by default the data the run recorded; on
    a pair, the target's), and measure file size and CPU latency (batch 1 and 256). Writes
    ``<run>/model[.int8].onnx`` (or ``.ts``) and the report beside it as ``.json``."""
    from transferkit.data.file_options import parse_file_options
    from transferkit.deploy import FORMATS, SUFFIX, export_model

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    for name, value in (("rows", rows), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"export --{name} must be a whole number >= 1, got {value!r}")
    run_dir = Path(run)
    model_file = run_dir / MODEL_FILE if run_dir.is_dir() else run_dir
    if model_file.suffix.lower() == ".onnx" or is_torchscript(model_file):
        raise ConfigError(f"{model_file} is already an exported network; export reads a "
                          f"transferkit {MODEL_FILE} or run directory (give the run it came from)")
    tag = ".int8" if quantize == "int8" else ""
    path = Path(out) if out is not None else model_file.parent / f"model{tag}{SUFFIX[fmt]}"
    if not str(out if out is not None else path).strip():
        raise ConfigError("export --out is empty; give the file to write, e.g. model.onnx")
    kept = {model_file.resolve(), model_file.parent.resolve() / CHECKPOINT,
            model_file.parent.resolve() / MODEL_FILE}
    if path.resolve() in kept:
        raise ConfigError(f"export --out {path} would overwrite the run's own {path.name}; "
                          f"give another file, e.g. {model_file.parent / ('model' + SUFFIX[fmt])}")
    other = {s for f, s in SUFFIX.items() if f != fmt}
    if path.suffix.lower() in other or (fmt == "onnx" and path.suffix.lower() != ".onnx"):
        raise ConfigError(f"export --out {path}: a {fmt} file is named *{SUFFIX[fmt]}; "
                          f"give a name ending in {SUFFIX[fmt]}, or the other --format")
    model = load_model(model_file)
    fitted = getattr(model, NORMALIZATION_ATTR, None)

    def raw_rows(options: Any) -> Any:  # the graph normalises them itself
        if not (isinstance(fitted, Normalization) and isinstance(options, Mapping)):
            return options
        steps = parse_file_options({"normalize": options.get("normalize")}).normalize
        fitted.refuse_other_steps(steps, "export --normalize", "the exported graph")
        return {k: v for k, v in options.items() if k != "normalize"} or None

    def classes_of(x: torch.Tensor) -> int:  # data without labels: the model's class count
        return _probe(model, x, f"model {model_file}")

    if data is None:
        record = run_record(model_file)
        data = _recorded_on_disk(record, model_file.parent, "export")
        data_options = raw_rows(data_options or record.get("data_options"))
        try:
            data = resolve_data(data, data_dir, data_options, classes_of)
        except TransferkitError as exc:  # e.g. a relative path, recorded from another folder
            kind = type(exc) if type(exc) in (DataError, ConfigError) else ConfigError
            raise kind(f"{exc} (the data the run recorded, {record['data']!r}, as it was "
                            "given when it trained; give --data to check on other data)"
                            ) from None
    else:
        data_options, _ = _recorded_image_read(model, data, data_options)
        data = resolve_data(data, data_dir, raw_rows(data_options), classes_of)
    rows_of = data.target if isinstance(data, DomainPair) else data
    splits, _ = fit_splits(model, data, {"test": rows_of.test}, f"model {model_file}")
    _check_classes(model, splits["test"].x[:2], data.num_classes, "model")
    x, y = splits["test"].x[:rows], splits["test"].y[:rows]
    if not rows_of.labelled:  # parity on its rows, but no accuracy: it has no labels
        y = None
    raw = None
    if isinstance(fitted, Normalization):  # the model's inputs: the raw rows normalised
        raw, x = x, fitted.apply(rows_of.name, x)
    report = export_model(model, x, path, fmt=fmt, quantize=quantize, y=y, threads=threads,
                          raw=raw)
    if not rows_of.labelled:
        report["accuracy_note"] = f"{rows_of.name} has no labels: parity only, no accuracy"
    report["data"] = data.name
    report["parameters"] = count_parameters(model)
    if is_main():
        save_json(report, path.with_suffix(path.suffix + ".json"))
    return report


def _check_classes(model: nn.Module, x: torch.Tensor, num_classes: int, who: str,
                   trained: bool = False) -> None:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    got = _probe(model, x.to(device), who, trained)
    if got != num_classes:
        raise ConfigError(
            f"the {who} outputs {got} classes but the data has {num_classes}; "
            "teacher, student and data must agree on the number of classes"
        )


def list_components() -> dict[str, dict[str, str]]:
    """Registered datasets, domain pairs, models, methods and validators, one line each."""
    from transferkit.data import DATASETS, PAIRS
    from transferkit.validators import VALIDATORS

    return {
        "datasets": DATASETS.describe(),
        "pairs": PAIRS.describe(),
        "models": MODELS.describe(),
        "methods": METHODS.describe(),
        "validators (adapt --select)": {
            name: f"{v.description} ({v.paper.split(',')[0]})" for name, v in VALIDATORS.items()
        },
    }


def report_runs(
    runs: str | Path | list[str | Path],
    out: str | Path = "report.html",
    *,
    data_dir: str | Path | None = None,
    tsne_points: int | None = None,
    seed: int = 0,
) -> Path:
    """Write one self-contained HTML page comparing ``runs`` (run directories, or a folder of
    runs such as the demo's): comparison table (methods, final accuracy, parameters, model
    size, CPU latency, training time, adapt's label-free and oracle choices), learning curves,
    confusion matrix on the test split (the target's for a pair) and, for a pair, t-SNE
    (``tsne_points`` rows per domain, default 500) and proxy A-distance. Needs the ``report``
    extra."""
    from transferkit.report.html import Readers, write_report

    return write_report(runs, out, Readers(load_record, resolve_data), data_dir=data_dir,
                        tsne_points=tsne_points, seed=seed)
