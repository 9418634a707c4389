"""``transferkit demo``: distillation and adaptation on the bundled digits, on a laptop CPU.

1. A ``small-cnn`` teacher is trained on digits; an ``mlp`` student is trained alone, with
   ``l2`` and with ``kd`` under the same budget. The recipe (teacher training, student budget,
   ``l2``/``kd`` options) was chosen on a validation split of the training rows, never on the
   test split, by ``benchmarks/demo_recipe.py``.
2. On ``digits->digits_shifted`` (a shifted copy "from another scanner"), source-only is
   compared with ``dann``; the last epoch is reported (no target labels choose anything).

Prints one table and writes every sub-run plus ``demo.md``/``summary.json`` to the run dir.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from transferkit import api
from transferkit.data import load_dataset, load_pair
from transferkit.errors import ConfigError
from transferkit.files import atomic_write, save_json
from transferkit.models import count_parameters

TEACHER = ("small-cnn", {})
STUDENT = ("mlp", {"widths": [64]})
# The distillation recipe, chosen on a validation split (20% of digits' training rows,
# stratified, seed 0; 3 seeds) by ``python benchmarks/demo_recipe.py``; its grid, choice and
# 3-seed test accuracies are in benchmarks/results/demo_recipe.json (docs/benchmarks.md, h).
# The first recipe (teacher without jitter, 50 student epochs, l2 ce_weight 0.5, kd T=4)
# left the distilled students short of convergence, below the student alone.
TEACHER_SETTINGS = {"epochs": 50, "jitter": 1}  # 1-px random shifts: a better teacher
# --epochs-scale above this would run the demo for days (100: some 20,000 student epochs).
MAX_SCALE = 100.0
STUDENT_EPOCHS = 200  # alone, l2 and kd alike; l2 and kd converge more slowly than the alone run
DISTIL_RECIPES = (
    ("l2", {"ce_weight": 1.0, "reduction": "mean", "scale": "auto"}),
    ("kd", {"temperature": 1.0, "alpha": 0.5}),
)
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


def run_demo(out: str | None = None, scale: float = 1.0, seed: int = 0,
             report: bool = False) -> list[dict]:
    """Run the demo into ``out``; ``report=True`` also writes ``report.html`` of its runs."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (
            math.isfinite(scale) and 0 < scale <= MAX_SCALE):
        raise ConfigError(f"demo --epochs-scale must be a number above 0 and at most "
                          f"{MAX_SCALE:g} (1 is the full demo, 0.05 a quick look), got {scale!r}")
    if report:  # refused now, not after minutes of training
        from transferkit.report.plotting import require_matplotlib

        require_matplotlib("demo --report")
    console = Console()
    run_dir = Path(out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    teacher_epochs = max(1, round(TEACHER_SETTINGS["epochs"] * scale))
    epochs = max(1, round(STUDENT_EPOCHS * scale))
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
    teacher = api.train(TEACHER[0], digits, model_options=TEACHER[1], epochs=teacher_epochs,
                        jitter=TEACHER_SETTINGS["jitter"], out=run_dir / "teacher", **common)
    add("distil", "teacher small-cnn", teacher, "test")
    alone = api.train(STUDENT[0], digits, model_options=STUDENT[1], epochs=epochs,
                      out=run_dir / "student-alone", **common)
    add("distil", "student mlp-64 alone", alone, "test")
    for method, options in DISTIL_RECIPES:
        # The student's inputs are not augmented, so cached teacher logits are exact.
        result = api.distill(teacher.model, STUDENT[0], digits, method=method,
                             student_options=STUDENT[1], epochs=epochs, cache_teacher=True,
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
    recipe = "; ".join(f"{m} " + ", ".join(f"{k} {v}" for k, v in o.items())
                       for m, o in DISTIL_RECIPES)
    table.caption = (
        f"distil: digits test accuracy, last epoch (1 image = {100 / len(digits.test):.2f} "
        "points). Recipe chosen on a validation split of the training rows, not on test "
        f"(benchmarks/demo_recipe.py): teacher {teacher_epochs} epochs with jitter "
        f"{TEACHER_SETTINGS['jitter']}; students {epochs} epochs; {recipe}. adapt: {pair.name} "
        "target test accuracy (last epoch, no target labels used to choose)"
    )
    for column in ("", "model", "accuracy", "parameters", "ms / batch of 256"):
        table.add_column(column, justify="left" if column in ("", "model") else "right")
    for row in rows:
        table.add_row(row["section"], row["model"], f"{row['accuracy']:.4f}",
                      f"{row['parameters']:,}", f"{row['ms_per_batch']:.2f}")
    console.print(table)
    console.print("One seed; over 3 seeds (docs/benchmarks.md, h) distillation about matches "
                  "the student alone on digits: its gains there are within seed noise.")
    console.print(f"Runs are in {run_dir}")
    distil_recipe = {"teacher": {"epochs": teacher_epochs, "jitter": TEACHER_SETTINGS["jitter"]},
                     "student_epochs": epochs, **{m: o for m, o in DISTIL_RECIPES},
                     "chosen_by": "benchmarks/demo_recipe.py (validation split)"}
    save_json({"rows": rows, "seed": seed, "scale": scale, "distil_recipe": distil_recipe},
              run_dir / "summary.json")
    lines = ["| section | model | accuracy | parameters | ms / batch |", "|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['model']} | {r['accuracy']:.4f} | {r['parameters']:,} | "
              f"{r['ms_per_batch']:.2f} |" for r in rows]
    atomic_write(run_dir / "demo.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    if report:
        runs = [run_dir / name for name in ("teacher", "student-alone",
                                            *(f"student-{m}" for m, _ in DISTIL_RECIPES),
                                            "source-only", "dann")]
        page = api.report_runs(runs, run_dir / "report.html", seed=seed)
        console.print(f"Report: {page}", markup=False, highlight=False, soft_wrap=True)
    return rows
