"""Training-step speed of every adaptation method relative to ``dann`` (ratio in one run).

One process; LeNet with a 256-d bottleneck on random 1x28x28 source and target batches of
128 (10 classes), SGD lr 0.01 momentum 0.9, each method list as ``adapt`` builds it
(``supervised`` beside it, except for adda, which schedules its own). Source-free methods
(shot, tent, adabn) train on the target rows alone, as they do in ``adapt``. Rows are timed
in interleaved rounds in a new random order each round (see speed_methods.py); ``dann``
against a hand-written loop is section d's ``speed.py --methods dann``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/speed_adapt.py --threads 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads

import copy

import torch

from _common import parser, write_result
from speed_methods import Row, _NoBar, ratios, timed_rounds, warm_up
from transferkit.config import OptimConfig, TrainConfig
from transferkit.engine.distributed import local_device
from transferkit.engine.loop import TrainData, Trainer
from transferkit.methods import METHODS, build_methods, takes_teacher
from transferkit.models import build_model

BATCH = 128
SHAPE = (1, 28, 28)
CLASSES = 10
OPTIM = OptimConfig(lr=0.01, momentum=0.9, weight_decay=1e-3)
REFERENCE = "dann"


def adaptation_methods() -> list[str]:
    """dann first, then every registered method that adapts (needs target rows or is
    source-free), with dann+bsp for the regulariser meant beside an aligner."""
    names = [REFERENCE]
    for name in METHODS:
        factory = METHODS.get(name)
        if name in (REFERENCE, "bsp") or takes_teacher(name):
            continue
        if factory.source_free or factory.needs_target:
            names.append(name)
    names.append("dann+bsp")
    return names


def adapt_row(spec: str, model: torch.nn.Module, x, y, xt, steps: int, epochs: int, seed: int,
              device: str, memory_format: str = "auto", name: str | None = None) -> Row:
    # adda: one source epoch, so its adaptation stage (timed below) starts at epoch 1
    methods = build_methods(spec, None, {"source_epochs": 1} if spec == "adda" else {})
    source_free = all(m.source_free for m in methods)
    if source_free:
        data = TrainData(xt, None, CLASSES)
    else:
        data = TrainData(x, y, CLASSES, xt)
        if not any(m.replaces_supervised or m.name == "supervised" for m in methods):
            methods.insert(0, build_methods("supervised")[0])
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, steps_per_epoch=steps, seed=seed,
                      device=device, progress=False, optim=OPTIM, memory_format=memory_format)
    trainer = Trainer(copy.deepcopy(model), methods, data, cfg)
    bar = _NoBar()
    if spec == "adda":  # time its adaptation stage (two phases), not its source stage
        for method in trainer.objective.methods.values():
            method.start_epoch(1)
        trainer.objective.methods["adda"].start_epoch = lambda epoch: None

    def run(epoch: int, steps: int) -> None:
        trainer.steps_per_epoch = steps
        trainer._train_epoch(epoch, bar)

    note = "target rows only (source-free)" if source_free else ""
    if not any(m.trains_network for m in methods):
        note = "no optimizer step: the statistics are re-estimated once, at setup"
    row = Row(name or spec, [m.name for m in methods], run, {}, note=note)
    row.trainer = trainer  # type: ignore[attr-defined]
    return row


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--steps", type=int, default=3, help="steps per row per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--rows", type=int, default=4096, help="rows per domain (random tensors)")
    p.add_argument("--only", nargs="+", help="time only these method lists (dann always)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = local_device(args.device)
    torch.manual_seed(args.seed)
    x, xt = torch.randn(args.rows, *SHAPE), torch.randn(args.rows, *SHAPE) + 0.5
    y = torch.randint(0, CLASSES, (args.rows,))
    model = build_model("lenet", SHAPE, CLASSES, bottleneck=256)
    names = adaptation_methods()
    if args.only:
        wanted = {n for part in args.only for n in part.split(",")}
        names = [n for n in names if n == REFERENCE or n in wanted]
    epochs = args.rounds + 2
    rows, errors = [], {}
    for name in names:
        try:
            rows.append(adapt_row(name, model, x, y, xt, max(args.steps, args.warmup_steps),
                                  epochs, args.seed, str(device)))
        except Exception as exc:  # record it, time the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: setup failed: {errors[name]}", flush=True)
    for row in rows:
        warm_up(row, args.warmup_steps, device)
        row.steps = args.steps
        print(f"warm-up {row.name}: {1000 * row.warmup_seconds_per_step:.0f} ms/step", flush=True)
    timing = timed_rounds(rows, args.rounds, args.seed, device)
    reference = next(row for row in rows if row.name == REFERENCE)
    results = ratios(rows, reference)
    for name, r in results.items():
        print(f"{name:16s} {r['ms_per_step']:9.1f} ms/step  x{r['ratio_to_dann']:.3f} of dann")
    write_result("speed_adapt", {
        "settings": vars(args) | {"batch_size": BATCH, "input_shape": list(SHAPE),
                                  "model": "lenet, bottleneck 256", "resolved_device":
                                  str(device), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                                  "optimizer": "sgd lr 0.01 momentum 0.9 wd 1e-3"},
        "protocol": f"{args.warmup_steps} untimed warm-up steps per row, then {args.rounds} "
                    f"interleaved rounds of {args.steps} steps per row in a new random order "
                    "each round; ms_per_step is the median over rounds, ratio_to_dann that "
                    "median over dann's. mcd runs 3 phases (1 + 1 + num_k=4 forwards), adda "
                    "its adaptation stage (2 phases), fixmatch one extra student forward.",
        "rows": results, "errors": errors, "seconds_timed": round(timing, 1),
    }, args.out)


if __name__ == "__main__":
    main()
