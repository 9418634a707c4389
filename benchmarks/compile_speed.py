"""Samples per second of the KD and DANN steps: a bare PyTorch loop, transferkit eager,
transferkit compiled, and compiled with CUDA graphs, each in fp32 and bf16 autocast.

All rows run in this one process, in interleaved rounds (speed_methods.py's), and every
figure is reported as a ratio to the eager bare loop in fp32 measured in the same rounds.
The bare loop is a strong baseline: its tensors sit on the device like transferkit's (no
copy per step) and it never reads the loss back. Steps are those of speed.py:

- KD: teacher mlp 1200-1200, student mlp 800-800, batch 128, 1x28x28 inputs;
- DANN: LeNet with a 256-d bottleneck, batch 64 source + 64 target, the 1024-1024
  discriminator, SGD momentum 0.9 with DANN's schedules.

On a GPU (issue 9's table):

    python benchmarks/compile_speed.py --device cuda

On a CPU the CUDA-graph rows are absent and inductor builds C++ kernels; a short check:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/compile_speed.py --device cpu --amps off
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads

import copy
import math
import time

import torch
import torch.nn.functional as F

from _common import parser, write_result
from speed_methods import OPTIM, Row, _NoBar, ratios, synchronize, timed_rounds, warm_up
from transferkit.config import TrainConfig
from transferkit.engine import compiled
from transferkit.engine.loop import TrainData, Trainer
from transferkit.losses import DomainDiscriminator, grad_reverse
from transferkit.methods import build_methods
from transferkit.models import build_model

SHAPE, CLASSES = (1, 28, 28), 10
KD_BATCH, DANN_BATCH = 128, 64


def trainer_row(name: str, kind: str, compile_mode: str, amp: str, model: torch.nn.Module,
                teacher: torch.nn.Module | None, data: TrainData, device: torch.device,
                seed: int) -> Row:
    spec = "kd" if kind == "kd" else "supervised+dann"
    methods = build_methods(spec, None if teacher is None else copy.deepcopy(teacher), {})
    batch = KD_BATCH if kind == "kd" else DANN_BATCH
    optim = OPTIM if kind == "kd" else OPTIM.model_copy(update={"schedule": "inverse",
                                                                 "weight_decay": 1e-3})
    cfg = TrainConfig(epochs=100_000, batch_size=batch, steps_per_epoch=1, seed=seed,
                      device=str(device), progress=False, optim=optim, amp=amp,
                      compile=compile_mode, memory_format="contiguous")  # the bare loop's
    trainer = Trainer(copy.deepcopy(model), methods, data, cfg)
    trainer.total_steps = 10**6  # the schedules' horizon: fixed, whatever the rounds
    bar = _NoBar()

    def run(epoch: int, steps: int) -> None:
        trainer.steps_per_epoch = steps
        trainer._train_epoch(epoch, bar)

    note = f"{trainer.compiled.reason}; {trainer.precision.reason}; {trainer.data_placement}"
    row = Row(name, [m.name for m in methods], run, {}, note=note)
    row.trainer = trainer  # type: ignore[attr-defined]
    return row


def bare_kd_row(name: str, amp: str, teacher: torch.nn.Module, student: torch.nn.Module,
                data: TrainData, device: torch.device, seed: int) -> Row:
    """Hinton's KD by hand: T^2 KL at T=4 weighted 0.9, CE 0.1; SGD momentum."""
    teacher = copy.deepcopy(teacher).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(student).to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=OPTIM.lr, momentum=OPTIM.momentum)
    x, y = data.x.to(device), data.y.to(device)
    dtype = torch.bfloat16 if amp == "bf16" else None

    def run(epoch: int, steps: int) -> None:
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randint(0, len(x), (steps, KD_BATCH), generator=gen).to(device)
        for idx in order:
            xb, yb = x[idx], y[idx]
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16,
                                enabled=dtype is not None):
                with torch.no_grad():
                    soft = F.softmax(teacher(xb) / 4.0, dim=1)
                logits = student(xb)
                kl = F.kl_div(F.log_softmax(logits / 4.0, dim=1), soft, reduction="batchmean")
                loss = 0.9 * 16.0 * kl + 0.1 * F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return Row(name, ["bare kd"], run, {}, note="hand-written loop, data on the device")


