"""``transferkit demo``: distillation and adaptation on the bundled digits, on a laptop CPU.

1. A ``small-cnn`` teacher is trained on digits; an ``mlp`` student is trained alone, with
   ``l2`` and with ``kd`` under the same budget.
2. On ``digits->digits_shifted`` (a shifted copy "from another scanner"), source-only is
   compared with ``dann``; the last epoch is reported (no target labels choose anything).

Prints one table and writes every sub-run plus ``demo.md``/``summary.json`` to the run dir.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from transferkit import api
from transferkit.data import load_dataset, load_pair
from transferkit.files import atomic_write, save_json
from transferkit.models import count_parameters

TEACHER = ("small-cnn", {})
STUDENT = ("mlp", {"widths": [64]})
DA_MODEL = ("mlp", {"widths": [256, 128]})


def milliseconds_per_batch(model: nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    """Median inference time of one batch (eval mode, no grad) in milliseconds."""
    model.eval()
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000.0 * sorted(times)[len(times) // 2]


def run_demo(out: str | None = None, scale: float = 1.0, seed: int = 0) -> list[dict]:
    console = Console()
    run_dir = Path(out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    epochs = max(1, round(50 * scale))
    common = {"seed": seed, "progress": False, "batch_size": 64, "optimizer": "adam",
              "lr": 1e-3, "device": "cpu"}
    digits = load_dataset("digits")
    batch = digits.test.x[:256]
    rows: list[dict] = []

    def add(section: str, name: str, result: api.RunResult, key: str) -> None:
        rows.append({
            "section": section,
            "model": name,
            "accuracy": result.summary["final"][key],
            "parameters": count_parameters(result.model),
            "ms_per_batch": milliseconds_per_batch(result.model, batch.to("cpu")),
        })

    start = time.perf_counter()
    console.print(f"[bold]1/2 distillation on digits[/] ({len(digits.train)} train images)")
    teacher = api.train(TEACHER[0], digits, model_options=TEACHER[1], epochs=epochs,
                        out=run_dir / "teacher", **common)
    add("distil", "teacher small-cnn", teacher, "test")
    alone = api.train(STUDENT[0], digits, model_options=STUDENT[1], epochs=epochs,
                      out=run_dir / "student-alone", **common)
    add("distil", "student mlp-64 alone", alone, "test")
    for method, options in (("l2", {"ce_weight": 0.5}), ("kd", {"temperature": 4.0})):
        result = api.distill(teacher.model, STUDENT[0], digits, method=method,
                             student_options=STUDENT[1], epochs=epochs,
                             out=run_dir / f"student-{method}", **common, **options)
        add("distil", f"student mlp-64 + {method}", result, "test")

    pair = load_pair("digits->digits_shifted")
    console.print(f"[bold]2/2 adaptation on {pair.name}[/]")
    da_epochs = max(1, round(60 * scale))
    source_only = api.train(DA_MODEL[0], pair, model_options=DA_MODEL[1], epochs=da_epochs,
                            out=run_dir / "source-only", **common)
    add("adapt", "source-only", source_only, "target_test")
    dann = api.adapt(DA_MODEL[0], pair, method="dann", model_options=DA_MODEL[1],
                     epochs=da_epochs, out=run_dir / "dann", **common)
    add("adapt", "dann", dann, "target_test")

    table = Table(title=f"transferkit demo (seed {seed}, {time.perf_counter() - start:.0f} s)")
    table.caption = (f"distil: digits test accuracy; adapt: {pair.name} target test accuracy "
                     "(last epoch, no target labels used to choose)")
    for column in ("", "model", "accuracy", "parameters", "ms / batch of 256"):
        table.add_column(column, justify="left" if column in ("", "model") else "right")
    for row in rows:
        table.add_row(row["section"], row["model"], f"{row['accuracy']:.4f}",
                      f"{row['parameters']:,}", f"{row['ms_per_batch']:.2f}")
    console.print(table)
    console.print(f"Runs are in {run_dir}")
    save_json({"rows": rows, "seed": seed, "scale": scale}, run_dir / "summary.json")
    lines = ["| section | model | accuracy | parameters | ms / batch |", "|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['model']} | {r['accuracy']:.4f} | {r['parameters']:,} | "
              f"{r['ms_per_batch']:.2f} |" for r in rows]
    atomic_write(run_dir / "demo.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    return rows
