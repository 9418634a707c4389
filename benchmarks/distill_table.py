"""Every distillation method on Fashion-MNIST under one budget (issue 6, table e).

One CNN teacher (``resnet32x4`` at width 0.25, 0.47 M parameters) trained once, one much
smaller student (``resnet8x4`` at width 0.125, 20 k parameters), the student alone and every
method under the same budget (epochs, optimizer, cosine schedule, batch, training subset).
The last epoch is reported (no early stopping, nothing chosen with test labels). Each
(seed, method) run appends one line to ``benchmarks/results/distill_table.jsonl``, so a grid
can be split across sessions by ``--seeds`` / ``--methods``; ``report.py`` renders mean ± std
from whatever the file holds. A run already in the file is skipped.

    python benchmarks/distill_table.py --seeds 0 [--methods kd,dkd] [--device cuda]
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import transferkit as tk
from _common import RESULTS, append, done, environment, limit_train, parser
from transferkit.data import load_dataset

TEACHER = ("resnet32x4", {"width": 0.25})
TEACHER2 = ("resnet8x4", {"width": 0.5})  # the ensemble's second teacher
STUDENT = ("resnet8x4", {"width": 0.125})
# name in the table -> (method list, options, how it runs)
METHODS: dict[str, tuple[str, dict, str]] = {
    "student alone": ("supervised", {}, "train"),
    "kd": ("kd", {"temperature": 4.0, "alpha": 0.9}, "distill"),
    "l2": ("l2", {"ce_weight": 1.0}, "distill"),
    # the paper's CIFAR-100 KD+LS weights: 9 * soft (base T 2) + 0.1 * CE
    "kd+ls": ("kd", {"temperature": 2.0, "kd_weight": 9.0, "ce_weight": 0.1,
                     "standardize": True}, "distill"),
    "dkd": ("dkd", {"warmup": 1}, "distill"),
    "dist": ("dist", {}, "distill"),
    "fitnet": ("fitnet", {}, "distill"),
    "at": ("at", {}, "distill"),
    "nst": ("nst", {}, "distill"),
    "pkt": ("pkt", {}, "distill"),
    "rkd": ("rkd", {}, "distill"),
    "sp": ("sp", {}, "distill"),
    "cc": ("cc", {}, "distill"),
    "vid": ("vid", {}, "distill"),
    # nce_k 16384 (the paper's) costs ~10 kd steps per step on 2 CPU cores: 2048 negatives here
    "crd": ("crd", {"nce_k": 2048}, "distill"),
    "reviewkd": ("reviewkd", {}, "distill"),
    "kd+crd": ("kd+crd", {"nce_k": 2048}, "distill"),
    "dml": ("dml", {}, "train"),
    "ensemble": ("ensemble", {}, "ensemble"),
    "born-again (2 generations)": ("kd", {}, "born-again"),
    "data-free": ("data-free", {"n_synthetic": 512, "synth_steps": 100, "synth_batch": 256},
                  "data-free"),
}
RESULT = RESULTS / "distill_table.jsonl"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--methods", help="comma-separated table names (default: all)")
    p.add_argument("--train-limit", type=int, default=20000, help="first N training images")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--runs", default="runs/distill_table", help="run directories (teachers)")
    args = p.parse_args()
    out = Path(args.out) if args.out else RESULT
    data = limit_train(load_dataset("fashion_mnist", args.data_dir), args.train_limit)
    common = {"device": args.device, "batch_size": 128, "optimizer": "sgd", "lr": 0.05,
              "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "progress": False}
    runs = Path(args.runs)
    teachers = {}
    for key, (model, options) in {"teacher": TEACHER, "teacher2": TEACHER2}.items():
        start = time.perf_counter()
        result = tk.train(model, data, model_options=options, epochs=args.teacher_epochs,
                          seed=0, out=runs / key, resume=True, **common)
        teachers[key] = runs / key
        print(f"{key} {model} {options}: test {result.summary['final']['test']:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    names = args.methods.split(",") if args.methods else list(METHODS)
    seen = done(out, "seed", "method")
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            if (seed, name) in seen:
                continue
            method, options, how = METHODS[name]
            settings = {**common, "epochs": args.epochs, "seed": seed}
            student, student_options = STUDENT
            start = time.perf_counter()
            if how == "train":
                result = tk.train(student, data, method=method, model_options=student_options,
                                  method_options=options, **settings)
            else:
                teacher = [teachers["teacher"], teachers["teacher2"]] if how == "ensemble" \
                    else teachers["teacher"]
                result = tk.distill(
                    teacher, student, data, method=method, student_options=student_options,
                    method_options=options, generations=2 if how == "born-again" else 1,
                    out=runs / f"seed{seed}" / name.split(" ")[0], resume=True, **settings)
            seconds = time.perf_counter() - start
            epoch_seconds = [row["seconds"] for row in result.history]
            row = {
                "seed": seed, "method": name, "methods": method, "options": options,
                "accuracy": result.summary["final"]["test"],
                "parameters": result.summary["parameters"],
                "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
                "seconds": round(seconds, 1), "epochs": args.epochs,
                "train_limit": args.train_limit, "teacher": f"{TEACHER[0]} {TEACHER[1]}",
                "student": f"{STUDENT[0]} {STUDENT[1]}",
                "teacher_accuracy": (result.summary.get("teacher_accuracy") or {}),
                "environment": environment(), "threads": torch.get_num_threads(),
            }
            if "generations" in result.summary:
                row["generations"] = [g["final"]["test"] for g in result.summary["generations"]]
            append(out, row)
            print(f"seed {seed} {name}: {row['accuracy']:.4f} "
                  f"({row['seconds_per_epoch']:.1f} s/epoch)", flush=True)


if __name__ == "__main__":
    main()
