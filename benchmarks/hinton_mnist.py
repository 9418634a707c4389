"""Hinton, Vinyals & Dean (2015), MNIST: a 1200-1200 dropout teacher distilled at T=20.

Paper: teacher 67 test errors, student 800-800 alone 146, student with soft targets 74.
Same budget (epochs, optimizer, schedule, augmentation) for the student alone and the
distilled student. ``--max-norm`` caps each teacher unit's incoming weight norm, the
dropout recipe of Srivastava et al. (2014). ``--student-jitter N`` shifts the students'
inputs too; the kd student then asks the live teacher about the same shifted images it sees
(consistent views), and the student alone gets the same shifts.

    python benchmarks/hinton_mnist.py --data-dir ../shared/datasets [--device cuda]
"""

from __future__ import annotations

import time

import yaml

import transferkit as tk
from _common import load_mnist, mnist_budget_parser, run_dir, test_row, write_result


def main() -> None:
    p = mnist_budget_parser(__doc__.splitlines()[0], teacher_epochs=60, student_epochs=60)
    p.add_argument("--temperature", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=0.05, help="students' learning rate")
    p.add_argument("--teacher-lr", type=float, help="teacher's learning rate (default --lr)")
    p.add_argument("--teacher-optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--max-norm", type=float, help="teacher's max-norm per unit (default none)")
    p.add_argument("--student-jitter", type=int, default=0, help="students' shifts in pixels")
    p.add_argument("--teacher-run", help="reuse this teacher run directory instead of training")
    args = p.parse_args()
    mnist = load_mnist(args)
    common = {"seed": args.seed, "device": args.device, "batch_size": 128, "momentum": 0.9,
              "schedule": "cosine", "progress": False, "compile": args.compile, "amp": args.amp}
    teacher_settings = {"epochs": args.teacher_epochs, "jitter": 2,
                        "lr": args.teacher_lr or args.lr, "max_norm": args.max_norm,
                        "optimizer": args.teacher_optimizer}
    student_settings = {"epochs": args.student_epochs, "jitter": args.student_jitter,
                        "lr": args.lr}
    rows = {}

    def record(name: str, result: tk.RunResult, seconds: float, epochs: int) -> None:
        rows[name] = test_row(result, seconds, epochs)
        print(name, rows[name], flush=True)

    if args.teacher_run:
        teacher = tk.load_run(args.teacher_run)
        saved = yaml.safe_load((teacher.run_dir / "config.yaml").read_text())
        teacher_settings = {"reused": args.teacher_run, "train": saved["train"]}
        seconds = teacher.summary["seconds_this_session"]  # its own training time
    else:
        start = time.perf_counter()
        teacher = tk.train("mlp", mnist, model_options={"widths": [1200, 1200], "dropout": 0.5,
                                                         "input_dropout": 0.2},
                           out=run_dir(args.run_dir, "teacher"), **teacher_settings, **common)
        seconds = time.perf_counter() - start
    record("teacher 1200-1200 dropout+jitter", teacher, seconds, teacher.summary["epochs"])
    student = {"widths": [800, 800]}
    shifted = f", jitter {args.student_jitter}" if args.student_jitter else ""
    start = time.perf_counter()
    alone = tk.train("mlp", mnist, model_options=student,
                     out=run_dir(args.run_dir, "student-alone"), **student_settings, **common)
    record(f"student 800-800 alone{shifted}", alone, time.perf_counter() - start,
           args.student_epochs)
    start = time.perf_counter()
    kd = tk.distill(teacher.model, "mlp", mnist, method="kd", temperature=args.temperature,
                    alpha=args.alpha, student_options=student,
                    cache_teacher=not args.student_jitter,  # exact only for fixed inputs
                    out=run_dir(args.run_dir, "student-kd"), **student_settings, **common)
    record(f"student 800-800 + kd (T={args.temperature:g}){shifted}", kd,
           time.perf_counter() - start, args.student_epochs)
    settings = vars(args) | common | {"teacher": teacher_settings, "student": student_settings}
    write_result("hinton_mnist", {"settings": settings, "rows": rows,
                                  "paper_test_errors": {"teacher": 67, "student alone": 146,
                                                        "student + kd": 74}}, args.out)


if __name__ == "__main__":
    main()
