"""The seed article's example on MNIST: seed-cnn teacher -> seed-mlp student.

Student alone vs student with ``l2`` (the article's objective) vs ``kd``, same budget. The
teacher's logits are computed once (``cache_teacher``: exact, since inputs are not augmented).

    python benchmarks/seed_mnist.py --data-dir ../shared/datasets [--device cuda]
"""

from __future__ import annotations

import time

import transferkit as tk
from _common import load_mnist, mnist_budget_parser, run_dir, test_row, write_result


def main() -> None:
    p = mnist_budget_parser(__doc__.splitlines()[0], teacher_epochs=10, student_epochs=20)
    args = p.parse_args()
    mnist = load_mnist(args)
    common = {"seed": args.seed, "device": args.device, "batch_size": 128, "optimizer": "adam",
              "lr": 1e-3, "schedule": "cosine", "progress": False, "compile": args.compile,
              "amp": args.amp}
    rows = {}

    def record(name: str, result: tk.RunResult, seconds: float, epochs: int) -> None:
        rows[name] = test_row(result, seconds, epochs)
        print(name, rows[name], flush=True)

    start = time.perf_counter()
    teacher = tk.train("seed-cnn", mnist, epochs=args.teacher_epochs,
                       out=run_dir(args.run_dir, "teacher"), **common)
    record("teacher seed-cnn", teacher, time.perf_counter() - start, args.teacher_epochs)
    runs = [("student seed-mlp alone", "alone", None, {}),
            # The article's objective exactly (the recorded numbers were measured with it).
            ("student seed-mlp + l2", "l2", "l2", {"reduction": "sum", "scale": 1.0}),
            ("student seed-mlp + kd (T=4)", "kd", "kd", {"temperature": 4.0, "alpha": 0.9})]
    for name, folder, method, options in runs:
        start = time.perf_counter()
        out = run_dir(args.run_dir, f"student-{folder}")
        if method is None:
            result = tk.train("seed-mlp", mnist, epochs=args.student_epochs, out=out, **common)
        else:
            result = tk.distill(teacher.model, "seed-mlp", mnist, method=method,
                                epochs=args.student_epochs, out=out, cache_teacher=True,
                                **common, **options)
        record(name, result, time.perf_counter() - start, args.student_epochs)
    write_result("seed_mnist", {"settings": vars(args) | common, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