def bare_dann_row(name: str, amp: str, model: torch.nn.Module, data: TrainData,
                  device: torch.device, seed: int) -> Row:
    """DANN by hand: joint forward, CE on source, GRL + 1024-1024 discriminator BCE."""
    model = copy.deepcopy(model).to(device).train()
    torch.manual_seed(seed)
    disc = DomainDiscriminator(256, hidden=(1024, 1024)).to(device).train()
    opt = torch.optim.SGD([*model.parameters(), *disc.parameters()], lr=OPTIM.lr,
                          momentum=OPTIM.momentum, weight_decay=1e-3)
    x, y, xt = data.x.to(device), data.y.to(device), data.x_target.to(device)
    dtype = torch.bfloat16 if amp == "bf16" else None
    domain = torch.cat([torch.ones(DANN_BATCH), torch.zeros(DANN_BATCH)]).to(device)
    counter = [0]

    def run(epoch: int, steps: int) -> None:
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randint(0, len(x), (steps, DANN_BATCH), generator=gen).to(device)
        target = torch.randint(0, len(xt), (steps, DANN_BATCH), generator=gen).to(device)
        for idx, tidx in zip(order, target, strict=True):
            step = counter[0]
            for group in opt.param_groups:
                group["lr"] = OPTIM.lr * (1 + 0.001 * step) ** -0.75
            coeff = 2.0 / (1.0 + math.exp(-10.0 * step / 10**6)) - 1.0
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16,
                                enabled=dtype is not None):
                features = model.features(torch.cat([x[idx], xt[tidx]]))
                logits = model.head(features)
                ce = F.cross_entropy(logits[:DANN_BATCH], y[idx])
                d = disc(grad_reverse(features, coeff)).flatten()
                loss = ce + F.binary_cross_entropy_with_logits(d.float(), domain)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            counter[0] += 1

    return Row(name, ["bare dann"], run, {}, note="hand-written loop, data on the device")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, help="torch threads (CPU)")
    p.add_argument("--steps", type=int, default=50, help="steps per row per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--amps", default="off,bf16", help="comma-separated: off, bf16")
    p.add_argument("--kinds", default="kd,dann")
    p.add_argument("--backend", default="inductor",
                   help="torch.compile backend (aot_eager: trace only, to check the harness)")
    args = p.parse_args()
    compiled.BACKEND = args.backend
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(args.seed)
    n = 128 * 64
    x, y, xt = torch.rand(n, *SHAPE), torch.randint(0, CLASSES, (n,)), torch.rand(n, *SHAPE)
    teacher = build_model("mlp", SHAPE, CLASSES, widths=[1200, 1200]).eval()
    student = build_model("mlp", SHAPE, CLASSES, widths=[800, 800])
    lenet = build_model("lenet", SHAPE, CLASSES, bottleneck=256)
    data = {"kd": TrainData(x, y, CLASSES), "dann": TrainData(x, y, CLASSES, xt)}
    modes = ["off", "on", *(["graphs"] if device.type == "cuda" else [])]
    rows: dict[str, list[Row]] = {}
    for kind in args.kinds.split(","):
        rows[kind] = []
        for amp in args.amps.split(","):
            tag = "fp32" if amp == "off" else "bf16"
            if kind == "kd":
                rows[kind].append(bare_kd_row(f"bare {tag}", amp, teacher, student, data[kind],
                                              device, args.seed))
            else:
                rows[kind].append(bare_dann_row(f"bare {tag}", amp, lenet, data[kind], device,
                                                args.seed))
            for mode in modes:
                label = {"off": "eager", "on": "compiled", "graphs": "compiled+graphs"}[mode]
                rows[kind].append(trainer_row(
                    f"transferkit {label} {tag}", kind, mode, amp,
                    student if kind == "kd" else lenet, teacher if kind == "kd" else None,
                    data[kind], device, args.seed))
    tables = {}
    start = time.perf_counter()
    for kind, kind_rows in rows.items():
        for row in kind_rows:
            warm_up(row, max(3, args.steps // 5), device)  # compiles, records CUDA graphs
            row.steps = args.steps
        timed_rounds(kind_rows, args.rounds, args.seed, device)
        reference = kind_rows[0]
        table = ratios(kind_rows, reference)
        samples = KD_BATCH if kind == "kd" else 2 * DANN_BATCH
        for row in kind_rows:
            entry = table[row.name]
            entry["samples_per_s"] = round(samples * 1000 / entry["ms_per_step"], 1)
            # speed relative to the bare fp32 loop (> 1: faster), from the median step times
            entry["speed_vs_bare_fp32"] = round(
                table[reference.name]["ms_per_step"] / entry["ms_per_step"], 3)
            entry["note"] = row.note
            trainer = getattr(row, "trainer", None)
            if trainer is not None:
                entry["compile"] = trainer.compiled.record()
        tables[kind] = table
        synchronize(device)
    payload = {"device": str(device), "rows": tables, "rounds": args.rounds,
               "steps_per_round": args.steps,
               "timing_seconds": round(time.perf_counter() - start, 1),
               "reference": "bare fp32 (eager, hand-written, data on the device)"}
    write_result(f"compile_speed_{device.type}", payload, args.out)
    for kind, table in tables.items():
        for name, entry in table.items():
            print(f"{kind:5s} {name:34s} {entry['samples_per_s']:>10.0f} samples/s  "
                  f"{entry['speed_vs_bare_fp32']:.2f}x the bare fp32 loop's speed")


if __name__ == "__main__":
    main()
