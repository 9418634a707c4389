"""The Python API: ``train``, ``distill``, ``adapt`` and ``evaluate`` in a line each.

    import transferkit as tk
    teacher = tk.train("seed-cnn", "mnist", epochs=3).model
    student = tk.distill(teacher, "seed-mlp", "mnist", method="kd", temperature=4).model
    adapted = tk.adapt("lenet", "mnist->usps", method="dann", epochs=10).model

Models are an ``nn.Module``, a registered name or a ``package.module:factory`` path; data is
a :class:`Dataset`, a :class:`DomainPair` or a registered name (``a->b`` names a pair). With
``out=...`` a run directory is written: ``config.yaml``, ``metrics.jsonl``,
``checkpoint.pt`` (every epoch, atomically), ``model.pt`` and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from transferkit.config import OptimConfig, TrainConfig, validate
from transferkit.data import Dataset, DomainPair, Split, load_dataset, load_pair
from transferkit.engine.checkpoint import (
    atomic_write,
    load_torch,
    load_weights,
    save_json,
    save_torch,
)
from transferkit.engine.distributed import is_main, local_device
from transferkit.engine.evaluate import evaluate_split
from transferkit.engine.loop import METRICS, RESUME_FREE, TrainData, Trainer
from transferkit.errors import CheckpointError, ConfigError, TransferkitError
from transferkit.methods import ADAPTATION, DISTILLATION, METHODS, Method, build_method
from transferkit.models import MODELS, build_model, count_parameters, load_factory

MODEL_FILE = "model.pt"
SUMMARY_FILE = "summary.json"
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", MODEL_FILE, SUMMARY_FILE)
MODEL_FORMAT = "transferkit.model/1"
TRAIN_FIELDS = set(TrainConfig.model_fields)
OPTIM_FIELDS = set(OptimConfig.model_fields) - {"name"}


@dataclass
class RunResult:
    """What a run gives back: the trained model, its per-epoch metrics and the summary."""

    model: nn.Module
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None


# ---- resolving arguments -------------------------------------------------------------------
def resolve_data(data: Dataset | DomainPair | str, data_dir: str | Path | None = None):
    """A dataset or pair object, or load it by name (``a->b`` is a domain pair)."""
    if isinstance(data, Dataset | DomainPair):
        return data
    if not isinstance(data, str):
        raise ConfigError(f"data must be a dataset name, Dataset or DomainPair, got {data!r}")
    return load_pair(data, data_dir) if "->" in data else load_dataset(data, data_dir)


def resolve_model(
    model: nn.Module | str, input_shape: tuple[int, ...], num_classes: int, /, **options: Any
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The module and, when it was built from a name, the spec needed to rebuild it."""
    given = {"input_shape": input_shape, "num_classes": num_classes}
    if clash := sorted(given.keys() & options.keys()):
        key = clash[0]
        raise ConfigError(f"model option {key!r} is set from the data ({given[key]}); remove it")
    if isinstance(model, nn.Module):
        if options:
            raise ConfigError("model options apply only to a model given by name")
        return model, None
    if not isinstance(model, str):
        raise ConfigError(f"model must be an nn.Module or a name, got {type(model).__name__}")
    if ":" in model and model not in MODELS:
        module = load_factory(model, input_shape, num_classes, **options)
    else:
        module = build_model(model, input_shape, num_classes, **options)
    return module, {"name": model, "options": options}


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
    return validate(TrainConfig, train, "training settings"), {**settings, **(method_options or {})}


def _probe(model: nn.Module, x: torch.Tensor, who: str) -> int:
    """Number of classes the model outputs, with a clear error when the input does not fit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except RuntimeError as exc:
        raise ConfigError(
            f"{who} cannot take inputs of shape {tuple(x.shape[1:])}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ConfigError(f"{who} must return N x classes logits, got shape {tuple(out.shape)}")
    return int(out.shape[1])


# ---- run directory ---------------------------------------------------------------------------
def _prepare_run_dir(out: str | Path | None, config: dict[str, Any], resume: bool) -> Path | None:
    """Check that the run may (re)start in ``out`` and create it; writes no file yet."""
    if out is None:
        return None
    run_dir = Path(out)
    if (run_dir / "checkpoint.pt").exists():
        if not resume:
            raise ConfigError(
                f"run directory {run_dir} already holds a run; pass resume=True (--resume) to "
                "continue it or choose another directory"
            )
        _check_resume_config(run_dir, yaml.safe_load(yaml.safe_dump(config, sort_keys=False)))
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:  # atomic_write's temporary files from a write that a kill interrupted
            for name in RUN_FILES:
                for stale in run_dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
    return run_dir


def _write_config(run_dir: Path | None, config: dict[str, Any]) -> None:
    if run_dir is not None and is_main():
        text = yaml.safe_dump(config, sort_keys=False)
        atomic_write(run_dir / "config.yaml", lambda f: f.write(text.encode()))


def _check_resume_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a run with other data, model, method or settings (before writing)."""
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return  # no readable record: the checkpoint's own check still applies
    if not isinstance(saved, dict):
        return

    def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for key, value in tree.items():
            name = f"{prefix}{key}"
            if name in {f"train.{k}" for k in RESUME_FREE}:
                continue
            if isinstance(value, dict) and key in ("train", "optim"):
                items.update(flat(value, name + "."))
            else:
                items[name] = value
        return items

    old, new = flat(saved), flat(config)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise CheckpointError(
            f"cannot resume the run in {run_dir}: settings differ ({', '.join(diff)}); "
            "resume with the settings of the interrupted run or start a new run directory"
        )


