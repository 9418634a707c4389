"""CIFAR-100 at the published recipe: resnet32x4 -> resnet8x4, kd, dkd, crd, fitnet (issue 6 f).

The recipe of RepDistiller (Tian et al., ICLR 2020, "Contrastive Representation
Distillation") and mdistiller (Zhao et al., CVPR 2022, DKD): SGD lr 0.05, momentum 0.9, weight
decay 5e-4, batch 64, 240 epochs, lr x0.1 from the epochs with 0-based index 150, 180 and 210
(the reference code's ``epoch > 150`` on 1-based epochs), random crop with 4-pixel padding +
horizontal flip (on the training device), bfloat16 autocast on CUDA (``--no-amp`` turns it
off). The teacher resnet32x4 is trained once with the same recipe (seed 0) in
``<runs>/<budget>/teacher`` and reused; every run resumes (an interrupted one continues). Each
(seed, method) appends one JSON line to ``benchmarks/results/cifar100_recipe.jsonl`` with its
last-epoch test accuracy beside the published figure (nothing is chosen with test labels); a
row already in the file for the same budget is skipped.

    method   options (as the reference code)                                  published
    student  resnet8x4 alone, cross-entropy                                   72.50
    kd       T 4, alpha 0.9 (RepDistiller -r 0.1 -a 0.9)                      73.33
    dkd      alpha 1, beta 8, T 4, warm-up 20 epochs, + CE weight 1           76.32
    crd      weight 0.8 + CE (RepDistiller -r 1 -a 0 -b 0.8), 16384 negatives 75.51
    fitnet   weight 100 + CE (RepDistiller -r 1 -a 0 -b 100), middle stage    73.50
    teacher  resnet32x4, cross-entropy                                        79.42

(CRD paper Table 1 and DKD paper Table 1.) ``--epochs N`` shortens the recipe proportionally:
the milestones and DKD's warm-up are scaled by N / 240 (recorded in each row). CIFAR-100 cannot
be downloaded on these machines: put ``cifar-100-python.tar.gz`` (or the extracted
``cifar-100-python/``) in ``<data-dir>/cifar100/``; when it is missing the script says so in
one line and exits with status 2.

    python benchmarks/cifar100_recipe.py --data-dir DATA --device cuda --seeds 0
    python benchmarks/cifar100_recipe.py --throughput --device cuda

``--throughput``: the kd step of this recipe (frozen resnet32x4 teacher, resnet8x4 student,
batch 64, crop + flip, SGD with momentum and weight decay, bfloat16 autocast on CUDA) on
CIFAR-shaped random tensors (3x32x32, 100 classes), through transferkit's Trainer and through
a hand-written PyTorch loop doing the same arithmetic (teacher forward under no_grad, student
forward, KD + CE, backward, SGD step), in one process, in alternating blocks of ``--steps``
steps (ABBA order after one warm-up block each). Reported: median images/s of each side and
their ratio (transferkit / bare; 1.00 = no overhead), written to
``benchmarks/results/cifar100_throughput.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

import transferkit as tk
from _common import RESULTS, append, done, environment, limit_train, parser, write_result
from transferkit.config import OptimConfig, TrainConfig
from transferkit.data import load_dataset
from transferkit.engine.distributed import local_device
from transferkit.engine.loop import TrainData, Trainer
from transferkit.engine.progress import ProgressBar
from transferkit.errors import TransferkitError
from transferkit.methods import SoftTargetDistillation
from transferkit.models import build_model

TEACHER = "resnet32x4"
STUDENT = "resnet8x4"
EPOCHS = 240
MILESTONES = (150, 180, 210)
BATCH = 64
SHAPE = (3, 32, 32)
CLASSES = 100
OPTIM = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
         "schedule": "multistep", "gamma": 0.1}
KD_T, KD_ALPHA = 4.0, 0.9
# name -> (method list, options, published top-1 %); "student" is trained without a teacher.
METHODS: dict[str, tuple[str, dict, float]] = {
    "student": ("supervised", {}, 72.50),
    "kd": ("kd", {"temperature": KD_T, "alpha": KD_ALPHA}, 73.33),
    "dkd": ("dkd", {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20}, 76.32),
    "crd": ("crd", {"weight": 0.8}, 75.51),
    "fitnet": ("fitnet", {"weight": 100.0}, 73.50),
}
TEACHER_PUBLISHED = 79.42
RESULT = RESULTS / "cifar100_recipe.jsonl"


def milestones(epochs: int) -> list[int]:
    """The recipe's milestones scaled to ``epochs`` (unchanged at 240), kept strictly
    increasing and inside the run."""
    out: list[int] = []
    for m in MILESTONES:
        scaled = round(m * epochs / EPOCHS)
        if 1 <= scaled < epochs and (not out or scaled > out[-1]):
            out.append(scaled)
    return out


def method_options(name: str, epochs: int) -> dict:
    options = dict(METHODS[name][1])
    if "warmup" in options and epochs != EPOCHS:  # DKD's warm-up: 20 of 240 epochs
        options["warmup"] = options["warmup"] * epochs / EPOCHS
    return options


def budget_tag(epochs: int, train_limit: int | None) -> str:
    """Run directories per budget, so a shortened run never resumes into the full one."""
    return f"e{epochs}" + ("" if train_limit is None else f"-n{train_limit}")


def use_amp(args: argparse.Namespace, device: torch.device) -> bool:
    return device.type == "cuda" if args.amp is None else args.amp


# ---- the recipe -------------------------------------------------------------------------------
def run_recipe(args: argparse.Namespace, device: torch.device) -> None:
    names = args.methods.split(",") if args.methods else list(METHODS)
    if unknown := [n for n in names if n not in METHODS]:
        raise SystemExit(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    data = limit_train(load_dataset("cifar100", args.data_dir, download=False), args.train_limit)
    amp = use_amp(args, device)
    out = Path(args.out) if args.out else RESULT
    runs = Path(args.runs) / budget_tag(args.epochs, args.train_limit)
    steps = milestones(args.epochs)
    common = {**OPTIM, "milestones": steps, "device": args.device, "batch_size": BATCH,
              "augment": "cifar", "amp": amp, "epochs": args.epochs}
    seen = done(out, "seed", "method", "epochs", "train_limit")

    def row(seed: int, name: str, methods: str, options: dict, published: float, result,
            seconds: float) -> dict:
        acc = result.summary["final"]["test"]
        epoch_seconds = [r["seconds"] for r in result.history]
        return {
            "seed": seed, "method": name, "methods": methods, "options": options,
            "accuracy": acc, "accuracy_percent": round(100 * acc, 2),
            "published_percent": published,
            "difference_points": round(100 * acc - published, 2),
            "teacher_accuracy": result.summary.get("teacher_accuracy"),
            "parameters": result.summary["parameters"],
            "epochs": args.epochs, "milestones": steps, "batch_size": BATCH, "amp": amp,
            "train_limit": args.train_limit, "train_rows": len(data.train.x),
            "seconds_per_epoch": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 2),
            "seconds": round(seconds, 1), "run_dir": str(result.run_dir),
            "teacher": TEACHER, "student": STUDENT, "environment": environment(),
        }

    def report(r: dict) -> None:
        print(f"seed {r['seed']} {r['method']}: {r['accuracy_percent']:.2f}% (published "
              f"{r['published_percent']:.2f}%, {r['seconds_per_epoch']:.1f} s/epoch)", flush=True)

    start = time.perf_counter()
    teacher = tk.train(TEACHER, data, seed=0, out=runs / "teacher", resume=True, **common)
    if (0, "teacher", args.epochs, args.train_limit) not in seen:
        r = row(0, "teacher", "supervised", {}, TEACHER_PUBLISHED, teacher,
                time.perf_counter() - start)
        append(out, r)
        report(r)
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            if (seed, name, args.epochs, args.train_limit) in seen:
                continue
            method, _, published = METHODS[name]
            options = method_options(name, args.epochs)
            run_dir = runs / f"seed{seed}" / name
            start = time.perf_counter()
            if name == "student":
                result = tk.train(STUDENT, data, seed=seed, out=run_dir, resume=True, **common)
            else:
                result = tk.distill(runs / "teacher", STUDENT, data, method=method,
                                    method_options=options, seed=seed, out=run_dir,
                                    resume=True, **common)
            r = row(seed, name, method, options, published, result, time.perf_counter() - start)
            append(out, r)
            report(r)


# ---- throughput -------------------------------------------------------------------------------
def crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Hand-written CIFAR augmentation: zero-pad, per-image random crop, random mirror."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), device=x.device)
    col = torch.arange(w, device=x.device)
    flips = torch.rand(n, device=x.device) < 0.5
    cols = torch.where(flips[:, None], w - 1 - col, col) + offsets[1][:, None]
    rows = torch.arange(h, device=x.device)[None, :] + offsets[0][:, None]
    padded = F.pad(x, (pad, pad, pad, pad))
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def bare_kd(teacher, student, x, y, steps: int, seed: int, device: torch.device, amp: bool):
    """The hand-written loop: a closure running ``steps`` KD steps of the recipe."""
    teacher = teacher.to(device).eval().requires_grad_(False)
    student = student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=OPTIM["lr"], momentum=OPTIM["momentum"],
                          weight_decay=OPTIM["weight_decay"])
    t2 = KD_T * KD_T

    def run(block: int) -> None:
        gen = torch.Generator().manual_seed(seed + block)
        order = torch.randperm(len(x), generator=gen)[: steps * BATCH].view(steps, BATCH)
        for idx in order:
            xb = crop_flip(x[idx].to(device, non_blocking=True))
            yb = y[idx].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                with torch.no_grad():
                    t = teacher(xb)
                s = student(xb)
                soft = F.kl_div(F.log_softmax(s / KD_T, 1), F.log_softmax(t / KD_T, 1),
                                reduction="batchmean", log_target=True)
                loss = KD_ALPHA * t2 * soft + (1 - KD_ALPHA) * F.cross_entropy(s, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss.item()  # as the Trainer: the loss is read every step
            opt.step()

    return run


def transferkit_kd(teacher, student, x, y, steps: int, seed: int, args, amp: bool):
    """The same step through transferkit's Trainer (built once; one call = one epoch)."""
    cfg = TrainConfig(epochs=10_000, batch_size=BATCH, steps_per_epoch=steps, seed=seed,
                      device=args.device, progress=False, amp=amp, augment="cifar",
                      optim=OptimConfig(name="sgd", lr=OPTIM["lr"], momentum=OPTIM["momentum"],
                                        weight_decay=OPTIM["weight_decay"],
                                        schedule="multistep", milestones=list(MILESTONES)))
    method = SoftTargetDistillation(teacher, temperature=KD_T, alpha=KD_ALPHA)
    trainer = Trainer(student, [method], TrainData(x, y, CLASSES), cfg)
    bar = ProgressBar(False, 1)

    def run(block: int) -> None:
        trainer._train_epoch(block, bar)

    return run


