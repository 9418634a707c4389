"""fp32 vs bf16 autocast on this machine's CPU, for the MNIST KD step and the digits DANN step.

bf16 pays only where the CPU has bf16 matrix units (AMX or AVX-512 BF16); elsewhere it is
emulated. Each step is a transferkit ``Trainer`` built twice, ``amp="off"`` and
``amp="bf16"``, timed in interleaved rounds in one process (speed_methods.py's rounds), so
the bf16/fp32 ratio is measured under the same load. The result also records which bf16
unit the CPU has and what ``amp="auto"`` picks here, with its reason.

- KD: teacher mlp 1200-1200, student mlp 800-800, batch 128, random 1x28x28 inputs (Hinton's
  MNIST nets; random inputs time the same arithmetic).
- DANN: LeNet with a 256-d bottleneck, batch 64 source + 64 target, 1x28x28.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/precision_cpu.py --threads 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads

import copy
import statistics

import torch

from _common import parser, write_result
from speed_methods import OPTIM, Row, _NoBar, ratios, timed_rounds, warm_up
from transferkit.config import TrainConfig
from transferkit.engine.loop import TrainData, Trainer
from transferkit.engine.precision import choose_precision, cpu_bf16_units
from transferkit.methods import build_methods
from transferkit.models import build_model

SHAPE, CLASSES = (1, 28, 28), 10


def step_row(name: str, amp: str, model: torch.nn.Module, methods_spec: str,
             teacher: torch.nn.Module | None, data: TrainData, batch: int, steps: int,
             seed: int) -> Row:
    methods = build_methods(methods_spec, None if teacher is None else copy.deepcopy(teacher), {})
    if "supervised" not in [m.name for m in methods]:
        methods.insert(0, build_methods("supervised")[0])
    cfg = TrainConfig(epochs=1000, batch_size=batch, steps_per_epoch=steps, seed=seed,
                      device="cpu", progress=False, optim=OPTIM, amp=amp)
    trainer = Trainer(copy.deepcopy(model), methods, data, cfg)
    bar = _NoBar()

    def run(epoch: int, steps: int) -> None:
        trainer.steps_per_epoch = steps
        trainer._train_epoch(epoch, bar)

    return Row(name, [m.name for m in methods], run, {},
               note=f"amp={amp}: {trainer.precision.reason}")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--steps", type=int, default=4, help="steps per row per round")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    n = 128 * 16
    x = torch.rand(n, *SHAPE)
    y = torch.randint(0, CLASSES, (n,))
    xt = torch.rand(n, *SHAPE)
    teacher = build_model("mlp", SHAPE, CLASSES, widths=[1200, 1200]).eval()
    student = build_model("mlp", SHAPE, CLASSES, widths=[800, 800])
    lenet = build_model("lenet", SHAPE, CLASSES, bottleneck=256)
    kd_data, dann_data = TrainData(x, y, CLASSES), TrainData(x, y, CLASSES, xt)
    rows = []
    for amp in ("off", "bf16"):
        rows.append(step_row(f"kd {amp}", amp, student, "kd", teacher, kd_data, 128,
                             args.steps, args.seed))
        rows.append(step_row(f"dann {amp}", amp, lenet, "dann", None, dann_data, 64,
                             args.steps, args.seed))
    for row in rows:
        warm_up(row, args.steps, device)
        row.steps = args.steps
    seconds = timed_rounds(rows, args.rounds, args.seed, device)
    by_name = {row.name: row for row in rows}
    steps = {}
    for step in ("kd", "dann"):
        fp32, bf16 = by_name[f"{step} off"], by_name[f"{step} bf16"]
        table = ratios([fp32, bf16], fp32)
        paired = [b / f for b, f in zip(bf16.times, fp32.times, strict=True)]
        steps[step] = {
            "fp32_ms_per_step": table[fp32.name]["ms_per_step"],
            "bf16_ms_per_step": table[bf16.name]["ms_per_step"],
            "bf16_speed_vs_fp32": round(statistics.median(fp32.times)
                                        / statistics.median(bf16.times), 3),
            "bf16_speed_vs_fp32_paired_median": round(1 / statistics.median(paired), 3),
        }
    units = cpu_bf16_units()
    auto = choose_precision("auto", device)
    payload = {
        "command": "python benchmarks/precision_cpu.py"
                   + (f" --threads {args.threads}" if args.threads else ""),
        "rows": steps,
        "cpu_bf16_units": units,
        "bf16_kind": "native" if units else "emulated",
        "auto_picks": auto.name,
        "auto_reason": auto.reason,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "timing_seconds": round(seconds, 1),
    }
    path = write_result("precision_cpu", payload, args.out)
    for step, values in steps.items():
        print(f"{step}: bf16 runs at {values['bf16_speed_vs_fp32']}x fp32's speed "
              f"({payload['bf16_kind']}); auto picks {auto.name}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
