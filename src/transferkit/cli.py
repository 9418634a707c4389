"""Command line: ``transferkit demo | train | distill | adapt | evaluate | list``.

Every training command writes one run directory (``--out``, default ``runs/<command>-<time>``)
and accepts ``--config run.yaml`` (fields of :class:`transferkit.config.RunConfig`); flags
given on the command line override the file. Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from transferkit import api
from transferkit.config import RunConfig, validate
from transferkit.engine.distributed import is_main, shutdown
from transferkit.errors import ConfigError, TransferkitError

TRAIN_FLAGS = {
    "epochs": int,
    "batch_size": int,
    "steps_per_epoch": int,
    "target_batch_size": int,
    "seed": int,
    "device": str,
    "jitter": int,
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
        if not sep or not key:
            raise ConfigError(f"{flag} {pair!r}: write key=value, e.g. {flag} temperature=4")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with run settings (flags override it)")
    p.add_argument("--data", help="dataset or domain pair name (see `transferkit list`)")
    p.add_argument("--data-dir", help="folder with local dataset files (else TRANSFERKIT_DATA_DIR)")
    p.add_argument("--out", help="run directory (default runs/<command>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="method option")
    for name, kind in {**TRAIN_FLAGS, **OPTIM_FLAGS}.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="distil and adapt on the bundled digits (no download)")
    demo.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    demo.add_argument("--epochs-scale", type=float, default=1.0, help="scale every budget")
    demo.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="supervised training (teachers, source-only)")
    train.add_argument("--model", help="model name or package.module:factory")
    train.add_argument("--model-opt", action="append", metavar="KEY=VALUE")
    train.add_argument("--method", help="method (default supervised)")
    _add_training_flags(train)

    distill = sub.add_parser("distill", help="distil a teacher into a student")
    distill.add_argument("--teacher", help="teacher model.pt / run dir, or a model name to train")
    distill.add_argument("--teacher-opt", action="append", metavar="KEY=VALUE")
    distill.add_argument("--teacher-epochs", type=int, help="epochs when training the teacher")
    distill.add_argument("--student", "--model", dest="model", help="student model name")
    distill.add_argument("--model-opt", action="append", metavar="KEY=VALUE")
    distill.add_argument("--method", help="l2 or kd (default kd)")
    _add_training_flags(distill)

    adapt = sub.add_parser("adapt", help="adapt a model from a source to a target domain")
    adapt.add_argument("--model", help="model name or package.module:factory")
    adapt.add_argument("--model-opt", action="append", metavar="KEY=VALUE")
    adapt.add_argument("--method", help="adaptation method (default dann)")
    adapt.add_argument("--feature-layer", help="module whose input is the feature vector")
    _add_training_flags(adapt)

    evaluate = sub.add_parser("evaluate", help="accuracy of a saved model on a dataset or pair")
    evaluate.add_argument("model", help="model.pt or run directory")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--device", default="auto")

    sub.add_parser("list", help="datasets, pairs, models and methods")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """Merge ``--config`` YAML with the flags given, and validate the result."""
    raw: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"config {path}: {exc.__class__.__name__}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or exc.__class__.__name__
            raise ConfigError(f"config {path}: not valid YAML: {problem}{at}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path}: the top level must be a mapping of fields")
        if raw.get("command", args.command) != args.command:
            raise ConfigError(f"config {path} is for {raw['command']!r}, not {args.command!r}")
    raw["command"] = args.command
    where = f"{args.command} settings"
    for key in ("data", "data_dir", "out", "method", "feature_layer"):
        if getattr(args, key, None) is not None:
            raw[key] = getattr(args, key)
    if getattr(args, "model", None) or getattr(args, "model_opt", None):
        spec = _mapping(raw.get("model"), "model", where)
        options = _mapping(spec.get("options"), "model.options", where)
        spec["name"] = args.model or spec.get("name", "mlp")
        spec["options"] = {**options, **parse_options(args.model_opt, "--model-opt")}
        raw["model"] = spec
    if getattr(args, "teacher", None):
        if Path(args.teacher).exists() or args.teacher.endswith(".pt"):
            raw["teacher_checkpoint"] = args.teacher
        else:
            raw["teacher"] = {"name": args.teacher,
                              "options": parse_options(args.teacher_opt, "--teacher-opt")}
    raw["method_options"] = {**_mapping(raw.get("method_options"), "method_options", where),
                             **parse_options(args.opt, "--opt")}
    train = _mapping(raw.get("train"), "train", where)
    optim = _mapping(train.get("optim"), "train.optim", where)
    flags = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    for name in OPTIM_FLAGS:
        if getattr(args, name) is not None:
            optim["name" if name == "optimizer" else name] = getattr(args, name)
    if args.no_progress or not sys.stderr.isatty():
        flags["progress"] = False
    if args.amp:
        flags["amp"] = True
    train.update(flags)
    train["optim"] = optim
    raw["train"] = train
    teacher_epochs = getattr(args, "teacher_epochs", None)
    if raw.get("teacher_train") is not None or teacher_epochs is not None:
        # The teacher takes the run's settings (device, seed, batch size, ...) except those
        # teacher_train sets itself; --device, --no-progress and --amp apply to both.
        own = _mapping(raw.get("teacher_train"), "teacher_train", where)
        own_optim = _mapping(own.get("optim"), "teacher_train.optim", where)
        teacher = {**train, **own, "optim": {**optim, **own_optim}}
        teacher.update({k: v for k, v in flags.items() if k in ("device", "progress", "amp")})
        if teacher_epochs is not None:
            teacher["epochs"] = teacher_epochs
        raw["teacher_train"] = teacher
    raw.setdefault("model", {"name": "mlp"})
    defaults = {"train": "supervised", "distill": "kd", "adapt": "dann"}
    raw.setdefault("method", defaults[args.command])
    raw.setdefault("out", _default_out(args.command))
    return validate(RunConfig, raw, f"{args.command} settings")


def _mapping(value: Any, field: str, where: str) -> dict[str, Any]:
    """A settings section as a new dict (absent or empty: {}); anything else is a ConfigError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {field} must be a mapping of fields, got {value!r}")
    return dict(value)