def run_throughput(args: argparse.Namespace, device: torch.device) -> None:
    amp = use_amp(args, device)
    torch.manual_seed(args.seed)
    n = args.steps * BATCH
    x, y = torch.rand(n, *SHAPE), torch.randint(0, CLASSES, (n,))
    teacher = build_model(TEACHER, SHAPE, CLASSES)
    student = build_model(STUDENT, SHAPE, CLASSES)
    sides = {
        "transferkit": transferkit_kd(copy.deepcopy(teacher), copy.deepcopy(student), x, y,
                                      args.steps, args.seed, args, amp),
        "bare": bare_kd(copy.deepcopy(teacher), copy.deepcopy(student), x, y, args.steps,
                        args.seed, device, amp),
    }

    def timed(fn, block: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn(block)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n / (time.perf_counter() - start)

    for fn in sides.values():  # warm-up: allocator, cuDNN, autocast caches, thread pools
        timed(fn, 0)
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(1, args.repeats + 1):
        order = list(sides) if r % 2 else list(reversed(sides))
        for side in order:
            rates[side].append(timed(sides[side], r))
    med = {k: statistics.median(v) for k, v in rates.items()}
    paired = [a / b for a, b in zip(rates["transferkit"], rates["bare"], strict=True)]
    payload = {
        "settings": {"teacher": TEACHER, "student": STUDENT, "batch_size": BATCH,
                     "input_shape": list(SHAPE), "classes": CLASSES, "amp": amp,
                     "amp_dtype": "bfloat16" if amp else None, "augment": "cifar",
                     "steps_per_block": args.steps, "blocks": args.repeats,
                     "device": str(device), "seed": args.seed,
                     "cudnn_benchmark": torch.backends.cudnn.benchmark,
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "images_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "ratio_median": round(med["transferkit"] / med["bare"], 4),
        "ratio_paired_median": round(statistics.median(paired), 4),
        "images_per_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
    }
    print(f"images/s transferkit {med['transferkit']:.1f}, bare {med['bare']:.1f}, "
          f"ratio {payload['ratio_median']:.3f} (paired {payload['ratio_paired_median']:.3f})",
          flush=True)
    write_result("cifar100_throughput", payload, args.out)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0", help="comma-separated student seeds")
    p.add_argument("--methods", help=f"comma-separated, from {','.join(METHODS)} (default all)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="shorten the recipe (scaled)")
    p.add_argument("--train-limit", type=int, help="first N training images (smoke runs)")
    p.add_argument("--runs", default="runs/cifar100_recipe", help="run directories")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: on for CUDA)")
    p.add_argument("--throughput", action="store_true",
                   help="images/s of transferkit vs a bare loop on random CIFAR-shaped data")
    p.add_argument("--steps", type=int, default=50, help="throughput: steps per block")
    p.add_argument("--repeats", type=int, default=8, help="throughput: timed blocks per side")
    args = p.parse_args()
    if args.epochs < 1 or args.steps < 1 or args.repeats < 1:
        p.error("--epochs, --steps and --repeats must be >= 1")
    try:
        device = local_device(args.device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes, as RepDistiller
        if args.throughput:
            run_throughput(args, device)
        else:
            run_recipe(args, device)
    except TransferkitError as exc:  # e.g. the CIFAR-100 files are missing: one line
        print(" ".join(str(exc).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
