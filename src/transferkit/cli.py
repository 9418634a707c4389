"""Command line: ``transferkit demo | train | distill | adapt | evaluate | export | inspect |
report | list``.

Every training command writes one run directory (``--out``, default ``runs/<command>-<time>``)
and accepts ``--config run.yaml`` (fields of :class:`transferkit.config.RunConfig`); flags
given on the command line override the file. ``--out DIR --resume`` continues the run in DIR
with the settings it recorded (flags given now override them; ``--epochs`` may extend it).
Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from torch import nn

from transferkit import api
from transferkit.config import (
    OptimConfig,
    RunConfig,
    TrainConfig,
    normalize_settings,
    parse_yaml,
    read_yaml,
    short_repr,
    validate,
)
from transferkit.data import DATASETS, ENV_VAR, PAIRS
from transferkit.data.teacher_input import parse_teacher_input
from transferkit.engine.distributed import is_main, local_device, shutdown
from transferkit.errors import CheckpointError, ConfigError, TransferkitError
from transferkit.files import describe_os_error, json_text
from transferkit.methods import METHODS, build_methods, check_needs, method_names, takes_teacher
from transferkit.models import MODELS
from transferkit.run_dir import IN_MEMORY, RUN_FILES, RUN_RECORDS

TRAIN_FLAGS = {
    "epochs": int,
    "batch_size": int,
    "steps_per_epoch": int,
    "target_batch_size": int,
    "seed": int,
    "device": str,
    "jitter": int,
    "augment": str,
    "select": str,
    "source_holdout": float,
}
OPTIM_FLAGS = {
    "optimizer": str,
    "lr": float,
    "momentum": float,
    "weight_decay": float,
    "schedule": str,
    "step_size": int,
    "gamma": float,
    "max_norm": float,
}


def parse_options(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML (numbers, lists, booleans)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(
                f"{flag} {short_repr(pair)}: write key=value, e.g. {flag} temperature=4"
            )
        if not value.strip():  # `key=` is a forgotten value, not a request for the default
            raise ConfigError(
                f"{flag} {short_repr(pair)}: {key} has no value; write {key}=VALUE, or drop "
                f"the flag to keep the default"
            )
        options[key] = parse_yaml(value, f"{flag} {key}")
    return options


DATA_DIR_HELP = "folder with local dataset files (else TRANSFERKIT_DATA_DIR)"
DEVICE_HELP = "auto (a GPU when there is one; default), cpu, cuda, cuda:1"
MODEL_OPT_HELP = "model option, e.g. widths=[64] (mlp) or bottleneck=256 (lenet)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"transferkit: error: {message} (see {self.prog} --help)\n")


def _add_data_file_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-opt", action="append", metavar="KEY=VALUE",
                   help="how to read a data file: x=NAME, y=NAME, test=0.2|all, size=28, ...")
    p.add_argument("--normalize", help="feature files: zscore, l1, log, or a list such as "
                   "log,zscore (statistics from the training rows only)")


def data_options(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--data-opt`` pairs and ``--normalize`` over the recorded or YAML ones."""
    options = {**(base or {}), **parse_options(getattr(args, "data_opt", None), "--data-opt")}
    normalize = getattr(args, "normalize", None)
    if normalize is not None:
        if not normalize.strip(" ,"):
            raise ConfigError("--normalize has no steps; write e.g. --normalize zscore (or "
                              "log,zscore), or drop the flag to read the features as they are")
        options["normalize"] = normalize
    return options


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with run settings (flags override it)")
    p.add_argument("--data", help="dataset or domain pair name (see `transferkit list`)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    _add_data_file_flags(p)
    p.add_argument("--out", help="run directory (default runs/<command>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-divergence-check", action="store_true",
                   help="finish a run whose loss explodes or whose predictions collapse")
    p.add_argument("--amp", nargs="?", const="bf16", choices=["off", "auto", "bf16"],
                   help="bfloat16 autocast: bf16 (the flag alone), off, or auto (bf16 only "
                   "where the GPU or CPU computes it natively); the run records its choice")
    p.add_argument("--compile", nargs="?", const="on", choices=["off", "on", "graphs"],
                   help="torch.compile the training step: on (the flag alone), off, or graphs "
                   "(plus CUDA graphs on a GPU); what cannot be compiled runs eagerly, said in "
                   "one line")
    p.add_argument("--memory-format", choices=["auto", "channels_last", "contiguous"],
                   help="auto (default): channels-last weights for convolutional networks on "
                   "the CPU (faster; same values); or choose channels_last / contiguous")
    p.add_argument("--data-on-device", choices=["auto", "off"],
                   help="auto (default): keep the training tensors on the GPU when they fit; "
                   "off: copy each batch")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log the per-epoch scalars to OUT/tensorboard (tensorboard extra)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="method option, e.g. trade_off=0.5 (docs/methods.md lists each "
                   "method's; a wrong name is refused with the list)")
    p.add_argument("--lr-factor", action="append", metavar="LAYER=FACTOR",
                   help="learning-rate factor of a student layer, e.g. features=0.1")
    for name, kind in {**TRAIN_FLAGS, **OPTIM_FLAGS}.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=_setting_help(name))


