"""Choose the distillation recipe of ``transferkit demo`` on a validation split (issue 6, h).

The demo distils a ``small-cnn`` teacher into an ``mlp`` (widths [64]) student on the bundled
digits and compares the student alone, ``+ l2`` and ``+ kd`` under one budget (adam, lr 1e-3,
batch 64, constant schedule, last epoch reported). Its first recipe (teacher 50 epochs; every
student 50 epochs; kd T=4, alpha=0.9; l2 ce_weight 0.5) was never chosen on anything.

Here digits' 1347 training rows are split 80/20 (stratified, seed 0) into a train part and a
validation part; the test split is not touched until the choice is made. Phase 1, on the
validation split, over ``--seeds`` seeds (a teacher per seed, trained on the train part):

* the teacher: ``small-cnn`` as is, or trained with 1-pixel random translations (``jitter``);
  chosen by the teacher's own mean validation accuracy;
* every student recipe below for ``max(--budgets)`` epochs, read at each budget (with the
  constant schedule a run's state after ``b`` epochs is that of a ``b``-epoch run);
* the first recipe (plain teacher, 50 epochs) for comparison.

Choice: the budget ``E`` maximising the mean over {alone, kd, l2} of each one's best mean
validation accuracy at ``E``; then kd's and l2's best recipe at ``E`` (ties: the smaller
budget, the earlier recipe in grid order). Phase 2, on the test split, over the same seeds:
the chosen teacher trained on all 1347 rows as the demo does, the student alone, ``+ l2`` and
``+ kd`` with the chosen recipe (also the student alone at its own best validation budget, read
from the same run), and the first recipe, reported as mean ± std (n-1) over seeds.

    python benchmarks/demo_recipe.py            # ~20 min on one CPU thread
    python benchmarks/demo_recipe.py --quick    # a smoke run of the whole script (~1 min)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch
from sklearn.model_selection import train_test_split

import transferkit as tk
from _common import parser, run_dir, write_result
from transferkit.data import Dataset, Split, load_dataset

STUDENT = ("mlp", {"widths": [64]})
TEACHERS = {  # name -> (model options, training settings)
    "small-cnn": ({}, {}),
    "small-cnn jitter 1": ({}, {"jitter": 1}),
}
TEACHER_EPOCHS = 50
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0
# (method, options); method None is the student alone. Ties go to the earlier entry.
GRID: list[tuple[str | None, dict]] = [(None, {})]
GRID += [("kd", {"temperature": t, "alpha": a}) for t in (1.0, 2.0, 4.0, 8.0) for a in (0.5, 0.9)]
GRID += [("l2", {"ce_weight": c, **form}) for c in (0.5, 1.0)
         for form in ({"reduction": "sum", "scale": "auto"}, {"reduction": "sum", "scale": 1.0},
                      {"reduction": "mean", "scale": "auto"})]
FIRST = {"teacher": "small-cnn", "epochs": 50, "kd": {"temperature": 4.0, "alpha": 0.9},
         "l2": {"ce_weight": 0.5}}  # the demo's recipe before this benchmark


def validation_split(digits: Dataset) -> Dataset:
    """Digits with ``train`` = 80% of its training rows and ``test`` = the other 20%."""
    rows = torch.arange(len(digits.train))
    train_rows, val_rows = train_test_split(
        rows.numpy(), test_size=VALIDATION_FRACTION, stratify=digits.train.y.numpy(),
        random_state=SPLIT_SEED)
    train_rows, val_rows = torch.as_tensor(train_rows), torch.as_tensor(val_rows)
    return replace(digits, name="digits-validation",
                   train=Split(digits.train.x[train_rows], digits.train.y[train_rows]),
                   test=Split(digits.train.x[val_rows], digits.train.y[val_rows]))


def accuracies(result: tk.RunResult) -> dict[int, float]:
    """Evaluation-split accuracy by epoch, at every evaluated epoch."""
    return {row["epoch"]: row["eval"]["test"]["accuracy"] for row in result.history
            if "eval" in row}


def stats(values: list[float]) -> dict:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": round(std, 4),
            "per_seed": [round(v, 4) for v in values]}


def label(method: str | None, options: dict) -> str:
    if method is None:
        return "alone"
    return f"{method} " + " ".join(f"{k}={v}" for k, v in options.items())


class Runner:
    def __init__(self, args, common: dict) -> None:
        self.args, self.common, self.seconds = args, common, 0.0

    def teacher(self, name: str, data: Dataset, seed: int, tag: str) -> tk.RunResult:
        options, settings = TEACHERS[name]
        start = time.perf_counter()
        result = tk.train("small-cnn", data, model_options=options, epochs=self.args.teacher_epochs,
                          eval_every=self.args.teacher_epochs, seed=seed,
                          out=run_dir(self.args.run_dir, f"{tag}-teacher-{name}-s{seed}"),
                          **settings, **self.common)
        print(f"{tag} teacher {name} seed {seed}: {accuracies(result)} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        return result

    def student(self, teacher: tk.RunResult, method: str | None, options: dict, data: Dataset,
                epochs: int, seed: int, tag: str) -> dict[int, float]:
        start = time.perf_counter()
        name = f"{tag}-{label(method, options)}-s{seed}".replace(" ", "_")
        out = run_dir(self.args.run_dir, name)
        settings = {"epochs": epochs, "eval_every": self.args.eval_every, "seed": seed,
                    "out": out, **self.common}
        if method is None:
            result = tk.train(STUDENT[0], data, model_options=STUDENT[1], **settings)
        else:
            result = tk.distill(teacher.model, STUDENT[0], data, method=method,
                                student_options=STUDENT[1], cache_teacher=True, **settings,
                                **options)
        acc = accuracies(result)
        print(f"{tag} {label(method, options)} seed {seed}: {acc} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        return acc


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds --seed, --seed+1, ...")
    p.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 150, 200],
                   help="student epochs compared (one run of the largest, read at each)")
    p.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny budgets")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.budgets, args.teacher_epochs = 1, [2, 4], 2
    budgets = sorted(set(args.budgets))
    first_epochs = min(FIRST["epochs"], budgets[0]) if args.quick else FIRST["epochs"]
    args.eval_every = budgets[0] if all(b % budgets[0] == 0 for b in budgets) else 1
    seeds = [args.seed + i for i in range(args.seeds)]
    common = {"device": args.device, "progress": False, "batch_size": 64, "optimizer": "adam",
              "lr": 1e-3, "schedule": "constant"}
    digits = load_dataset("digits", args.data_dir)
    val = validation_split(digits)
    run = Runner(args, common)
    begin = time.perf_counter()

    # Phase 1: validation.
    teacher_acc: dict[str, list[float]] = {name: [] for name in TEACHERS}
    grid_acc: dict[str, dict[int, list[float]]] = {label(m, o): {b: [] for b in budgets}
                                                   for m, o in GRID}
    first_acc: dict[str, list[float]] = {"alone": [], "kd": [], "l2": []}
    teachers: dict[str, list[tk.RunResult]] = {name: [] for name in TEACHERS}
    for seed in seeds:
        for name in TEACHERS:
            result = run.teacher(name, val, seed, "val")
            teachers[name].append(result)
            teacher_acc[name].append(result.summary["final"]["test"])
    teacher_stats = {name: stats(v) for name, v in teacher_acc.items()}
    chosen_teacher = max(TEACHERS, key=lambda n: teacher_stats[n]["mean"])  # ties: first
    for i, seed in enumerate(seeds):
        for method, options in GRID:
            acc = run.student(teachers[chosen_teacher][i], method, options, val, budgets[-1],
                              seed, "val")
            for b in budgets:
                grid_acc[label(method, options)][b].append(acc[b])
            if method is None:
                first_acc["alone"].append(acc.get(first_epochs, float("nan")))
        plain = teachers[FIRST["teacher"]][i]
        for method in ("kd", "l2"):
            acc = run.student(plain, method, FIRST[method], val, first_epochs, seed, "val-first")
            first_acc[method].append(acc[first_epochs])
    del teachers
    grid = [{"method": m or "alone", "options": o, "label": label(m, o),
             "validation": {b: stats(grid_acc[label(m, o)][b]) for b in budgets}} for m, o in GRID]

    def best(method: str, budget: int) -> dict:
        rows = [r for r in grid if r["method"] == method]
        return max(rows, key=lambda r: r["validation"][budget]["mean"])  # ties: first

    def score(budget: int) -> float:
        return statistics.fmean(best(m, budget)["validation"][budget]["mean"]
                                for m in ("alone", "kd", "l2"))

    epochs = max(budgets, key=lambda b: (score(b), -b))  # ties: the smaller budget
    alone_epochs = max(budgets, key=lambda b: (best("alone", b)["validation"][b]["mean"], -b))
    choice = {"teacher": chosen_teacher, "teacher_epochs": args.teacher_epochs,
              "epochs": epochs, "kd": best("kd", epochs)["options"],
              "l2": best("l2", epochs)["options"], "alone_best_epochs": alone_epochs,
              "budget_scores": {b: round(score(b), 4) for b in budgets},
              "rule": "teacher: its own mean validation accuracy; budget: the mean over "
                      "alone/kd/l2 of each one's best mean validation accuracy; then kd's and "
                      "l2's best recipe at that budget (ties: smaller budget, earlier recipe)"}
    print("choice", choice, flush=True)

    # Phase 2: test, teachers retrained on all training rows.
    test_acc: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        test_acc.setdefault(name, []).append(value)

    for seed in seeds:
        teacher = run.teacher(chosen_teacher, digits, seed, "test")
        add(f"teacher {chosen_teacher}", teacher.summary["final"]["test"])
        acc = run.student(teacher, None, {}, digits, max(epochs, alone_epochs), seed, "test")
        add(f"student alone ({epochs} epochs)", acc[epochs])
        add(f"student alone ({alone_epochs} epochs, its own best on validation)",
            acc[alone_epochs])
        add(f"student alone ({first_epochs} epochs, first recipe)", acc[first_epochs])
        for method in ("l2", "kd"):
            acc = run.student(teacher, method, choice[method], digits, epochs, seed, "test")
            add(f"student + {label(method, choice[method])} ({epochs} epochs)", acc[epochs])
        if chosen_teacher != FIRST["teacher"]:
            teacher = run.teacher(FIRST["teacher"], digits, seed, "test-first")
        add(f"first recipe: teacher {FIRST['teacher']}", teacher.summary["final"]["test"])
        for method in ("l2", "kd"):
            acc = run.student(teacher, method, FIRST[method], digits, first_epochs, seed,
                              "test-first")
            add(f"first recipe: student + {label(method, FIRST[method])} "
                f"({first_epochs} epochs)", acc[first_epochs])
    test = {name: stats(values) for name, values in test_acc.items()}
    for name, row in test.items():
        print(f"{name:70s} {row['mean']:.4f} ± {row['std']:.4f}", flush=True)
    write_result("demo_recipe_quick" if args.quick else "demo_recipe", {
        "settings": vars(args) | common | {"student": STUDENT, "seeds": seeds},
        "split": {"train": len(val.train), "validation": len(val.test), "test": len(digits.test),
                  "validation_fraction": VALIDATION_FRACTION, "split_seed": SPLIT_SEED,
                  "stratified": True},
        "validation": {"teachers": teacher_stats, "grid": grid,
                       "first_recipe": {k: stats(v) for k, v in first_acc.items()}},
        "choice": choice,
        "rows": test,  # test accuracy (the test split), mean ± std over seeds
        "seconds": round(time.perf_counter() - begin, 1),
    }, args.out)


if __name__ == "__main__":
    main()
