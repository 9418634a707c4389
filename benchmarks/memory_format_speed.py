"""Channels-last against contiguous weights on the CPU: the same training steps, as a ratio
measured in one run.

Cases (random inputs, 10 classes, SGD momentum 0.9, batch 128 source + 128 target):

- ``lenet dann 1x28x28``: the digits grid's step (section j, MNIST <-> USPS);
- ``lenet dann 3x28x28``: the same on colour inputs (MNIST -> MNIST-M);
- ``resnet8x4 supervised 3x32x32``: the CIFAR student of section g, batch 128.

Each case builds one ``Trainer`` per memory format from the same weights; the rows run in
interleaved rounds in a new random order each round (speed_methods.py). speedup =
contiguous ms/step / channels-last ms/step (> 1: channels-last is faster). The grid runs one
thread per process, hence the default.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/memory_format_speed.py --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads

import torch

from _common import parser, write_result
from speed_adapt import CLASSES, adapt_row
from speed_methods import ratios, timed_rounds, warm_up
from transferkit.models import build_model

CASES = {
    "lenet dann 1x28x28": ("lenet", {"bottleneck": 256}, (1, 28, 28), "dann"),
    "lenet dann 3x28x28": ("lenet", {"bottleneck": 256}, (3, 28, 28), "dann"),
    "resnet8x4 supervised 3x32x32": ("resnet8x4", {}, (3, 32, 32), "supervised"),
}
FORMATS = ("contiguous", "channels_last")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--steps", type=int, default=3, help="steps per row per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--rows", type=int, default=2048, help="rows per domain (random tensors)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    results = {}
    for case in args.cases.split(","):
        name, options, shape, spec = CASES[case]
        torch.manual_seed(args.seed)
        x, xt = torch.randn(args.rows, *shape), torch.randn(args.rows, *shape) + 0.5
        y = torch.randint(0, CLASSES, (args.rows,))
        model = build_model(name, shape, CLASSES, **options)
        rows = [adapt_row(spec, model, x, y, xt, args.steps, args.rounds + 2, args.seed, "cpu",
                          memory_format=fmt, name=fmt) for fmt in FORMATS]
        for row in rows:
            warm_up(row, 2, device)
            row.steps = args.steps
        timed_rounds(rows, args.rounds, args.seed, device)
        table = ratios(rows, rows[0])
        for row in rows:
            table[row.name]["memory_format"] = row.trainer.memory_format  # what the run used
        speedup = table["contiguous"]["ms_per_step"] / table["channels_last"]["ms_per_step"]
        results[case] = {"rows": table, "speedup": round(speedup, 3)}
        print(f"{case}: channels-last {speedup:.2f}x the contiguous step's speed", flush=True)
    write_result("memory_format_speed", {
        "settings": vars(args) | {"omp_wait_policy": os.environ["OMP_WAIT_POLICY"]},
        "protocol": f"2 untimed warm-up steps per row, then {args.rounds} interleaved rounds "
                    f"of {args.steps} steps per row in a new random order each round; "
                    "speedup = median contiguous ms/step / median channels-last ms/step",
        "rows": results,
    }, args.out)


if __name__ == "__main__":
    main()
