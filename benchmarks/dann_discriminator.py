"""DANN's step time by discriminator size: ``hidden=1024`` (the default) vs lighter ones.

One process; the step of ``speed_adapt.py`` (LeNet with a 256-d bottleneck, as in
``dann_digits.py``, on random 1x28x28 source and target batches of 128, ``supervised`` beside
``dann``, SGD lr 0.01 momentum 0.9 wd 1e-3) with the discriminator as ``--hidden`` lists:
``1024`` (two layers of 1024, TLlib's and transferkit's default), ``[100]`` (Ganin &
Lempitsky 2015's MNIST->MNIST-M domain classifier: one layer of 100 units) and ``[256, 256]``.
Rows are timed in interleaved rounds in a new random order each round (speed_methods.py); the
ratio is each median over the default's.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/dann_discriminator.py --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads

import copy
import json

import torch

from _common import parser, write_result
from speed_methods import Row, _NoBar, ratios, timed_rounds, warm_up
from transferkit.config import OptimConfig, TrainConfig
from transferkit.engine.distributed import local_device
from transferkit.engine.loop import TrainData, Trainer
from transferkit.methods import build_methods
from transferkit.models import build_model, count_parameters

BATCH = 128
SHAPE = (1, 28, 28)
CLASSES = 10
OPTIM = OptimConfig(lr=0.01, momentum=0.9, weight_decay=1e-3)
DEFAULT = "1024"


def dann_row(hidden: int | list[int], model: torch.nn.Module, data: TrainData, steps: int,
             epochs: int, seed: int, device: str) -> tuple[Row, int]:
    """A Trainer for supervised + dann with ``hidden``; the row and the discriminator's size."""
    methods = build_methods("supervised+dann", None, {"hidden": hidden})
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, steps_per_epoch=steps, seed=seed,
                      device=device, progress=False, optim=OPTIM)
    trainer = Trainer(copy.deepcopy(model), methods, data, cfg)
    bar = _NoBar()

    def run(epoch: int, steps: int) -> None:
        trainer.steps_per_epoch = steps
        trainer._train_epoch(epoch, bar)

    disc = trainer.objective.methods["dann"].discriminator
    assert disc is not None
    return Row(json.dumps(hidden), [m.name for m in methods], run, {}), count_parameters(disc)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--hidden", nargs="+", default=["1024", "[100]", "[256, 256]"],
                   help="discriminator widths, each as JSON (the first is the reference)")
    p.add_argument("--steps", type=int, default=5, help="steps per row per round")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=4096, help="rows per domain (random tensors)")
    p.add_argument("--bottleneck", type=int, default=256, help="LeNet bottleneck (0 = none)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = local_device(args.device)
    torch.manual_seed(args.seed)
    x, xt = torch.randn(args.rows, *SHAPE), torch.randn(args.rows, *SHAPE) + 0.5
    y = torch.randint(0, CLASSES, (args.rows,))
    model = build_model("lenet", SHAPE, CLASSES, bottleneck=args.bottleneck)
    data = TrainData(x, y, CLASSES, xt)
    rows, sizes = [], {}
    for text in args.hidden:
        hidden = json.loads(text)
        one, size = dann_row(hidden, model, data, max(args.steps, args.warmup_steps),
                             args.rounds + 2, args.seed, str(device))
        rows.append(one)
        sizes[one.name] = size
    for one in rows:
        warm_up(one, args.warmup_steps, device)
        one.steps = args.steps
        print(f"warm-up hidden={one.name}: {1000 * one.warmup_seconds_per_step:.0f} ms/step",
              flush=True)
    timing = timed_rounds(rows, args.rounds, args.seed, device)
    reference = rows[0]
    results = ratios(rows, reference)
    for name, r in results.items():
        r["discriminator_parameters"] = sizes[name]
        print(f"hidden={name:12s} {r['ms_per_step']:8.1f} ms/step  "
              f"x{r[f'ratio_to_{reference.name}']:.3f}  ({sizes[name]:,} discriminator "
              "parameters)")
    write_result("dann_discriminator", {
        "settings": vars(args) | {
            "batch_size": BATCH, "input_shape": list(SHAPE),
            "model": f"lenet, bottleneck {args.bottleneck}",
            "model_parameters": count_parameters(model), "resolved_device": str(device),
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "optimizer": "sgd lr 0.01 momentum 0.9 wd 1e-3", "threads": torch.get_num_threads()},
        "protocol": f"{args.warmup_steps} untimed warm-up steps per row, then {args.rounds} "
                    f"interleaved rounds of {args.steps} steps per row in a new random order "
                    f"each round; ms_per_step is the median over rounds, ratio_to_{DEFAULT} "
                    "that median over the default discriminator's (hidden=1024: 1024-1024).",
        "rows": results, "seconds_timed": round(timing, 1),
    }, args.out)


if __name__ == "__main__":
    main()
