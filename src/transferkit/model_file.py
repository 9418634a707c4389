"""A trained model on disk: ``model.pt`` written and read back, and the record that an
exported ONNX/TorchScript file carries.

Besides the weights, a model file records what rebuilds and feeds the network: its
architecture (a registered name, or a ``module:factory`` that is only called when the user
trusts it), input shape and convention, class names, the normalisation fitted on its
training rows, the CSV columns it was trained on and the options its training images were
read with (``size``, ``channels``). Every field is checked on reading, so a
crafted file is refused in one line instead of failing deep inside torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.config import read_yaml
from transferkit.data import DomainPair
from transferkit.data.file_options import MAX_IMAGE_SIDE
from transferkit.data.inputs import (
    CLASSES_ATTR,
    COLUMNS_ATTR,
    IMAGE_READ_ATTR,
    INPUTS_ATTR,
    NORMALIZATION_ATTR,
    RAW_ROWS_ATTR,
    SHAPE_ATTR,
    InputSpec,
)
from transferkit.data.normalize import Normalization
from transferkit.engine.checkpoint import load_torch, load_weights, save_torch
from transferkit.engine.loop import CHECKPOINT
from transferkit.errors import CheckpointError, ConfigError, TransferkitError
from transferkit.files import RunLock
from transferkit.models import MODELS, load_torchscript, resolve_model
from transferkit.models.onnx import OnnxModel, is_torchscript, torchscript_inputs_record

MODEL_FILE = "model.pt"
MODEL_FORMAT = "transferkit.model/1"
TRUST_CODE_ENV = "TRANSFERKIT_TRUST_CODE"


def save_model(model: nn.Module, path: Path, spec: dict[str, Any] | None, data) -> None:
    """Weights plus what rebuilds the architecture (``load_model`` reads it back).

    ``inputs`` is the training data's input convention (None when unknown), so the model can
    later be fed data on its own scale.
    """
    save_torch(
        {
            "format": MODEL_FORMAT,
            "spec": spec,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "inputs": None if data.inputs is None else data.inputs.to_dict(),
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            # a module given from Python cannot be rebuilt from a file: its class is named in
            # the message that asks for it (load_model(path, MyNet()))
            **({"module_class": type(model).__qualname__} if spec is None else {}),
            **({"classes": classes} if (classes := class_names(data, model)) else {}),
            **({"normalize": fitted.to_record()} if (fitted := fitted_normalization(data)) else {}),
            **({"columns": columns} if (columns := column_names(data)) else {}),
            **({"image_read": read} if (read := image_read_options(data)) else {}),
        },
        path,
    )


def column_names(data: Any) -> dict[str, Any] | None:
    """The CSV header of the rows the model is meant for (a pair's target, as it was read:
    aligned to the source's names, or its own header), else its training data's: feature
    names in input order and the label column's name."""
    sides = [data.target, data.source] if isinstance(data, DomainPair) else [data]
    meant = next((side for side in sides if getattr(side, "columns", None)), None)
    if meant is None:
        return None
    label = next((side.label_column for side in sides if getattr(side, "label_column", None)),
                 None)
    return {"features": list(meant.columns), "label": label}


def _checked_columns(record: Any, where: str) -> dict[str, Any] | None:
    """A recorded ``columns`` entry as written by transferkit, else a CheckpointError."""
    if record is None:
        return None
    features = record.get("features") if isinstance(record, dict) else None
    label = record.get("label") if isinstance(record, dict) else None
    if not (isinstance(features, list) and features and all(isinstance(n, str) for n in features)
            and (label is None or isinstance(label, str))):
        raise CheckpointError(f"{where}: its column record is damaged (features must be a list "
                              "of names, label a name or null); use a file that transferkit "
                              "wrote")
    return {"features": features, "label": label}


def image_read_options(data: Any) -> dict[str, int] | None:
    """The ``size``/``channels`` options the image folder the model is meant for was read with
    (a pair's target, else its source: both sides of a pair of folders are read alike, and a
    folder source beside a registered target still shows how field images reach the model's
    input shape); None when neither was given or no side is an image folder."""
    sides = [data.target, data.source] if isinstance(data, DomainPair) else [data]
    read = next((side.image_read for side in sides if getattr(side, "image_read", None)), None)
    if not read:
        return None
    shape = tuple(getattr(data, "input_shape", ()))
    size, channels = read.get("size"), read.get("channels")
    fits = len(shape) == 3 and (size is None or shape[1] == shape[2] == size) and (
        channels is None or channels == shape[0])
    return dict(read) if fits else None  # else a pair brought it to another input space


def _checked_image_read(record: Any, where: str, shape: Any) -> dict[str, int] | None:
    """A recorded ``image_read`` entry as written by transferkit (``size`` from 1 to
    MAX_IMAGE_SIDE and ``channels`` 1 or 3, either or both, agreeing with the model's input
    shape ``C x size x size``), else a CheckpointError."""
    if record is None:
        return None

    def whole(value: Any, allowed: range | tuple[int, ...]) -> bool:
        return value is None or (isinstance(value, int) and not isinstance(value, bool)
                                 and value in allowed)

    fits = isinstance(record, dict) and bool(record) and set(record) <= {"size", "channels"}
    size = record.get("size") if fits else None
    channels = record.get("channels") if fits else None
    if not (fits and whole(size, range(1, MAX_IMAGE_SIDE + 1)) and whole(channels, (1, 3))):
        raise CheckpointError(f"{where}: its image read record is damaged (size must be a whole "
                              f"number from 1 to {MAX_IMAGE_SIDE}, channels 1 or 3, got "
                              f"{record!r:.80}); use a file that transferkit wrote")
    image = isinstance(shape, list | tuple) and len(shape) == 3
    if not (image and size in (None, shape[1]) and size in (None, shape[2])
            and channels in (None, shape[0])):
        raise CheckpointError(f"{where}: its image read record is damaged ({record} for inputs "
                              f"{list(shape) if isinstance(shape, list | tuple) else shape}); "
                              "use a file that transferkit wrote")
    return dict(record)


def fitted_normalization(data: Any) -> Normalization | None:
    """The normalisation fitted on the rows the model is meant for: a pair's target's (a
    target is normalised with its own statistics), else the data's."""
    meant = data.target if isinstance(data, DomainPair) else data
    fitted = getattr(meant, "normalization", None)
    return fitted if isinstance(fitted, Normalization) else None


def class_names(data: Any, model: nn.Module | None = None) -> list[Any] | None:
    """The training data's class names (a file's labels, e.g. ["cat", "dog"]) as plain JSON
    values, so a prediction can name its class; else the names the model came with (a
    source-free run on a file without labels keeps its source model's); None for indices."""
    labelled = data.source if isinstance(data, DomainPair) else data
    names = list(getattr(labelled, "classes", None) or [])
    if names == list(range(len(names))) or not all(isinstance(c, str | int | float)
                                                  for c in names):
        names = list(getattr(model, CLASSES_ATTR, None) or [])
    return names or None


def load_model(path: str | Path, model: nn.Module | str | None = None, **options: Any) -> nn.Module:
    """Rebuild a model saved as ``model.pt`` (or load its weights into ``model``).

    ``path`` may be a run directory; a training ``checkpoint.pt`` also works. The module's
    attribute ``transferkit_inputs`` is the input convention it was trained on (an InputSpec,
    None when the file does not record one); ``evaluate``, ``distill`` and ``adapt`` use it to
    feed the model data on its own scale. The module comes back in eval mode, ready to
    predict (dropout off, BatchNorm on its running statistics); ``.train()`` to fine-tune it.
    """
    return load_record(path, model, **options)[0].eval()


def load_record(
    path: str | Path, model: nn.Module | str | None = None, **options: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """``load_model`` plus what the file records besides the weights (spec, input shape...)."""
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"a saved model is named by its path (a model.pt or run directory, "
                          f"as str or Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file() and (path / CHECKPOINT).is_file():
            if (owner := RunLock.holder(path)) is not None:
                raise CheckpointError(f"{path} has no {MODEL_FILE} yet: its run is still "
                                      f"training (pid {owner}); wait for it to finish")
            try:  # the command it was started with, from its record
                record = read_yaml(path / "config.yaml", "run record")
            except TransferkitError:
                record = None
            command = record.get("command") if isinstance(record, dict) else None
            command = command if command in ("train", "distill", "adapt") else "COMMAND"
            raise CheckpointError(
                f"{path} has no {MODEL_FILE} yet: its run has not finished (it stopped at its "
                f"{CHECKPOINT}); finish it with `transferkit {command} --out {path} --resume`")
        path = path / MODEL_FILE
    if path.suffix.lower() == ".onnx" or is_torchscript(path):  # from another toolchain
        if model is not None:
            raise ConfigError(f"{path} is a whole network; load it without a model to fill")
        onnx = path.suffix.lower() == ".onnx"
        foreign = OnnxModel(path) if onnx else load_torchscript(path)
        text = foreign.inputs_record if onnx else torchscript_inputs_record(path)
        _set_exported_record(foreign, text, path)
        return foreign, {"spec": None, "format": path.suffix.lower().lstrip(".")}
    state = load_torch(path)
    if "objective" in state:  # a training checkpoint: take the model's part
        weights = {k[6:]: v for k, v in state["objective"].items() if k.startswith("model.")}
        saved = {"spec": None}
    elif state.get("format") == MODEL_FORMAT:
        weights, saved = state.get("state_dict"), state
        _check_model_record(path, saved)
    else:
        raise TransferkitError(f"{path} is not a transferkit model.pt or checkpoint.pt")
    if model is None:
        spec = saved.get("spec")
        if spec is None and "objective" in state:
            raise ConfigError(
                f"{path} is a training checkpoint, which does not name its architecture: use "
                f"the run's {MODEL_FILE} (written when the run finishes; continue an unfinished "
                "run with --resume), or from Python pass the network: load_model(path, model)")
        if spec is None:
            given = saved.get("module_class")
            named = isinstance(given, str) and given.isidentifier()
            net = f"{given}()" if named else "MyNet()"
            raise ConfigError(
                f"{path} holds the weights of a network given from Python"
                f"{f' (class {given})' if named else ''}, which a file cannot rebuild: "
                f"pass the network, load_model(path, {net}) or load_run(run, model={net}), "
                "or evaluate/export the module that load_model returns")
        _check_factory_trusted(path, spec["name"])
        with torch.random.fork_rng(devices=[]):  # initial weights, overwritten: the global
            model, _ = resolve_model(  # RNG stays as it was (a path teaches as a module does)
                spec["name"], tuple(saved["input_shape"]), saved["num_classes"],
                **spec["options"])
    elif isinstance(model, str):
        if "input_shape" not in saved:
            raise ConfigError(f"{path} does not record its input shape; pass an nn.Module")
        shape, classes = tuple(saved["input_shape"]), saved["num_classes"]
        spec = saved.get("spec")
        if not options and isinstance(spec, dict) and spec.get("name") == model:
            options = dict(spec.get("options") or {})  # the factory the user named, as saved
        with torch.random.fork_rng(devices=[]):
            model, _ = resolve_model(model, shape, classes, **options)
    load_weights(model, weights, str(path), f"model {type(model).__name__}")
    try:
        inputs = None if saved.get("inputs") is None else InputSpec.from_dict(saved["inputs"])
    except TransferkitError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if inputs is not None and inputs.shape is None and "input_shape" in saved:
        inputs = InputSpec(inputs.mean, inputs.std, tuple(saved["input_shape"]))
    setattr(model, INPUTS_ATTR, inputs)
    shape = saved.get("input_shape")
    setattr(model, SHAPE_ATTR, None if shape is None else tuple(shape))
    names = saved.get("classes")
    if names is not None and not (_plain_names(names)
                                  and len(names) == saved["num_classes"]):
        raise CheckpointError(f"{path}: its class record is damaged (classes must be "
                              f"{saved['num_classes']} distinct names or numbers); use a file "
                              "that transferkit wrote")
    setattr(model, CLASSES_ATTR, list(names) if isinstance(names, list) else None)
    try:
        fitted = None if saved.get("normalize") is None else Normalization.from_record(
            saved["normalize"], str(path))
    except TransferkitError as exc:
        raise CheckpointError(str(exc)) from None
    if fitted is not None and fitted.mean is not None and (
            fitted.mean.dim() != len(saved["input_shape"]) + 1
            or fitted.mean.shape[1] != saved["input_shape"][0]):
        raise CheckpointError(f"{path}: its normalisation record is damaged (statistics of "
                              f"shape {list(fitted.mean.shape[1:])} for inputs "
                              f"{saved['input_shape']}); use a file that transferkit wrote")
    setattr(model, NORMALIZATION_ATTR, fitted)
    setattr(model, COLUMNS_ATTR, _checked_columns(saved.get("columns"), str(path)))
    setattr(model, IMAGE_READ_ATTR, _checked_image_read(saved.get("image_read"), str(path),
                                                        saved.get("input_shape")))
    return model, {k: v for k, v in saved.items() if k != "state_dict"}


def _plain_names(names: Any) -> bool:
    """Class names as transferkit records them: a list of distinct JSON scalars."""
    return isinstance(names, list) and all(isinstance(c, str | int | float) for c in names) \
        and len(set(names)) == len(names)


def _check_factory_trusted(path: Path, name: str) -> None:
    """A model.pt that names a ``module:factory`` would have transferkit import and call that
    code to rebuild the network (``os:system`` runs a shell command): opening a file never
    does so on its own. The user who trained it says so by naming the factory themselves
    (``load_model(path, "pkg.nets:build")``) or with ``TRANSFERKIT_TRUST_CODE=1``."""
    if ":" not in name or name in MODELS or os.environ.get(TRUST_CODE_ENV) == "1":
        return
    raise ConfigError(
        f"{path} names the model factory {name!r}: rebuilding the network would import and "
        "call that code, which opening a file never does on its own. If you trained it "
        f"(--model {name}), say so: set {TRUST_CODE_ENV}=1, or in Python "
        f"load_model(path, {name!r})")


def _set_exported_record(model: nn.Module, text: str | None, path: Path) -> None:
    """What ``transferkit export`` wrote into an ONNX/TorchScript file, set on the module as
    ``load_model`` sets it: the input convention, class names, normalisation, CSV columns and
    image read options (None when not recorded)."""
    inputs = names = fitted = shape = columns = image_read = None
    raw_rows = False
    if text is not None:
        try:
            record = json.loads(text)
            shape = record.get("input_shape")
            if shape is not None and not (isinstance(shape, list) and shape and all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
                raise ValueError(f"input_shape must be a list of positive ints, got {shape!r}")
            spec = record.get("inputs")
            if spec is not None:
                inputs = InputSpec.from_dict(spec)
                if shape is not None:
                    inputs = InputSpec(inputs.mean, inputs.std, tuple(shape))
            names = record.get("classes")
            if names is not None and not _plain_names(names):
                raise ValueError(f"classes must be a list of distinct names, got {names!r:.80}")
            if record.get("normalize") is not None:
                fitted = Normalization.from_record(record["normalize"], "the record")
            columns = _checked_columns(record.get("columns"), "the record")
            image_read = _checked_image_read(record.get("image_read"), "the record", shape)
            raw_rows = record.get("normalization_in_graph") is not None
        except (ValueError, TypeError, AttributeError, TransferkitError) as exc:
            raise CheckpointError(f"{path}: its transferkit input record is damaged ({exc})"
                                  ) from None
    setattr(model, COLUMNS_ATTR, columns)
    setattr(model, IMAGE_READ_ATTR, image_read)
    setattr(model, RAW_ROWS_ATTR, raw_rows)
    setattr(model, INPUTS_ATTR, inputs)
    setattr(model, SHAPE_ATTR, None if shape is None else tuple(shape))
    setattr(model, CLASSES_ATTR, names)
    setattr(model, NORMALIZATION_ATTR, fitted)


def _check_model_record(path: Path, saved: dict[str, Any]) -> None:
    """A model.pt's fields have the types transferkit writes (a crafted file gets one line)."""
    spec = saved.get("spec")
    shape = saved.get("input_shape")
    problems = []
    if spec is not None and not (
        isinstance(spec, dict) and isinstance(spec.get("name"), str)
        and isinstance(spec.get("options", {}), dict)
    ):
        problems.append("spec must be {name: str, options: dict}")
    if not (isinstance(shape, list | tuple) and shape and all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    )):
        problems.append("input_shape must be a list of positive ints")
    classes = saved.get("num_classes")
    if not (isinstance(classes, int) and not isinstance(classes, bool) and classes > 0):
        problems.append("num_classes must be a positive int")
    if not isinstance(saved.get("state_dict"), dict):
        problems.append("state_dict must be a dict of tensors")
    if problems:
        raise CheckpointError(
            f"{path} is not a valid transferkit model.pt ({'; '.join(problems)}); "
            "use a file that transferkit wrote"
        )
    saved.setdefault("spec", None)
    if isinstance(spec, dict):
        spec.setdefault("options", {})


def is_saved_model(model: Any) -> bool:
    """A path to a model.pt, checkpoint or run directory (not a model or factory name)."""
    if isinstance(model, Path):
        return True
    return isinstance(model, str) and model not in MODELS and (
        Path(model).exists() or model.endswith(".pt")
    )
