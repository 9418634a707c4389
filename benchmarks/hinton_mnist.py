"""Hinton, Vinyals & Dean (2015), MNIST: a 1200-1200 dropout teacher distilled at T=20.

Paper: teacher 67 test errors, student 800-800 alone 146, student with soft targets 74.
Same budget (epochs, optimizer, schedule) for the student alone and the distilled student.

    python benchmarks/hinton_mnist.py --data-dir ../shared/datasets [--device cuda]
"""

from __future__ import annotations

import time

import transferkit as tk
from _common import load_mnist, mnist_budget_parser, run_dir, test_row, write_result


def main() -> None:
    p = mnist_budget_parser(__doc__.splitlines()[0], teacher_epochs=60, student_epochs=60)
    p.add_argument("--temperature", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    mnist = load_mnist(args)
    common = {"seed": args.seed, "device": args.device, "batch_size": 128, "lr": args.lr,
              "momentum": 0.9, "schedule": "cosine", "progress": False}
    rows = {}

    def record(name: str, result: tk.RunResult, seconds: float, epochs: int) -> None:
        rows[name] = test_row(result, seconds, epochs)
        print(name, rows[name], flush=True)

    start = time.perf_counter()
    teacher = tk.train("mlp", mnist, epochs=args.teacher_epochs, jitter=2,
                       model_options={"widths": [1200, 1200], "dropout": 0.5,
                                      "input_dropout": 0.2},
                       out=run_dir(args.run_dir, "teacher"), **common)
    record("teacher 1200-1200 dropout+jitter", teacher, time.perf_counter() - start,
           args.teacher_epochs)
    student = {"widths": [800, 800]}
    start = time.perf_counter()
    alone = tk.train("mlp", mnist, epochs=args.student_epochs, model_options=student,
                     out=run_dir(args.run_dir, "student-alone"), **common)
    record("student 800-800 alone", alone, time.perf_counter() - start,
           args.student_epochs)
    start = time.perf_counter()
    kd = tk.distill(teacher.model, "mlp", mnist, method="kd", temperature=args.temperature,
                    alpha=args.alpha, epochs=args.student_epochs, student_options=student,
                    cache_teacher=True,
                    out=run_dir(args.run_dir, "student-kd"), **common)
    record(f"student 800-800 + kd (T={args.temperature:g})", kd, time.perf_counter() - start,
           args.student_epochs)
    write_result("hinton_mnist", {"settings": vars(args) | common, "rows": rows,
                                  "paper_test_errors": {"teacher": 67, "student alone": 146,
                                                        "student + kd": 74}}, args.out)


if __name__ == "__main__":
    main()
