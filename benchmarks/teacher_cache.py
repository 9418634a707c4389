"""Teacher logits: live, cached in memory for the run, or on disk across runs (ratios in one run).

The MNIST ``kd`` step of ``speed.py`` (1200-1200 teacher, 800-800 student, batch 128, SGD lr
0.01 momentum 0.9, T=4, alpha=0.9) on the real 60,000 training images, in one process. Three
Trainers are built before any timing: the live teacher, ``cache_teacher=True`` (its logits on
every row computed at setup, in memory) and ``cache_teacher="disk"`` built after a first disk
run filled the cache (a warm cache: the second run of a sweep). Their steps are timed in
interleaved rounds in a new random order each round (as speed_methods.py); every ratio is to
the live step's median. The one-time costs are timed separately, ``--setup-repeats`` times
each in turn: building a Trainer with the live teacher (the baseline), with the in-memory
cache (the teacher over every row), with a cold disk cache (the same plus the key's hashes and
the file written) and with a warm one (the key's hashes, the file read and checked, a spot
check of 8 rows), after one untimed build. A setup's extra seconds over the baseline are also
given in live steps.

    OMP_WAIT_POLICY=PASSIVE TRANSFERKIT_DATA_DIR=/work/shared/datasets \\
        python benchmarks/teacher_cache.py --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads

import copy
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _common import load_mnist, parser, write_result
from speed_methods import Row, _NoBar, ratios, timed_rounds, warm_up
from transferkit.config import OptimConfig, TrainConfig
from transferkit.engine.loop import TrainData, Trainer
from transferkit.methods import SoftTargetDistillation
from transferkit.methods.teacher_cache import tensor_sha256
from transferkit.models import build_model, count_parameters

BATCH = 128
CLASSES = 10
TEMPERATURE, ALPHA = 4.0, 0.9
OPTIM = OptimConfig(lr=0.01, momentum=0.9)
LIVE, MEMORY, DISK = "live", "memory (in-run cache)", "disk (warm cache)"


def build(kind: str, teacher: nn.Module, student: nn.Module, data: TrainData, folder: Path,
          steps: int, epochs: int, seed: int) -> tuple[Trainer, float]:
    """A Trainer for ``kind`` with its own copies of the networks, and its build seconds."""
    cache = {LIVE: {}, MEMORY: {"cache_teacher": True},
             DISK: {"cache_teacher": "disk", "teacher_cache_dir": str(folder)}}[kind]
    method = SoftTargetDistillation(copy.deepcopy(teacher), temperature=TEMPERATURE,
                                    alpha=ALPHA, **cache)
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, steps_per_epoch=steps, seed=seed,
                      device="cpu", progress=False, optim=OPTIM)
    start = time.perf_counter()
    trainer = Trainer(copy.deepcopy(student), [method], data, cfg)
    return trainer, time.perf_counter() - start


def row(name: str, trainer: Trainer) -> Row:
    bar = _NoBar()

    def run(epoch: int, steps: int) -> None:
        trainer.steps_per_epoch = steps
        trainer._train_epoch(epoch, bar)

    return Row(name, [m.name for m in trainer.objective.methods.values()], run,
               dict(trainer.objective.teachers))


def setup_costs(teacher: nn.Module, student: nn.Module, data: TrainData, repeats: int,
                seed: int) -> dict[str, list[float]]:
    """Seconds to build each kind of Trainer, ``repeats`` times in turn (cold: a new folder)."""
    times: dict[str, list[float]] = {"live": [], "memory": [], "disk_cold": [], "disk_warm": []}
    build(LIVE, teacher, student, data, Path(), 1, 1, seed)[0].close()  # untimed: lazy init
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="tk-teacher-cache-"))
        try:
            for kind, key in ((LIVE, "live"), (MEMORY, "memory"), (DISK, "disk_cold"),
                              (DISK, "disk_warm")):
                trainer, seconds = build(kind, teacher, student, data, folder, 1, 1, seed)
                trainer.close()
                times[key].append(seconds)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print("setup seconds: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()),
              flush=True)
    return times


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--steps", type=int, default=20, help="steps per row per round")
    p.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--setup-repeats", type=int, default=3)
    p.add_argument("--train-limit", type=int, help="first N training images (smoke tests)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    mnist = load_mnist(args)
    data = TrainData(mnist.train.x, mnist.train.y, CLASSES)
    torch.manual_seed(args.seed)
    teacher = build_model("mlp", mnist.input_shape, CLASSES, widths=[1200, 1200], dropout=0.5)
    student = build_model("mlp", mnist.input_shape, CLASSES, widths=[800, 800])

    costs = setup_costs(teacher, student, data, args.setup_repeats, args.seed)
    start = time.perf_counter()
    digest = tensor_sha256(data.x)
    hash_seconds = time.perf_counter() - start

    folder = Path(tempfile.mkdtemp(prefix="tk-teacher-cache-"))
    try:
        epochs = args.rounds + 1
        most = max(args.steps, args.warmup_steps)
        build(DISK, teacher, student, data, folder, most, epochs, args.seed)[0].close()  # fill
        trainers = {kind: build(kind, teacher, student, data, folder, most, epochs, args.seed)[0]
                    for kind in (LIVE, MEMORY, DISK)}
        disk_method = next(iter(trainers[DISK].objective.methods.values()))
        status = disk_method.cache_record["source"]["status"]
        assert status == "hit", f"the warm disk cache was not hit: {status}"
        file = Path(disk_method.cache_record["source"]["file"])
        file_bytes = file.stat().st_size
        rows = [row(kind, trainer) for kind, trainer in trainers.items()]
        for r in rows:
            warm_up(r, args.warmup_steps, torch.device("cpu"))
            r.steps = args.steps
            print(f"warm-up {r.name}: {1000 * r.warmup_seconds_per_step:.1f} ms/step, teacher "
                  f"calls/step {r.teacher_calls}", flush=True)
        timing = timed_rounds(rows, args.rounds, args.seed, torch.device("cpu"))
        live = next(r for r in rows if r.name == LIVE)
        results = ratios(rows, live)
        for trainer in trainers.values():
            trainer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    live_step = statistics.median(live.times)
    base = statistics.median(costs["live"])
    setup = {}
    for key, values in costs.items():
        median = statistics.median(values)
        setup[key] = {"seconds_median": round(median, 3), "seconds": [round(v, 3) for v in values],
                      "extra_seconds_over_live": round(median - base, 3),
                      "extra_in_live_steps": round((median - base) / live_step, 1)}
    for key in ("disk_cold", "disk_warm"):  # same repeat, back to back: less load noise
        paired = [d - m for d, m in zip(costs[key], costs["memory"], strict=True)]
        setup[key]["minus_memory_paired_median"] = round(statistics.median(paired), 3)
    memory_fill = setup["memory"]["extra_seconds_over_live"]
    warm = setup["disk_warm"]["extra_seconds_over_live"]
    summary = {
        "memory_step_ratio_to_live": results[MEMORY]["ratio_to_live"],
        "disk_warm_step_ratio_to_live": results[DISK]["ratio_to_live"],
        "disk_warm_setup_ratio_to_memory_fill": round(warm / memory_fill, 3),
        "disk_cold_setup_ratio_to_memory_fill": round(
            setup["disk_cold"]["extra_seconds_over_live"] / memory_fill, 3),
    }
    for name, r in results.items():
        print(f"{name:24s} {r['ms_per_step']:8.2f} ms/step  x{r['ratio_to_live']:.3f}")
    extra = {k: v["extra_seconds_over_live"] for k, v in setup.items()}
    print(f"one-time costs (s over a live Trainer): {extra}")
    print(f"summary: {summary}")
    write_result("teacher_cache", {
        "settings": vars(args) | {
            "batch_size": BATCH, "rows": len(data.x), "threads": args.threads,
            "teacher": {"model": "mlp 1200-1200 (dropout 0.5)",
                        "parameters": count_parameters(teacher)},
            "student": {"model": "mlp 800-800", "parameters": count_parameters(student)},
            "kd": {"temperature": TEMPERATURE, "alpha": ALPHA},
            "optimizer": "sgd lr 0.01 momentum 0.9",
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "data": "MNIST training images (60,000 x 1x28x28 float32), untrained networks",
        },
        "protocol": (
            f"{args.warmup_steps} untimed warm-up steps per row, then {args.rounds} interleaved "
            f"rounds of {args.steps} steps per row in a new random order each round; "
            "ms_per_step is the median over rounds and ratio_to_live the median over the live "
            "teacher's. setup: seconds to build a Trainer (probe + method setup), "
            f"{args.setup_repeats} times each in turn; disk_cold writes into a new folder, "
            "disk_warm reads what disk_cold wrote. extra_in_live_steps = (setup - live setup) / "
            "live step; minus_memory_paired_median: the median over repeats of (this setup - the "
            "in-memory setup of the same repeat)."
        ),
        "machine": {"cpu_count": os.cpu_count(),
                    "load_average_1_5_15min": {"start": [round(v, 2) for v in load_before],
                                               "end": [round(v, 2) for v in os.getloadavg()]}},
        "rows": results,
        "setup": setup,
        "summary": summary,
        "cache_file": {"bytes": file_bytes, "rows_sha256_seconds": round(hash_seconds, 3),
                       "rows_sha256": digest[:16]},
        "seconds_timed": round(timing, 1),
    }, args.out)


if __name__ == "__main__":
    main()