def _setting_help(flag: str) -> str:
    """A training flag's help: its setting's description and default, from the config."""
    if flag in TrainConfig.model_fields:
        info = TrainConfig.model_fields[flag]
    else:
        info = OptimConfig.model_fields["name" if flag == "optimizer" else flag]
    default = info.get_default(call_default_factory=True)
    return (info.description or "") + ("" if default is None else f"; default {default}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transferkit", description=(
        "Knowledge distillation and domain adaptation. Every training command writes one run "
        "directory (--out) and takes --config FILE; `transferkit COMMAND --help` for each."))
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="distil and adapt on the bundled digits (no download)")
    demo.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    demo.add_argument("--epochs-scale", type=float, default=1.0, help="scale every budget")
    demo.add_argument("--seed", type=int, default=0, help="random seed of every run (default 0)")
    demo.add_argument("--report", action="store_true",
                      help="also write report.html of the demo's runs into its run directory")

    train = sub.add_parser("train", help="supervised training (teachers, source-only)")
    train.add_argument("--model", help="model name or package.module:factory")
    train.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help=MODEL_OPT_HELP)
    train.add_argument("--method", help="method needing labels only (default supervised)")
    _add_training_flags(train)

    distill = sub.add_parser("distill", help="distil a teacher into a student")
    distill.add_argument("--teacher", action="append",
                         help="teacher model.pt / run dir, or a model name to train; repeat "
                         "it for several teachers (ensemble)")
    distill.add_argument("--generations", type=int,
                         help="born-again generations: each student teaches the next")
    distill.add_argument("--teacher-opt", action="append", metavar="KEY=VALUE",
                         help="option of the teacher model to train, e.g. widths=[256]")
    distill.add_argument("--teacher-epochs", type=int, help="epochs when training the teacher")
    distill.add_argument("--teacher-input", metavar="SPEC",
                         help="what a teacher trained elsewhere expects, e.g. "
                         "'mean=[0.1307],std=[0.3081],size=28' (also channels=3, range=[-1,1]); "
                         "each batch is converted for the teacher only")
    distill.add_argument("--student", "--model", dest="model", help="student model name")
    distill.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                         help=MODEL_OPT_HELP)
    distill.add_argument("--method", help="method or list such as kd+fitnet (default kd)")
    _add_training_flags(distill)

    adapt = sub.add_parser("adapt", help="adapt a model from a source to a target domain")
    adapt.add_argument("--model", help="model name or package.module:factory")
    adapt.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help=MODEL_OPT_HELP)
    adapt.add_argument("--method", help="adaptation method or list such as dann+kd "
                       "(default dann)")
    adapt.add_argument("--feature-layer", help="module whose input is the feature vector")
    adapt.add_argument("--teacher", help="teacher model.pt / run dir, or a model name to train "
                       "on the source, for lists such as dann+kd")
    adapt.add_argument("--teacher-opt", action="append", metavar="KEY=VALUE",
                       help="option of the teacher model to train, e.g. widths=[256]")
    adapt.add_argument("--teacher-input", metavar="SPEC",
                       help="what a teacher trained elsewhere expects, e.g. "
                       "'mean=[0.1307],std=[0.3081],size=28' (also channels=3, range=[-1,1]); "
                       "each batch is converted for the teacher only")
    _add_training_flags(adapt)

    evaluate = sub.add_parser("evaluate", help="accuracy of a saved model on a dataset or pair")
    evaluate.add_argument("model", help="model.pt or run directory")
    evaluate.add_argument("--data", required=True,
                          help="dataset, domain pair or data file to score on")
    evaluate.add_argument("--data-dir", help=DATA_DIR_HELP)
    _add_data_file_flags(evaluate)
    evaluate.add_argument("--device", default="auto", help=DEVICE_HELP)
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    predict = sub.add_parser("predict", help="each row's predicted class and confidence, as a "
                             "CSV (no label read): a file in file order, images by path")
    predict.add_argument("model", help="model.pt or run directory")
    predict.add_argument("--data", required=True, help="data file, image folder, pair (its "
                         "target) or dataset to predict")
    predict.add_argument("--out", default="predictions.csv",
                         help="the CSV to write (default predictions.csv)")
    predict.add_argument("--probs", action="store_true",
                         help="also every class's probability (columns p_CLASS)")
    predict.add_argument("--split", default="train", choices=["train", "test"],
                         help="which split of a registered dataset (files: every row)")
    predict.add_argument("--data-dir", help=DATA_DIR_HELP)
    _add_data_file_flags(predict)
    predict.add_argument("--device", default="auto", help=DEVICE_HELP)
    export = sub.add_parser("export", help="write a run's model as ONNX or TorchScript, check "
                            "it against PyTorch, measure size and latency")
    export.add_argument("run", help="run directory (or its model.pt)")
    export.add_argument("--format", default="onnx", choices=["onnx", "torchscript"],
                        help="onnx (default) or torchscript")
    export.add_argument("--quantize", choices=["int8"], help="dynamic int8 weights")
    export.add_argument("--data", help="data to check on (default: what the run recorded)")
    export.add_argument("--data-dir", help=DATA_DIR_HELP)
    _add_data_file_flags(export)
    export.add_argument("--out", help="the file to write (default RUN/model[.int8].onnx|.ts)")
    export.add_argument("--rows", type=int, default=2000, help="test rows to check parity on")
    export.add_argument("--threads", type=int, default=1, help="CPU threads for the latency")
    inspect = sub.add_parser("inspect", help="proxy A-distance and t-SNE of source vs target "
                             "features, before and after adaptation")
    inspect.add_argument("run", help="run directory (or its model.pt)")
    inspect.add_argument("--data", required=True, help="the domain pair")
    inspect.add_argument("--before", help="model.pt / run directory to compare with (default: "
                         "the saved model the run started from)")
    inspect.add_argument("--out", help="folder for inspect.json and the PNGs (default "
                         "RUN/inspect)")
    inspect.add_argument("--data-dir", help=DATA_DIR_HELP)
    _add_data_file_flags(inspect)
    inspect.add_argument("--device", default="auto", help=DEVICE_HELP)
    inspect.add_argument("--no-picture", action="store_true",
                         help="A-distance only (no t-SNE, no matplotlib needed)")
    evaluate.add_argument("--validators", action="store_true",
                          help="also print the label-free validators' scores (pairs: held-out "
                          "source rows and unlabelled target inputs)")

    report = sub.add_parser("report", help="one self-contained HTML page comparing runs: "
                            "curves, table, confusion matrices, t-SNE")
    report.add_argument("runs", nargs="+", metavar="RUN",
                        help="run directories (a folder of runs stands for its runs)")
    report.add_argument("--out", default="report.html", help="the page to write "
                        "(default report.html)")
    report.add_argument("--data-dir", help="folder with the runs' dataset files")
    report.add_argument("--tsne-points", type=int, default=None,
                        help="rows per domain in the t-SNE pictures (pairs; default 500)")
    report.add_argument("--seed", type=int, default=0,
                        help="seed of the t-SNE pictures and their row samples (default 0)")

    listing = sub.add_parser("list", help="datasets, pairs, models and methods; with a NAME, "
                             "that one's options and formula")
    listing.add_argument("name", nargs="?", help="a dataset, pair, model, method or validator "
                         "to explain, e.g. dann")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """Merge the settings a resumed run recorded, ``--config`` YAML and the flags given (each
    overriding the one before), validate the result and check it before anything runs."""
    raw = _file_settings(Path(args.config), args) if args.config else {}
    if args.resume:
        out = args.out if args.out is not None else raw.get("out")
        if out is None:
            raise ConfigError("--resume needs --out: the run directory to continue")
        raw = _overlay(_saved_settings(Path(out), args), raw)
    raw["command"] = args.command
    where = f"{args.command} settings"
    for key in ("data", "data_dir", "out", "method", "feature_layer", "generations"):
        if getattr(args, key, None) is not None:
            raw[key] = getattr(args, key)
    if getattr(args, "model", None) or getattr(args, "model_opt", None):
        spec = _mapping(raw.get("model"), "model", where)
        options = _mapping(spec.get("options"), "model.options", where)
        if args.model and args.model != spec.get("name"):
            options = {}  # another model: the options of the one it replaces do not apply
        spec["name"] = args.model or spec.get("name", "mlp")
        spec["options"] = {**options, **parse_options(args.model_opt, "--model-opt")}
        raw["model"] = spec
    given = getattr(args, "teacher", None)
    given = [given] if isinstance(given, str) else given
    if given and len(given) > 1:  # several teachers (ensemble): saved models only
        raw.pop("teacher", None)
        if missing := [t for t in given if not Path(t).exists()]:
            raise ConfigError(f"--teacher {missing[0]}: several teachers must each be a saved "
                              "model.pt or run directory (train them first)")
        raw["teacher_checkpoint"] = list(given)
    elif given:
        args.teacher = given[0]
        raw.pop("teacher", None)
        raw.pop("teacher_checkpoint", None)
        if Path(args.teacher).exists() or args.teacher.endswith(".pt") or "/" in args.teacher:
            raw["teacher_checkpoint"] = args.teacher
        else:
            raw["teacher"] = {"name": args.teacher,
                              "options": parse_options(args.teacher_opt, "--teacher-opt")}
    if raw.get("teacher_checkpoint") is not None:  # a saved teacher is used as it was trained
        ignored = [flag for flag, value in (("--teacher-opt", getattr(args, "teacher_opt", None)),
                                            ("--teacher-epochs",
                                             getattr(args, "teacher_epochs", None)))
                   if value]
        if ignored:
            raise ConfigError(f"{' and '.join(ignored)} shape a teacher trained by this run, and "
                              "--teacher names a saved one; remove them, or give a model name "
                              "to --teacher")
    if getattr(args, "teacher_input", None) is not None:
        raw["teacher_input"] = args.teacher_input
    if raw.get("teacher_input") is not None:  # one spelling in config.yaml, checked now
        raw["teacher_input"] = parse_teacher_input(raw["teacher_input"]).to_dict()
    raw["method_options"] = {**_mapping(raw.get("method_options"), "method_options", where),
                             **parse_options(args.opt, "--opt")}
    raw["data_options"] = data_options(args, _mapping(raw.get("data_options"), "data_options",
                                                      where))
    train = _mapping(raw.get("train"), "train", where)
    optim = _mapping(train.get("optim"), "train.optim", where)
    flags = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    for name in OPTIM_FLAGS:
        if getattr(args, name) is not None:
            optim["name" if name == "optimizer" else name] = getattr(args, name)
    if args.lr_factor:  # --lr-factor features=0.1: that layer's rate times 0.1
        factors = _mapping(optim.get("lr_factors"), "train.optim.lr_factors", where)
        optim["lr_factors"] = {**factors, **parse_options(args.lr_factor, "--lr-factor")}
    if args.no_progress:  # without a terminal: one line per epoch
        flags["progress"] = False
    if args.amp:
        flags["amp"] = args.amp
    if args.compile:
        flags["compile"] = args.compile
    if args.data_on_device:
        flags["data_on_device"] = args.data_on_device
    if args.memory_format:
        flags["memory_format"] = args.memory_format
    if args.tensorboard:
        flags["tensorboard"] = True
    if args.no_divergence_check:
        flags["check_divergence"] = False
    train.update(flags)
    train["optim"] = optim
    raw["train"] = train
    teacher_epochs = getattr(args, "teacher_epochs", None)
    if raw.get("teacher_train") is not None or teacher_epochs is not None:
        # The teacher takes the run's settings (device, seed, batch size, ...) except those
        # teacher_train sets itself; --device, --no-progress, --amp, --compile,
        # --data-on-device and --memory-format apply to both.
        own = _mapping(raw.get("teacher_train"), "teacher_train", where)
        own_optim = _mapping(own.get("optim"), "teacher_train.optim", where)
        teacher = {**train, **own, "optim": {**optim, **own_optim}}
        teacher.update({k: v for k, v in flags.items()
                        if k in ("device", "progress", "amp", "compile", "data_on_device",
                                 "memory_format")})
        if teacher_epochs is not None:
            teacher["epochs"] = teacher_epochs
        raw["teacher_train"] = teacher
    raw.setdefault("model", {"name": "mlp"})
    defaults = {"train": "supervised", "distill": "kd", "adapt": "dann"}
    raw.setdefault("method", defaults[args.command])
    raw.setdefault("out", _default_out(args.command))
    cfg = validate(RunConfig, raw, where)
    check_run_config(cfg)
    return cfg


