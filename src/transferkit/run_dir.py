"""A run directory: created and locked before a run starts, its ``config.yaml`` record
checked against the settings of a resume, and a finished run read back.

A run writes ``config.yaml``, ``metrics.jsonl``, ``checkpoint.pt`` (every epoch, atomically),
``model.pt`` and ``summary.json``; a second run into the same folder is refused while the
first holds its lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from transferkit.config import TrainConfig, read_yaml, settings_diff
from transferkit.engine.checkpoint import atomic_write
from transferkit.engine.distributed import is_main
from transferkit.engine.loop import CHECKPOINT, METRICS, RESUME_FREE
from transferkit.errors import CheckpointError, ConfigError, RunDirError
from transferkit.files import RunLock, describe_os_error
from transferkit.model_file import MODEL_FILE, load_model

SUMMARY_FILE = "summary.json"
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", MODEL_FILE, SUMMARY_FILE)
# Recorded in config.yaml for the reader, but not part of what a resume must match.
RECORD_ONLY = {"teacher_accuracy", "methods"}  # "methods" follows from "method" and the data
# What config.yaml records about a run that is not a setting (its settings are RunConfig's
# fields); a run's config.yaml given back as settings drops these and nothing else.
RUN_RECORDS = frozenset({
    "methods", "teacher_accuracy", "teacher_parameters", "teacher_inputs", "training_data",
    "data_sha256", "source_holdout_rows", "source_free", "architecture", "inputs",
    "validation_note", "label_note", "data_in_memory",
})
IN_MEMORY = "data_in_memory"  # the names of a run's data given as arrays, never on disk


@dataclass
class RunResult:
    """What a run gives back: the trained model, its per-epoch metrics and the summary.

    ``model`` is the module as training left it, in training mode (dropout on): call
    ``.eval()`` before predicting with it yourself; ``evaluate``, ``predict`` and a later
    ``distill`` set the mode they need, and ``load_run`` returns it in eval mode."""

    model: nn.Module
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None


def prepare_run_dir(
    out: str | Path | None, config: dict[str, Any], resume: bool
) -> tuple[Path | None, RunLock | None]:
    """Create and lock ``out``, and check that the run may (re)start there; writes no record.

    The lock (``<out>/.lock``, see :class:`RunLock`) is held until the run ends, so a second
    run into the same directory is refused instead of mixing its files with the first's.
    """
    if out is None:
        if resume:  # nothing to resume from: it would silently train from scratch
            raise ConfigError("resume=True continues a run directory; give out= (the folder "
                              "of the run to continue)")
        return None, None
    if not str(out).strip():
        raise ConfigError("the run directory (--out / out=) is empty; give a folder name")
    run_dir = Path(out)
    lock = None
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirError(
                f"run directory {run_dir} is a file, not a folder; choose another --out"
            )
        if is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(describe_os_error(exc, run_dir, "create run directory")) from None
    if is_main():
        lock = RunLock(run_dir).acquire()
    try:
        if (run_dir / CHECKPOINT).exists():
            if not resume:
                raise ConfigError(
                    f"run directory {run_dir} already holds a run; pass resume=True (--resume) "
                    "to continue it or choose another directory"
                )
            check_resume_config(run_dir, yaml.safe_load(yaml.safe_dump(config, sort_keys=False)))
        if is_main():  # atomic_write's temporary files from a write that a kill interrupted
            for name in RUN_FILES:
                for stale in run_dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return run_dir, lock


def write_config(run_dir: Path | None, config: dict[str, Any]) -> None:
    if run_dir is not None and is_main():
        text = yaml.safe_dump(config, sort_keys=False)
        atomic_write(run_dir / "config.yaml", lambda f: f.write(text.encode()))


def check_resume_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a run with other data, model, method or settings (before writing)."""
    if not (run_dir / "config.yaml").is_file():
        return  # no record: the checkpoint's own check still applies
    saved = read_yaml(run_dir / "config.yaml", "run record")  # bounded: it may be crafted
    if not isinstance(saved, dict):
        return

    def kept(record: dict[str, Any]) -> dict[str, Any]:
        """The record without what may change at a resume (progress, device, epochs...)."""
        out = {k: v for k, v in record.items() if k not in RECORD_ONLY}
        if isinstance(out.get("train"), dict):
            out["train"] = {k: v for k, v in out["train"].items() if k not in RESUME_FREE}
        return out

    diff = settings_diff(kept(saved), kept(config), {"train": TrainConfig().model_dump()})
    teacher_differs = any(k == "teacher" or k.startswith("teacher.") for k in diff)
    was, now = saved.get("teacher"), config.get("teacher")
    if teacher_differs and isinstance(was, dict) and isinstance(now, dict):
        raise CheckpointError(
            f"cannot resume the run in {run_dir}: it distils teacher {was.get('source')} "
            f"(weights sha256 {str(was.get('sha256'))[:12]}) but the teacher given now is "
            f"{now.get('source')} (sha256 {str(now.get('sha256'))[:12]}); resume with the "
            "same teacher or start a new run directory"
        )
    if diff:
        raise CheckpointError(
            f"cannot resume the run in {run_dir}: settings differ ({', '.join(diff)}); "
            "resume with the settings of the interrupted run or start a new run directory"
        )


