"""Shared helpers for the benchmark scripts: flags, result files, environment facts."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from _rows import done, read_rows  # noqa: F401  (re-exported for the grid scripts)
from transferkit.data import Dataset
from transferkit.engine.checkpoint import save_json

RESULTS = Path(__file__).resolve().parent / "results"


def append(path: Path, row: dict) -> None:
    """One JSON line appended, flushed and synced: a killed grid keeps every finished run.

    The file is locked while it is written, since several rows of a grid may finish at once
    (``_parallel``); a row cut off by a kill mid-write is dropped before the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        handle.seek(0)
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
        handle.write((json.dumps(row) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default=os.environ.get("TRANSFERKIT_DATA_DIR"))
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result JSON (default benchmarks/results/<name>.json)")
    p.add_argument("--run-dir", help="keep the run directories here (default: none written)")
    return p


def cpu_name() -> str:
    """The processor's model name (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return platform.machine()


def environment() -> dict:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()
    return {
        "torch": torch.__version__,
        "device": device or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_result(name: str, payload: dict, out: str | None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    root = f"{Path(__file__).resolve().parent.parent}/"  # paths in the repo, written relative
    command = "python benchmarks/" + " ".join(
        [Path(sys.argv[0]).name, *(shlex.quote(a.replace(root, "")) for a in sys.argv[1:])]
    )
    save_json({"benchmark": name, "command": command, "environment": environment(), **payload},
              path)
    print(f"wrote {path}")
    return path


def run_dir(base: str | None, name: str) -> str | None:
    return None if base is None else str(Path(base) / name)


def limit_train(data: Dataset, n: int | None) -> Dataset:
    """The dataset with only its first ``n`` training rows (for quick smoke runs)."""
    return data if n is None else replace(data, train=data.train.subset(n))


def mnist_budget_parser(description: str, teacher_epochs: int, student_epochs: int):
    """Flags shared by the MNIST distillation benchmarks."""
    p = parser(description)
    p.add_argument("--teacher-epochs", type=int, default=teacher_epochs)
    p.add_argument("--student-epochs", type=int, default=student_epochs)
    p.add_argument("--train-limit", type=int, help="first N training images (smoke tests)")
    p.add_argument("--compile", choices=["off", "on", "graphs"], default="off",
                   help="torch.compile the steps (graphs: plus CUDA graphs on a GPU)")
    p.add_argument("--amp", choices=["off", "auto", "bf16"], default="off")
    return p


def load_mnist(args: argparse.Namespace) -> Dataset:
    from transferkit.data import load_dataset

    return limit_train(load_dataset("mnist", args.data_dir), args.train_limit)


def test_row(result, seconds: float, epochs: int) -> dict:
    """Test accuracy, errors, size and time of one run, printed as it is recorded."""
    acc = result.summary["final"]["test"]
    n = result.history[-1]["eval"]["test"]["n"]
    return {"accuracy": acc, "test_errors": errors(acc, n), "epochs": epochs,
            "parameters": result.summary["parameters"], "seconds": round(seconds, 1)}


def errors(accuracy: float, n: int) -> int:
    """Test errors from an accuracy over ``n`` test images."""
    return round((1.0 - accuracy) * n)


def bare_kd_step(teacher, student, optimizer, xb, yb, temperature: float, alpha: float) -> None:
    """One hand-written ``kd`` step, no transferkit: teacher under no_grad, student,
    ``alpha * T^2 * KL + (1 - alpha) * CE``, backward, step (the loss read as a loop would)."""
    import torch.nn.functional as F

    with torch.no_grad():
        t = teacher(xb)
    s = student(xb)
    soft = F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1),
                    reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    loss.item()
    optimizer.step()