def _file_settings(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The settings of a ``--config`` file, in RunConfig's layout.

    A run's own ``config.yaml`` (it records ``command`` and ``methods``) is accepted too: its
    settings are read as a resume reads them and its records (``methods``, row counts, the
    teacher's accuracy) are dropped, so ``--config RUN/config.yaml --out NEW`` repeats a run.
    """
    command = args.command
    raw = read_yaml(path, "config")
    if raw is None:
        raise ConfigError(
            f"config {path} is empty (no settings); write fields such as `data: digits` and "
            "`epochs: 5`, or leave out --config"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config {path}: the top level must be a mapping of fields, got {short_repr(raw)}"
        )
    if "command" in raw and "methods" in raw:  # a run's record
        _check_record_command(raw, command, f"config {path} is a record of")
        return _record_settings(raw, path, args)
    settings = normalize_settings(raw, f"config {path}")
    if settings.get("command", command) != command:
        raise ConfigError(
            f"config {path} is for {short_repr(settings['command'])}, not {command!r}; give it "
            f"to `transferkit {settings['command']} --config`, or remove its `command:` line"
        )
    return settings


def _saved_settings(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """What the run in ``out`` recorded in its ``config.yaml`` ({} when there is none).

    Only the settings are kept (records such as the teacher's accuracy are not), and not
    ``train.progress``: whether to draw a bar is this session's choice.
    """
    record = out / "config.yaml"
    if not record.is_file():
        if not (out / "checkpoint.pt").is_file():  # a script's --resume on a first run
            print(f"transferkit: no run in {out} to continue: a new run starts there, from the "
                  "settings given", file=sys.stderr)
        return {}
    saved = read_yaml(record, "run record")
    if not isinstance(saved, dict):
        raise ConfigError(
            f"run record {record} is not a mapping of settings; give the settings as flags "
            "or start a new run directory"
        )
    command = saved.get("command")
    if command != args.command:
        raise ConfigError(
            f"{out} holds a {short_repr(command)} run, not a {args.command!r} run; continue "
            f"it with `transferkit {command} --out {out} --resume`"
        )
    return _record_settings(saved, record, args)


def _check_record_command(saved: dict[str, Any], command: str, what: str) -> None:
    if saved.get("command") != command:
        raise ConfigError(
            f"{what} a {short_repr(saved.get('command'))} run, not a {command!r} run; give it "
            f"to `transferkit {saved.get('command')} --config`"
        )


def _record_settings(saved: dict[str, Any], record: Path,
                     args: argparse.Namespace) -> dict[str, Any]:
    """The settings in a run's ``config.yaml`` (``saved``), its records left out."""
    out = record.parent
    _check_recorded_methods(saved, record)
    if saved.get(IN_MEMORY) and not getattr(args, "data", None):  # "arrays" is no file
        raise ConfigError(
            f"the run in {out} trained on arrays in memory (tk.from_arrays: "
            f"{short_repr(saved[IN_MEMORY])}), which the command line cannot read again; give "
            f"--data FILE, or continue it in Python with the same arrays: "
            f"tk.{saved.get('command', 'train')}(..., data=tk.from_arrays(...), "
            f"out={str(out)!r}, resume=True)"
        )
    keep = {k: v for k, v in saved.items() if k not in RUN_RECORDS and k != "teacher"}
    if isinstance(keep.get("train"), dict):
        keep["train"] = {k: v for k, v in keep["train"].items() if k != "progress"}
    if keep.get("model") is None:
        keep.pop("model", None)
    teacher = saved.get("teacher")
    if isinstance(teacher, dict) and "name" in teacher:
        keep["teacher"] = teacher
    elif isinstance(teacher, dict) and "source" in teacher and not getattr(args, "teacher", None):
        source = str(teacher["source"])
        if not Path(source).exists():
            raise ConfigError(
                f"the run in {out} distils the teacher {short_repr(source)}, which is not there "
                "now; pass --teacher with the teacher's model.pt or run directory"
            )
        keep["teacher_checkpoint"] = source
    elif isinstance(teacher, list) and not getattr(args, "teacher", None):  # an ensemble
        sources = [str(t.get("source")) for t in teacher if isinstance(t, dict)]
        if missing := [s for s in sources if not Path(s).exists()]:
            raise ConfigError(
                f"the run in {out} distils the teacher {short_repr(missing[0])}, which is not "
                "there now; pass every --teacher again"
            )
        keep["teacher_checkpoint"] = sources
    return normalize_settings(keep, f"run record {record}")


def _check_recorded_methods(saved: dict[str, Any], record: Path) -> None:
    """``methods`` is what ``method`` built (with ``supervised`` added by adapt): an edited
    record whose two disagree is refused rather than run with ``method`` alone."""
    listed = saved.get("methods")
    if listed is None:
        return
    shown = "+".join(str(m) for m in listed if m != "supervised") \
        if isinstance(listed, list) else short_repr(listed)
    if saved.get("method") is None:
        raise ConfigError(f"run record {record} lists methods {short_repr(listed)} but no "
                          f"method; write `method: {shown}` (methods is only a record)")
    built = set(method_names(saved["method"])) - {"supervised"}
    if not isinstance(listed, list) or set(map(str, listed)) - {"supervised"} != built:
        raise ConfigError(f"run record {record}: method {short_repr(saved['method'])} does not "
                          f"build the methods it lists, {short_repr(listed)}; set `method:` to "
                          "the one to run and delete `methods:` (it is only a record)")


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` settings with ``top``'s over them; training settings and method options
    merge field by field, a teacher given in ``top`` replaces the one in ``base``."""
    merged = {**base, **top}
    if "teacher" in top or "teacher_checkpoint" in top:
        for key in ("teacher", "teacher_checkpoint"):
            if key not in top:
                merged.pop(key, None)
    for key in ("train", "teacher_train", "method_options"):
        below, above = base.get(key), top.get(key)
        if isinstance(below, dict) and isinstance(above, dict):
            merged[key] = {**below, **above}
            if isinstance(below.get("optim"), dict) and isinstance(above.get("optim"), dict):
                merged[key]["optim"] = {**below["optim"], **above["optim"]}
    return merged


def check_run_config(cfg: RunConfig) -> None:
    """Refuse now what would otherwise fail only after loading data or training a teacher."""
    if cfg.out is not None and not cfg.out.strip():
        raise ConfigError("--out is empty; give the run directory, e.g. --out runs/exp1")
    check_data_dir(cfg.data_dir)
    check_data_name(cfg.data, cfg.data_options)
    check_method_list(cfg)
    source_free = all(METHODS.get(n).source_free for n in method_names(cfg.method))
    teacher = cfg.teacher is not None or cfg.teacher_checkpoint is not None
    if cfg.command == "adapt" and teacher and not any(map(takes_teacher, method_names(cfg.method))):
        raise ConfigError(  # before a named teacher is trained for nothing
            f"adapt: no method in {cfg.method} reads a teacher"
            + (", and source-free methods work from the model and target data alone"
               if source_free else "")
            + "; remove --teacher, or add a distillation method, e.g. dann+kd")
    if cfg.command == "distill" and not any(map(takes_teacher, method_names(cfg.method))):
        raise ConfigError(  # before a named teacher is trained for nothing
            f"distill: no method in {cfg.method} reads a teacher; add a distillation method, "
            f"e.g. {cfg.method}+kd, or use adapt/train without a teacher")
    if cfg.command == "adapt" and "->" not in cfg.data and not source_free:
        raise ConfigError(f"adapt needs a domain pair such as 'mnist->usps', got {cfg.data!r} "
                          "(source-free methods such as shot take the target dataset alone)")
    for spec in (cfg.model, cfg.teacher):
        saved = cfg.command == "adapt" and spec is cfg.model and Path(spec.name).exists()
        if spec is None or ":" in spec.name or saved or spec.name in MODELS:
            continue  # adapt may start from a saved model.pt / run directory
        if cfg.command == "adapt" and spec is cfg.model:
            raise ConfigError(
                f"unknown model {spec.name!r}: neither a registered model ({', '.join(MODELS)}) "
                f"nor a model.pt / run directory found from {Path.cwd()} (a run's record names "
                "paths as they were given: run from the same folder, or give --model PATH)")
        MODELS.get(spec.name)  # the unknown-name error, listing the models
    local_device(cfg.train.device)
    if cfg.train.tensorboard:  # before any data is loaded or teacher trained
        from transferkit.engine.tensorboard import require_tensorboard

        require_tensorboard()
    if cfg.teacher_train is not None:
        local_device(cfg.teacher_train.device)


def check_data_name(data: str, options: dict[str, Any]) -> None:
    """A registered name, or data files that exist, with options that parse; else one line."""
    from transferkit.data.file_options import is_data_path, parse_file_options

    sides = data.split("->")
    if not any(is_data_path(side) for side in sides):
        (PAIRS if "->" in data else DATASETS).get(data)
        if options:
            raise ConfigError(f"--data-opt / --normalize apply to data files, and {data!r} is a "
                              "registered name; remove them")
        return
    parse_file_options(options)
    for side in sides:
        if is_data_path(side) and not Path(side).exists():
            raise ConfigError(f"data file {side} does not exist; give the path of a .npz, .mat "
                              "or .csv file or of an image folder")
        if not is_data_path(side):
            DATASETS.get(side)


def check_method_list(cfg: RunConfig) -> None:
    """Build the method list with a stand-in teacher and refuse, before any data is loaded or
    teacher trained, options no method takes and needs the command cannot meet."""
    has_teacher = cfg.command == "distill" or cfg.teacher is not None or bool(
        cfg.teacher_checkpoint)
    given = cfg.teacher_checkpoint
    count = len(given) if isinstance(given, list | tuple) and len(given) > 1 else 1
    stand_in = [nn.Identity() for _ in range(count)] if count > 1 else nn.Identity()
    methods = build_methods(cfg.method, stand_in, cfg.method_options)  # one per --teacher
    pair = "->" in cfg.data
    provides = {"labels"} | ({"teacher"} if has_teacher else set())
    if cfg.command == "adapt" or (cfg.command == "distill" and pair and any(
            "target" in m.needs for m in methods)):
        provides.add("target")
    elif cfg.command == "distill" and pair:
        provides.discard("labels")  # distils on the unlabelled target inputs
    home = {"teacher": "distill (or adapt --teacher)", "target": "adapt"}
    missing = sorted({need for m in methods for need in m.needs} - provides)
    where = f" (use `transferkit {home[missing[0]]}`)" if missing and missing[0] in home else ""
    check_needs(methods, provides, cfg.command, where)


def check_data_dir(data_dir: str | None) -> None:
    """An explicit ``--data-dir`` must be an existing folder."""
    if data_dir is None:
        return
    fix = (f"give the folder that holds the dataset folders (such as mnist/), or leave "
           f"--data-dir out to use ${ENV_VAR} and the cache")
    if not data_dir.strip():
        raise ConfigError(f"--data-dir is empty; {fix}")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise ConfigError(f"--data-dir {data_dir} does not exist; {fix}")
    if not path.is_dir():
        raise ConfigError(f"--data-dir {data_dir} is a file, not a folder; {fix}")


def _mapping(value: Any, field: str, where: str) -> dict[str, Any]:
    """A settings section as a new dict (absent or empty: {}); anything else is a ConfigError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {field} must be a mapping of fields, got {short_repr(value)}")
    return dict(value)


def _default_out(command: str) -> str:
    return str(Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def execute(cfg: RunConfig, resume: bool) -> api.RunResult:
    settings = cfg.train.model_dump()
    # --opt values go to the method even when they share a name with a training setting.
    common = {"out": cfg.out, "resume": resume, "data_dir": cfg.data_dir,
              "data_options": cfg.data_options or None, "method_options": cfg.method_options}
    if cfg.command == "train":
        return api.train(cfg.model.name, cfg.data, method=cfg.method,
                         model_options=cfg.model.options, **common, **settings)
    if cfg.command == "adapt":
        teacher = cfg.teacher_checkpoint or (_train_teacher(cfg) if cfg.teacher else None)
        return api.adapt(cfg.model.name, cfg.data, method=cfg.method,
                         model_options=cfg.model.options, feature_layer=cfg.feature_layer,
                         teacher=teacher, teacher_input=cfg.teacher_input, **common,
                         **settings)
    teacher = cfg.teacher_checkpoint or _train_teacher(cfg)
    return api.distill(teacher, cfg.model.name, cfg.data, method=cfg.method,
                       student_options=cfg.model.options, generations=cfg.generations,
                       teacher_input=cfg.teacher_input, **common, **settings)


def _train_teacher(cfg: RunConfig) -> str:
    """Train the named teacher into ``<out>/teacher``, or reuse the one there.

    A teacher already there is reused only when its record matches this request (model,
    options, data and training settings), and an interrupted one is continued; one of another
    architecture or recipe is refused instead of being used silently. On a pair the teacher
    trains on the labelled source in the pair's input space (source-only).
    """
    teacher_dir = Path(cfg.out or _default_out("distill")) / "teacher"
    if cfg.teacher is None:
        if (teacher_dir / "config.yaml").is_file() and not (teacher_dir.parent /
                                                            "config.yaml").is_file():
            raise ConfigError(
                f"{teacher_dir.parent} was stopped while training its teacher, before the run "
                "recorded its settings; repeat the whole command that started it (with "
                "--teacher ...): the teacher continues from its checkpoint")
        raise ConfigError("distill needs --teacher: a model.pt / run dir, or a model name to train")
    # The teacher trains supervised: adapt's epoch choice (--select) is the student's alone.
    teacher_cfg = {**(cfg.teacher_train or cfg.train).model_dump(), "select": "last"}
    try:
        api.train(cfg.teacher.name, cfg.data, model_options=cfg.teacher.options,
                  out=teacher_dir, resume=True, data_dir=cfg.data_dir,
                  data_options=cfg.data_options or None, **teacher_cfg)
    except CheckpointError as exc:
        raise ConfigError(
            f"{teacher_dir} holds another teacher than --teacher {cfg.teacher.name} asks for "
            f"({exc}); choose another --out, or pass --teacher {teacher_dir} to distil from it"
        ) from None
    return str(teacher_dir)


def print_summary(result: api.RunResult) -> None:
    if not is_main():
        return
    summary = result.summary
    teacher = summary.get("teacher_accuracy") or {}
    final = ", ".join(
        f"{k} accuracy {v:.2%}" + (f" (teacher {teacher[k]:.2%})" if k in teacher else "")
        for k, v in summary["final"].items()
    )
    size = f"{summary['parameters']:,} parameters"
    if summary.get("teacher_parameters"):
        size += f" (teacher {summary['teacher_parameters']:,})"
    selected = summary.get("selected")
    final = final or "no labelled split to score"
    print(f"{summary['command']}{' (last epoch)' if selected else ''}: {final}; {size}")
    if selected:  # model.pt holds the chosen epoch, not the last one printed above
        scores = ", ".join(f"{k} accuracy {v:.2%}" for k, v in selected.items()
                           if isinstance(v, float))
        print(f"  kept in model.pt: {summary['selection']}: {scores}")
    if summary.get("target"):  # a target without labels: say why no target accuracy shows
        print(f"  target: {summary['target']}")
    test_all = str((summary.get("data_options") or {}).get("test", "")).lower() == "all"
    if test_all and not summary.get("target"):  # an unlabelled target has no scores to explain
        print("  (test=all: these are scored on the training rows themselves; for a pair, the "
              "target's are its unlabelled rows, with labels used only to score)")
    for name, peer in (summary.get("networks") or {}).items():
        scores = ", ".join(f"{k} accuracy {v:.2%}" for k, v in peer["final"].items())
        print(f"  {name}: {scores}; {peer['parameters']:,} parameters ({peer['file']})")
    for row in summary.get("generations") or []:
        scores = ", ".join(f"{k} accuracy {v:.2%}" for k, v in row["final"].items())
        print(f"  generation {row['generation']}: {scores}")
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir}")


def print_scores(scores: dict[str, dict[str, Any]], as_json: bool = False,
                 validators: dict[str, float] | None = None) -> None:
    """``test: accuracy 95.42% (loss 0.1534, 450 samples)``, one line per split (or JSON),
    then the validators' scores when given."""
    if as_json:  # beside the splits: the label-free scores and what was done to the data
        notes = getattr(scores, "notes", None)
        print(json_text({**scores, **({"validators": validators} if validators else {}),
                         **({"notes": notes} if notes else {})}))  # NaN written as null
        return
    for split, s in scores.items():
        print(f"{split}: accuracy {s['accuracy']:.2%} (loss {s['loss']:.4f}, {s['n']} samples)")
    if validators:
        shown = ", ".join(f"{name} {value:.4g}" for name, value in validators.items())
        print(f"validators (no target labels; higher is better): {shown}")


def print_export(report: dict[str, Any]) -> None:
    """Where, how big, how faithful, how fast: three lines (a fourth for raw inputs)."""
    size = report["bytes"] / 1024
    accuracy = (f", accuracy {report['accuracy']:.2%} (PyTorch {report['pytorch_accuracy']:.2%})"
                if "accuracy" in report else f" ({report['accuracy_note']})"
                if "accuracy_note" in report else "")
    print(f"wrote {report['file']} ({report['format']}, {report['quantize']}): {size:,.1f} KiB, "
          f"{report['parameters']:,} parameters")
    print(f"parity on {report['rows_checked']} test rows of {report['data']}: max |diff| "
          f"{report['max_abs_diff']:.2e}, top-1 agreement {report['top1_agreement']:.2%}"
          f"{accuracy}")
    shown = "; ".join(
        f"{name.replace('_', ' ')}: median {v['median_ms']:.3f} ms (p95 {v['p95_ms']:.3f}, "
        f"{v['per_image_ms']:.4f} ms/image)" for name, v in report["latency"].items())
    print(f"CPU latency ({report['threads']} thread{'s' if report['threads'] != 1 else ''}): "
          f"{shown}")
    if "inputs" in report:
        print(f"inputs: {report['inputs']}")


def print_inspection(report: dict[str, Any]) -> None:
    """``after: proxy A-distance 1.23 (domain classifier error 19.2%), picture PATH``."""
    for when in ("before", "after"):
        entry = report.get(when)
        if isinstance(entry, str):
            print(f"{when}: {entry}")
        elif isinstance(entry, dict):
            picture = f", picture {entry['picture']}" if "picture" in entry else ""
            print(f"{when}: proxy A-distance {entry['a_distance']:.3f} (domain classifier "
                  f"error {entry['domain_error']:.1%}){picture}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad command line (one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "list" and args.name:
            from transferkit.explain import explain

            print(explain(args.name))
            return 0
        if args.command == "list":
            for kind, items in api.list_components().items():
                print(f"{kind}:")
                for name, description in items.items():
                    print(f"  {name:<16} {description}")
            return 0
        if args.command == "demo":
            from transferkit.demo import run_demo

            if args.out is not None and not args.out.strip():
                raise ConfigError("--out is empty; give the run directory, e.g. --out runs/demo")

            run_demo(out=args.out, scale=args.epochs_scale, seed=args.seed, report=args.report)
            return 0
        if args.command == "report":
            check_data_dir(args.data_dir)
            page = api.report_runs(args.runs, args.out, data_dir=args.data_dir,
                                   tsne_points=args.tsne_points, seed=args.seed)
            print(f"wrote {page}")
            return 0
        if args.command == "evaluate":
            check_data_dir(args.data_dir)
            local_device(args.device)
            scores = api.evaluate(args.model, args.data, data_dir=args.data_dir,
                                  data_options=data_options(args) or None,
                                  device=args.device, validators=args.validators)
            if is_main():
                print_scores(scores, args.json, scores.validators)
            return 0
        if args.command == "predict":
            from transferkit.predict import check_out

            model = Path(args.model)
            run = model if model.is_dir() else model.parent  # the run's records, kept
            records = [*([model] if run is not model else []),
                       *(run / n for n in RUN_FILES)]
            sides = [part.strip() for part in str(args.data).split("->")]
            check_out(args.out, [*records, *sides])  # before the model runs
            check_data_dir(args.data_dir)
            local_device(args.device)
            found = api.predict(args.model, args.data, split=args.split, data_dir=args.data_dir,
                                data_options=data_options(args) or None, device=args.device)
            if is_main():
                path = found.to_csv(args.out, probs=args.probs)
                counts = ", ".join(f"{name} {n}" for name, n in found.counts().items())
                rows = f"{len(found):,} prediction{'s' * (len(found) != 1)}"
                print(f"wrote {rows} of {found.data} to {path}: {counts}")
            return 0
        if args.command == "export":
            check_data_dir(args.data_dir)
            report = api.export(args.run, args.format, quantize=args.quantize, data=args.data,
                                data_dir=args.data_dir, data_options=data_options(args) or None,
                                out=args.out, rows=args.rows, threads=args.threads)
            if is_main():
                print_export(report)
            return 0
        if args.command == "inspect":
            check_data_dir(args.data_dir)
            local_device(args.device)
            report = api.inspect(args.run, args.data, before=args.before, out=args.out,
                                 data_dir=args.data_dir, data_options=data_options(args) or None,
                                 device=args.device,
                                 picture=not args.no_picture)
            if is_main():
                print_inspection(report)
            return 0
        cfg = run_config(args)
        print_summary(execute(cfg, args.resume))
        return 0
    except TransferkitError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"transferkit: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferkit: interrupted; the last checkpoint is kept (continue with --resume)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`transferkit list | head`): not our error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second complaint
        return 141  # as a shell reports a SIGPIPE
    except OSError as exc:  # a path the file system refuses (too long, under a file, ...)
        where = exc.filename if exc.filename is not None else "a file"
        print(f"transferkit: error: {describe_os_error(exc, where, 'use')}", file=sys.stderr)
        return 2
    finally:
        shutdown()


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
