"""Hinton, Vinyals & Dean (2015), MNIST: a 1200-1200 dropout teacher distilled at T=20.

Paper: teacher 67 test errors, student 800-800 alone 146, student with soft targets 74.
Same budget (epochs, optimizer, schedule) for the student alone and the distilled student.

    python benchmarks/hinton_mnist.py --data-dir ../shared/datasets [--device cuda]
"""

from __future__ import annotations

import time

import transferkit as tk
from _common import errors, limit_train, parser, run_dir, write_result
from transferkit.data import load_dataset


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--teacher-epochs", type=int, default=60)
    p.add_argument("--student-epochs", type=int, default=60)
    p.add_argument("--temperature", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--train-limit", type=int, help="first N training images (smoke tests)")
    args = p.parse_args()
    mnist = limit_train(load_dataset("mnist", args.data_dir), args.train_limit)
    n = len(mnist.test)
    common = {"seed": args.seed, "device": args.device, "batch_size": 128, "lr": args.lr,
              "momentum": 0.9, "schedule": "cosine", "progress": False}
    rows = {}

    def record(name: str, result: tk.RunResult, seconds: float, **extra) -> None:
        acc = result.summary["final"]["test"]
        rows[name] = {"accuracy": acc, "test_errors": errors(acc, n),
                      "parameters": result.summary["parameters"],
                      "seconds": round(seconds, 1), **extra}
        print(name, rows[name], flush=True)

    start = time.perf_counter()
    teacher = tk.train("mlp", mnist, epochs=args.teacher_epochs, jitter=2,
                       model_options={"widths": [1200, 1200], "dropout": 0.5,
                                      "input_dropout": 0.2},
                       out=run_dir(args.run_dir, "teacher"), **common)
    record("teacher 1200-1200 dropout+jitter", teacher, time.perf_counter() - start,
           epochs=args.teacher_epochs)
    student = {"widths": [800, 800]}
    start = time.perf_counter()
    alone = tk.train("mlp", mnist, epochs=args.student_epochs, model_options=student,
                     out=run_dir(args.run_dir, "student-alone"), **common)
    record("student 800-800 alone", alone, time.perf_counter() - start,
           epochs=args.student_epochs)
    start = time.perf_counter()
    kd = tk.distill(teacher.model, "mlp", mnist, method="kd", temperature=args.temperature,
                    alpha=args.alpha, epochs=args.student_epochs, student_options=student,
                    cache_teacher=True,
                    out=run_dir(args.run_dir, "student-kd"), **common)
    record(f"student 800-800 + kd (T={args.temperature:g})", kd, time.perf_counter() - start,
           epochs=args.student_epochs)
    write_result("hinton_mnist", {"settings": vars(args) | common, "rows": rows,
                                  "paper_test_errors": {"teacher": 67, "student alone": 146,
                                                        "student + kd": 74}}, args.out)


if __name__ == "__main__":
    main()