def read_json_lines(path: Path, whole: bool = False) -> list[Any]:
    """The JSON values of a file (one value, or one per line), refused in one line that names
    the file and line (a metrics.jsonl cut by a kill: --resume rewrites it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    lines = [text] if whole else text.splitlines()
    values = []
    for number, line in enumerate(lines, 1):
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            where = "" if whole else f" line {number}"
            raise CheckpointError(
                f"{path}{where} is not valid JSON ({exc.msg}); the run was interrupted while "
                "writing it? continue it with --resume, which rewrites it"
            ) from None
    return values


def load_run(run_dir: str | Path, model: nn.Module | str | None = None,
             **options: Any) -> RunResult:
    """A finished run directory as a :class:`RunResult` (model, summary, per-epoch metrics).

    ``model`` (and ``options``) as in :func:`load_model`: needed for a run trained from a
    Python module, whose file cannot rebuild the network."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise ConfigError(f"{run_dir} is a file; load_run reads a run directory (the folder "
                          f"holding {MODEL_FILE}); for the model alone use load_model")
    missing = [n for n in (MODEL_FILE, SUMMARY_FILE, METRICS) if not (run_dir / n).is_file()]
    if missing:
        raise CheckpointError(
            f"{run_dir} is not a finished run: {', '.join(missing)} missing "
            "(an interrupted run continues with --resume)"
        )
    summary = read_json_lines(run_dir / SUMMARY_FILE, whole=True)[0]
    history = read_json_lines(run_dir / METRICS)
    if not isinstance(summary, dict) or not all(isinstance(row, dict) for row in history):
        raise CheckpointError(f"{run_dir}: {SUMMARY_FILE} or {METRICS} is not a transferkit "
                              "run record (JSON objects); use a run that transferkit wrote")
    return RunResult(load_model(run_dir, model, **options), summary, history, run_dir)


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a run whose model and summary were written, else None."""
    try:
        if (run_dir / MODEL_FILE).is_file():
            summary = json.loads((run_dir / SUMMARY_FILE).read_text())
            return summary if isinstance(summary, dict) else None
    except (OSError, ValueError):
        pass
    return None


def run_record(path: Path) -> dict[str, Any]:
    """The config.yaml of the run that saved ``path`` ({} when there is none)."""
    record_file = (path if path.is_dir() else path.parent) / "config.yaml"
    if not record_file.is_file():
        return {}
    record = read_yaml(record_file, "run record")
    return record if isinstance(record, dict) else {}