def _default_out(command: str) -> str:
    return str(Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def execute(cfg: RunConfig, resume: bool) -> api.RunResult:
    settings = cfg.train.model_dump()
    # --opt values go to the method even when they share a name with a training setting.
    common = {"out": cfg.out, "resume": resume, "data_dir": cfg.data_dir,
              "method_options": cfg.method_options}
    if cfg.command == "train":
        return api.train(cfg.model.name, cfg.data, method=cfg.method,
                         model_options=cfg.model.options, **common, **settings)
    if cfg.command == "adapt":
        return api.adapt(cfg.model.name, cfg.data, method=cfg.method,
                         model_options=cfg.model.options, feature_layer=cfg.feature_layer,
                         **common, **settings)
    teacher = cfg.teacher_checkpoint or _train_teacher(cfg, resume)
    return api.distill(teacher, cfg.model.name, cfg.data, method=cfg.method,
                       student_options=cfg.model.options, **common, **settings)


def _train_teacher(cfg: RunConfig, resume: bool) -> str:
    """Train the named teacher into ``<out>/teacher`` (reused when already finished)."""
    if cfg.teacher is None:
        raise ConfigError("distill needs --teacher: a model.pt / run dir, or a model name to train")
    teacher_dir = Path(cfg.out or _default_out("distill")) / "teacher"
    if (teacher_dir / api.MODEL_FILE).exists():
        return str(teacher_dir)
    teacher_cfg = cfg.teacher_train or cfg.train
    data = cfg.data.split("->")[0] if "->" in cfg.data else cfg.data
    api.train(cfg.teacher.name, data, model_options=cfg.teacher.options, out=teacher_dir,
              resume=resume, data_dir=cfg.data_dir, **teacher_cfg.model_dump())
    return str(teacher_dir)


def print_summary(result: api.RunResult) -> None:
    if not is_main():
        return
    final = ", ".join(f"{k} accuracy {v:.4f}" for k, v in result.summary["final"].items())
    print(f"{result.summary['command']}: {final}; {result.summary['parameters']:,} parameters")
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            for kind, items in api.list_components().items():
                print(f"{kind}:")
                for name, description in items.items():
                    print(f"  {name:<16} {description}")
            return 0
        if args.command == "demo":
            from transferkit.demo import run_demo

            run_demo(out=args.out, scale=args.epochs_scale, seed=args.seed)
            return 0
        if args.command == "evaluate":
            scores = api.evaluate(args.model, args.data, data_dir=args.data_dir, device=args.device)
            print(json.dumps(scores, indent=2))
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
    finally:
        shutdown()


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