def save_model(model: nn.Module, path: Path, spec: dict[str, Any] | None, data) -> None:
    """Weights plus what rebuilds the architecture (``load_model`` reads it back)."""
    save_torch(
        {
            "format": MODEL_FORMAT,
            "spec": spec,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
        path,
    )


def load_model(path: str | Path, model: nn.Module | str | None = None, **options: Any) -> nn.Module:
    """Rebuild a model saved as ``model.pt`` (or load its weights into ``model``).

    ``path`` may be a run directory; a training ``checkpoint.pt`` also works.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    state = load_torch(path)
    if "objective" in state:  # a training checkpoint: take the model's part
        weights = {k[6:]: v for k, v in state["objective"].items() if k.startswith("model.")}
        saved = {"spec": None}
    elif state.get("format") == MODEL_FORMAT:
        weights, saved = state["state_dict"], state
    else:
        raise TransferkitError(f"{path} is not a transferkit model.pt or checkpoint.pt")
    if model is None:
        spec = saved.get("spec")
        if spec is None:
            raise ConfigError(f"{path} does not name its architecture; pass the model to build")
        model, _ = resolve_model(
            spec["name"], tuple(saved["input_shape"]), saved["num_classes"], **spec["options"]
        )
    elif isinstance(model, str):
        if "input_shape" not in saved:
            raise ConfigError(f"{path} does not record its input shape; pass an nn.Module")
        shape, classes = tuple(saved["input_shape"]), saved["num_classes"]
        model, _ = resolve_model(model, shape, classes, **options)
    load_weights(model, weights, str(path), f"model {type(model).__name__}")
    return model


def load_run(run_dir: str | Path) -> RunResult:
    """A finished run directory as a :class:`RunResult` (model, summary, per-epoch metrics)."""
    run_dir = Path(run_dir)
    missing = [n for n in (MODEL_FILE, SUMMARY_FILE, METRICS) if not (run_dir / n).is_file()]
    if missing:
        raise CheckpointError(
            f"{run_dir} is not a finished run: {', '.join(missing)} missing "
            "(an interrupted run continues with --resume)"
        )
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        history = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{run_dir}: cannot read the run record ({exc})") from None
    return RunResult(load_model(run_dir), summary, history, run_dir)


# ---- the verbs -------------------------------------------------------------------------------
def _run(
    command: str,
    model: nn.Module | str,
    data,
    methods: list[Method],
    train_data: TrainData,
    evals: dict[str, Split],
    cfg: TrainConfig,
    spec: dict[str, Any] | None,
    record: dict[str, Any],
    out: str | Path | None,
    resume: bool,
    feature_layer: str | None,
) -> RunResult:
    config = {"command": command, **record, "train": cfg.model_dump()}
    run_dir = _prepare_run_dir(out, config, resume)
    start = time.perf_counter()
    trainer = Trainer(model, methods, train_data, cfg, evals, run_dir, feature_layer)
    resumed = resume and trainer.resume()
    _write_config(run_dir, config)  # only now: a refused resume leaves the old record
    try:
        history = trainer.fit()
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
        "selection": "last epoch (no early stopping; no target labels used to choose a model)",
        "resumed": bool(resumed),
        "seconds_this_session": round(time.perf_counter() - start, 2),
    }
    if run_dir is not None and is_main():
        save_model(trainer.model, run_dir / MODEL_FILE, spec, data)
        save_json(summary, run_dir / SUMMARY_FILE)
    return RunResult(trainer.model, summary, history, run_dir)


def _evals(data) -> dict[str, Split]:
    if isinstance(data, DomainPair):
        return {"source_test": data.source.test, "target_test": data.target.test}
    return {"test": data.test}


def train(
    model: nn.Module | str,
    data: Dataset | DomainPair | str,
    *,
    method: str = "supervised",
    out: str | Path | None = None,
    resume: bool = False,
    data_dir: str | Path | None = None,
    model_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    **settings: Any,
) -> RunResult:
    """Train ``model`` on labelled data (on a pair: the source domain, i.e. source-only)."""
    data = resolve_data(data, data_dir)
    cfg, options = split_settings(dict(settings), method_options)
    torch.manual_seed(cfg.seed)
    module, spec = resolve_model(model, data.input_shape, data.num_classes, **(model_options or {}))
    labelled = data.source if isinstance(data, DomainPair) else data
    _check_classes(module, labelled.train.x, data.num_classes, "model")
    methods = [build_method(method, **options)]
    train_data = TrainData(labelled.train.x, labelled.train.y, data.num_classes)
    record = {"data": data.name, "model": spec, "method": method, "method_options": options}
    return _run("train", module, data, methods, train_data, _evals(data), cfg, spec, record,
                out, resume, None)


def distill(
    teacher: nn.Module | str,
    student: nn.Module | str,
    data: Dataset | DomainPair | str,
    *,
    method: str = "kd",
    out: str | Path | None = None,
    resume: bool = False,
    data_dir: str | Path | None = None,
    student_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    **settings: Any,
) -> RunResult:
    """Distil ``teacher`` into ``student``.

    On a dataset the student sees its labelled training data; on a domain pair it learns from
    the teacher alone on the unlabelled target training inputs (adapt, then distil).
    ``teacher`` may be a module, or a path to a ``model.pt`` / run directory.
    """
    if method not in DISTILLATION:
        raise ConfigError(f"distill takes one of {', '.join(DISTILLATION)}, got {method!r}")
    data = resolve_data(data, data_dir)
    cfg, options = split_settings(dict(settings), method_options)
    torch.manual_seed(cfg.seed)
    if isinstance(teacher, str | Path):
        teacher = load_model(teacher)
    module, spec = resolve_model(
        student, data.input_shape, data.num_classes, **(student_options or {})
    )
    if isinstance(data, DomainPair):
        train_data = TrainData(data.target.train.x, None, data.num_classes)
    else:
        train_data = TrainData(data.train.x, data.train.y, data.num_classes)
    _check_classes(teacher, train_data.x, data.num_classes, "teacher")
    _check_classes(module, train_data.x, data.num_classes, "student")
    methods = [build_method(method, teacher=teacher, **options)]
    record = {"data": data.name, "model": spec, "method": method, "method_options": options,
              "teacher_parameters": count_parameters(teacher)}
    return _run("distill", module, data, methods, train_data, _evals(data), cfg, spec, record,
                out, resume, None)


def adapt(
    model: nn.Module | str,
    data: DomainPair | str,
    *,
    method: str = "dann",
    out: str | Path | None = None,
    resume: bool = False,
    data_dir: str | Path | None = None,
    model_options: dict[str, Any] | None = None,
    feature_layer: str | None = None,
    method_options: dict[str, Any] | None = None,
    **settings: Any,
) -> RunResult:
    """Adapt ``model`` from a pair's labelled source to its unlabelled target.

    The loss is ``supervised`` on source plus the adaptation method; target labels are used
    only to report target accuracy, never to choose the model (the last epoch is kept).
    """
    if method not in ADAPTATION:
        raise ConfigError(f"adapt takes one of {', '.join(ADAPTATION)}, got {method!r}")
    data = resolve_data(data, data_dir)
    if not isinstance(data, DomainPair):
        raise ConfigError(f"adapt needs a domain pair such as 'mnist->usps', got {data.name!r}")
    cfg, options = split_settings(dict(settings), method_options)
    torch.manual_seed(cfg.seed)
    module, spec = resolve_model(model, data.input_shape, data.num_classes, **(model_options or {}))
    _check_classes(module, data.source.train.x, data.num_classes, "model")
    methods = [build_method("supervised"), build_method(method, **options)]
    train_data = TrainData(
        data.source.train.x, data.source.train.y, data.num_classes, data.target.train.x
    )
    record = {"data": data.name, "model": spec, "method": method, "method_options": options}
    return _run("adapt", module, data, methods, train_data, _evals(data), cfg, spec, record,
                out, resume, feature_layer)


def evaluate(
    model: nn.Module | str | Path,
    data: Dataset | DomainPair | str,
    *,
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 1024,
) -> dict[str, dict[str, float]]:
    """Accuracy and loss on the test split(s); ``model`` may be a model.pt or run directory."""
    data = resolve_data(data, data_dir)
    if isinstance(model, str | Path) and (Path(model).exists() or str(model).endswith(".pt")):
        model = load_model(model)
    elif isinstance(model, str):
        raise ConfigError(f"evaluate needs a trained model: {model!r} is not a file or run dir")
    dev = local_device(device)
    model = model.to(dev)
    evals = _evals(data)
    _check_classes(model, next(iter(evals.values())).x, data.num_classes, "model")
    return {name: evaluate_split(model, split, dev, batch_size) for name, split in evals.items()}


def _check_classes(model: nn.Module, x: torch.Tensor, num_classes: int, who: str) -> None:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    got = _probe(model, x.to(device), who)
    if got != num_classes:
        raise ConfigError(
            f"the {who} outputs {got} classes but the data has {num_classes}; "
            "teacher, student and data must agree on the number of classes"
        )


def list_components() -> dict[str, dict[str, str]]:
    """Registered datasets, domain pairs, models and methods with one line each."""
    from transferkit.data import DATASETS, PAIRS

    return {
        "datasets": DATASETS.describe(),
        "pairs": PAIRS.describe(),
        "models": MODELS.describe(),
        "methods": METHODS.describe(),
    }
