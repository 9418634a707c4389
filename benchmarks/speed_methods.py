"""Training-step speed of every distillation method relative to ``kd``, and ``kd`` vs a bare loop.

One process, one fixed pair with named stages (teacher ``resnet32x4`` width 0.25, student
``resnet8x4`` width 0.125, on random 1x28x28 inputs shaped like Fashion-MNIST, 10 classes,
batch 128, SGD lr 0.01 momentum 0.9). Every row (a method list, as ``distill`` builds it:
methods without their own hard-label term get ``supervised`` beside them) gets its own
``Trainer``, built before any timing (probe and connectors are setup, not timed), plus the
same arithmetic as ``kd`` written by hand (``bare``). After a few warm-up steps per row, the
rows are timed in interleaved rounds (each round runs every row for ``--steps`` steps, or one
step for a row over ``--slow-factor`` times slower than ``kd``, such as ``crd`` with its 16384
negatives on a CPU; a new random order every round), so a load that changes during the
run (a shared machine) hits every row alike; the median seconds per step and its ratio
to ``kd``'s median are reported, plus the median of the per-round ratios and the ratio of
the fastest rounds. The warm-up steps
also count the teacher's forward calls per step (a hook added after the Trainer's probe).
``data-free`` is timed for its training step only; its synthesis (DeepInversion) is timed
once, separately, for a few images.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/speed_methods.py --threads 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads

import copy
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from _common import bare_kd_step, parser, write_result
from transferkit.config import OptimConfig, TrainConfig
from transferkit.engine.distributed import local_device
from transferkit.engine.loop import TrainData, Trainer
from transferkit.methods import METHODS, build_methods, method_names, takes_teacher
from transferkit.models import build_model, count_parameters

BATCH = 128
SHAPE = (1, 28, 28)
CLASSES = 10
TEACHER = "resnet32x4"
STUDENT = "resnet8x4"
TEMPERATURE, ALPHA = 4.0, 0.9  # kd's defaults, also used by the bare loop
OPTIM = OptimConfig(lr=0.01, momentum=0.9)
# The list whose teacher calls must be exactly one per step (one forward shared by all).
SHARED_TEACHER_LIST = "kd+fitnet+at+crd"
# Registered methods that are not distillation from a teacher and are timed anyway.
NO_TEACHER = ("supervised", "dml")


@dataclass
class Row:
    """One timed configuration: ``run(epoch, steps)`` trains ``steps`` steps of ``epoch``."""

    name: str
    methods: list[str]
    run: Callable[[int, int], None]
    teachers: dict[str, nn.Module]
    note: str = ""
    steps: int = 0  # per timed round
    warmup_seconds_per_step: float = 0.0
    times: list[float] = field(default_factory=list)
    teacher_calls: dict[str, float] = field(default_factory=dict)


class _NoBar:
    status = ""

    def start_epoch(self, *args: object) -> None: ...

    def due(self) -> bool:
        return False

    def update(self, *args: object) -> None: ...


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def row_specs(names: list[str] | None) -> list[tuple[str, str, dict]]:
    """(row name, method list, how to build it): kd, then the registry's methods in order."""
    specs: list[tuple[str, str, dict]] = [("kd", "kd", {})]
    for name in METHODS:
        if name == "kd":
            continue
        if name == "ensemble":
            specs.append(("ensemble (2 teachers)", name, {"teachers": 2}))
            specs.append(("ensemble (1 teacher twice)", name, {"teachers": "twice"}))
        elif name == "data-free":
            specs.append(("data-free (training step)", name, {"labels": False}))
        elif takes_teacher(name) or name in NO_TEACHER:
            specs.append((name, name, {}))
    specs.append((SHARED_TEACHER_LIST, SHARED_TEACHER_LIST, {}))
    if names is not None:
        specs = [s for s in specs if s[0] == "kd" or s[0] in names or s[1] in names]
    return specs  # kd first: the reference of every ratio


def skipped_methods() -> dict[str, str]:
    return {name: "needs target inputs (domain adaptation), not a distillation step"
            for name in METHODS if not takes_teacher(name) and name not in NO_TEACHER}


def trainer_row(name: str, spec: str, how: dict, teacher: nn.Module, student: nn.Module,
                data: TrainData, steps: int, epochs: int, seed: int, device: str) -> Row:
    """A Trainer for ``spec`` with its own copies of the networks (hooks stay per row)."""
    teacher = copy.deepcopy(teacher)
    if how.get("teachers") == 2:
        torch.manual_seed(seed + 1)
        second = copy.deepcopy(teacher)  # the same architecture, other weights
        for module in second.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
        given: nn.Module | list[nn.Module] = [teacher, second]
    elif how.get("teachers") == "twice":
        given = [teacher, teacher]
    else:
        given = teacher
    labels = how.get("labels", True)
    methods = build_methods(spec, given, {})
    names = [m.name for m in methods]  # as distill does: supervised beside them
    if labels and "supervised" not in names and not any(m.own_label_term for m in methods):
        methods.insert(0, build_methods("supervised")[0])
    if not labels:
        data = TrainData(data.x, None, data.num_classes)
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, steps_per_epoch=steps, seed=seed,
                      device=device, progress=False, optim=OPTIM)
    trainer = Trainer(copy.deepcopy(student), methods, data, cfg)
    bar = _NoBar()

    def run(epoch: int, steps: int) -> None:
        trainer.steps_per_epoch = steps  # at most the configured steps: progress stays <= 1
        trainer._train_epoch(epoch, bar)

    teachers = {}
    for role, net in trainer.objective.teachers.items():
        if all(net is not other for other in teachers.values()):
            teachers[role] = net
    return Row(name, [m.name for m in methods], run, teachers)


def bare_row(teacher: nn.Module, student: nn.Module, data: TrainData, seed: int,
             device: torch.device) -> Row:
    """``kd``'s arithmetic by hand: teacher under no_grad in eval mode, student, T^2 KL."""
    teacher = copy.deepcopy(teacher).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(student).to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=OPTIM.lr, momentum=OPTIM.momentum)
    x, y = data.x, data.y
    assert y is not None
    def run(epoch: int, steps: int) -> None:
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(x), generator=gen)[: steps * BATCH].view(steps, BATCH)
        for idx in order:
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            bare_kd_step(teacher, student, opt, xb, yb, TEMPERATURE, ALPHA)

    return Row("bare", ["hand-written kd"], run, {"teacher": teacher},
               note="plain PyTorch: the same arithmetic as kd, no transferkit")


def warm_up(row: Row, steps: int, device: torch.device) -> None:
    """Epoch 0 (allocator, OpenMP pool, lazy init) with a forward hook on each teacher:
    teacher calls per step, by role, and the seconds per step (to size the rounds)."""
    counts = dict.fromkeys(row.teachers, 0)
    handles = []
    for role, net in row.teachers.items():
        def hook(*_: object, role: str = role) -> None:
            counts[role] += 1
        handles.append(net.register_forward_hook(hook))
    try:
        synchronize(device)
        start = time.perf_counter()
        row.run(0, steps)
        synchronize(device)
        row.warmup_seconds_per_step = (time.perf_counter() - start) / steps
    finally:
        for handle in handles:
            handle.remove()
    row.teacher_calls = {role: n / steps for role, n in counts.items()}


def synthesis_cost(teacher: nn.Module, n: int, synth_steps: int, seed: int,
                   device: torch.device) -> dict:
    """Seconds per image of data-free's DeepInversion synthesis (one batch of ``n``)."""
    (method,) = build_methods("data-free", copy.deepcopy(teacher).to(device),
                              {"n_synthetic": n, "synth_batch": n, "synth_steps": synth_steps})
    synchronize(device)
    start = time.perf_counter()
    x, _ = method.transfer_set(SHAPE, CLASSES, seed)
    synchronize(device)
    seconds = time.perf_counter() - start
    default_steps = build_methods("data-free", teacher, {})[0].synth_steps
    per_image_step = seconds / (n * max(synth_steps, 1))
    return {
        "images": int(x.shape[0]), "synth_steps": synth_steps, "synth_batch": n,
        "seconds": round(seconds, 3),
        "seconds_per_image": round(seconds / n, 4),
        "ms_per_image_per_synth_step": round(1000 * per_image_step, 4),
        "seconds_per_image_at_default_steps": round(per_image_step * default_steps, 3),
        "default_synth_steps": default_steps,
        "note": "timed once, outside the interleaved rounds; per-image cost depends on the "
                "synthesis batch (default 256)",
    }


def timed_rounds(rows: list[Row], rounds: int, seed: int, device: torch.device) -> float:
    """``rounds`` rounds, each running every row for its ``steps`` in a new random order (no
    row always sits next to the reference, or first after a slow one); returns seconds."""
    timing_start = time.perf_counter()
    shuffle = random.Random(seed)
    for r in range(1, rounds + 1):
        order = list(rows)
        shuffle.shuffle(order)
        for row in order:
            synchronize(device)
            start = time.perf_counter()
            row.run(r, row.steps)
            synchronize(device)
            row.times.append((time.perf_counter() - start) / row.steps)
        print(f"round {r}/{rounds} (ms/step): " + ", ".join(
            f"{row.name} {1000 * row.times[-1]:.0f}" for row in order), flush=True)
    return time.perf_counter() - timing_start


def ratios(rows: list[Row], reference: Row) -> dict[str, dict]:
    """Per row: median ms/step and its ratio to ``reference`` (median, paired, fastest)."""
    ref = reference.name
    ref_median = statistics.median(reference.times)
    results = {}
    for row in rows:
        median = statistics.median(row.times)
        paired = [t / k for t, k in zip(row.times, reference.times, strict=True)]
        results[row.name] = {
            "methods": row.methods,
            "ms_per_step": round(1000 * median, 2),
            "ms_per_step_min": round(1000 * min(row.times), 2),
            f"ratio_to_{ref}": round(median / ref_median, 3),
            f"ratio_to_{ref}_paired_median": round(statistics.median(paired), 3),
            f"ratio_to_{ref}_min": round(min(row.times) / min(reference.times), 3),
            "steps_per_round": row.steps,
            "warmup_ms_per_step": round(1000 * row.warmup_seconds_per_step, 2),
            "teacher_calls_per_step": row.teacher_calls,
            **({"note": row.note} if row.note else {}),
        }
    return results


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--steps", type=int, default=2, help="steps per row per round")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--warmup-steps", type=int, default=2,
                   help="untimed steps per row first (teacher calls are counted there)")
    p.add_argument("--slow-factor", type=float, default=4.0,
                   help="rows whose warm-up step is this many times kd's time 1 step a round")
    p.add_argument("--rows", type=int, default=60_000,
                   help="training rows (random tensors; sizes crd's memory bank)")
    p.add_argument("--only", nargs="+", help="time only these rows or methods (kd always)")
    p.add_argument("--teacher-width", type=float, default=0.25)
    p.add_argument("--student-width", type=float, default=0.125)
    p.add_argument("--synth-images", type=int, default=16)
    p.add_argument("--synth-steps", type=int, default=10)
    p.add_argument("--note", default="", help="free text recorded with the result")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        args.only = [n for part in args.only for n in part.split(",")]
        for name in args.only:
            if not name.startswith(("bare", "ensemble", "data-free")):
                method_names(name)  # an unknown name lists the valid ones
    device = local_device(args.device)
    load_before = os.getloadavg()
    torch.manual_seed(args.seed)
    x = torch.randn(args.rows, *SHAPE)
    y = torch.randint(0, CLASSES, (args.rows,))
    data = TrainData(x, y, CLASSES)
    teacher = build_model(TEACHER, SHAPE, CLASSES, width=args.teacher_width)
    student = build_model(STUDENT, SHAPE, CLASSES, width=args.student_width)
    epochs = args.rounds + 1  # warm-up epoch 0, then one epoch per round
    most = max(args.steps, args.warmup_steps)

    setup_start = time.perf_counter()
    rows: list[Row] = [bare_row(teacher, student, data, args.seed, device)]
    errors: dict[str, str] = {}
    for name, spec, how in row_specs(args.only):
        try:
            rows.append(trainer_row(name, spec, how, teacher, student, data, most, epochs,
                                    args.seed, str(device)))
        except Exception as exc:  # record it, time the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: setup failed: {errors[name]}", flush=True)
    setup_seconds = time.perf_counter() - setup_start

    for row in rows:
        warm_up(row, args.warmup_steps, device)
        print(f"warm-up {row.name}: {1000 * row.warmup_seconds_per_step:.0f} ms/step, teacher "
              f"calls/step {row.teacher_calls}", flush=True)
    kd = next(row for row in rows if row.name == "kd")
    for row in rows:  # a row far slower than kd (crd on a CPU) runs 1 step a round
        slow = row.warmup_seconds_per_step > args.slow_factor * kd.warmup_seconds_per_step
        row.steps = 1 if slow else args.steps

    timing_seconds = timed_rounds(rows, args.rounds, args.seed, device)
    kd_median = statistics.median(kd.times)
    results = ratios(rows, kd)
    bare = results["bare"]
    kd_vs_bare = {
        "ratio_median": round(kd_median / statistics.median(rows[0].times), 4),
        "ratio_paired_median": round(statistics.median(
            k / b for k, b in zip(kd.times, rows[0].times, strict=True)), 4),
        "ratio_min": round(min(kd.times) / min(rows[0].times), 4),
        "ms_per_step": {"kd": results["kd"]["ms_per_step"], "bare": bare["ms_per_step"]},
    }
    print(f"kd / bare: {kd_vs_bare}", flush=True)
    shared = results.get(SHARED_TEACHER_LIST)
    teacher_check = None
    if shared is not None:
        calls = shared["teacher_calls_per_step"]
        teacher_check = {"methods": SHARED_TEACHER_LIST, "calls_per_step": calls,
                         "one_per_step": calls == {"teacher": 1.0},
                         "counted": f"forward hook on the teacher over the {args.warmup_steps} "
                                    "warm-up steps, added after the Trainer's probe"}
        print(f"teacher calls per step ({SHARED_TEACHER_LIST}): {calls}", flush=True)

    synthesis = None
    if args.only is None or "data-free" in args.only or any(
            n.startswith("data-free") for n in args.only):
        synthesis = synthesis_cost(teacher, args.synth_images, args.synth_steps, args.seed,
                                   device)
        print(f"data-free synthesis: {synthesis}", flush=True)

    for row in rows:
        print(f"{row.name:28s} {results[row.name]['ms_per_step']:9.1f} ms/step  "
              f"x{results[row.name]['ratio_to_kd']:.3f} of kd")
    write_result("speed_methods", {
        "settings": vars(args) | {
            "batch_size": BATCH, "input_shape": list(SHAPE), "classes": CLASSES,
            "teacher": {"model": TEACHER, "width": args.teacher_width,
                        "parameters": count_parameters(teacher)},
            "student": {"model": STUDENT, "width": args.student_width,
                        "parameters": count_parameters(student)},
            "optimizer": "sgd lr 0.01 momentum 0.9", "kd": {"temperature": TEMPERATURE,
                                                           "alpha": ALPHA},
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "resolved_device": str(device),
            "inputs": "random normal tensors (no dataset), random labels",
        },
        "protocol": (
            "one Trainer per row built before timing (probe, connectors and crd's memory are "
            f"setup); {args.warmup_steps} untimed warm-up steps per row, which also count "
            f"teacher forward calls; then {args.rounds} interleaved rounds of {args.steps} steps "
            f"per row (1 step for a row whose warm-up step took over {args.slow_factor:g}x "
            "kd's), in a new random order every round. ms_per_step is the median over rounds; "
            "ratio_to_kd is that median over kd's; ratio_to_kd_paired_median is the median of "
            "same-round ratios; ratio_to_kd_min is the fastest round's over kd's fastest (the "
            "least disturbed by other processes). "
            "Rows without their own hard-label term train with supervised beside them, as "
            "distill does."
        ),
        "machine": {"note": args.note, "cpu_count": os.cpu_count(),
                    "load_average_1_5_15min": {"start": [round(v, 2) for v in load_before],
                                               "end": [round(v, 2) for v in os.getloadavg()]}},
        "rows": results,
        "kd_vs_bare": kd_vs_bare,
        "teacher_calls_check": teacher_check,
        "data_free_synthesis": synthesis,
        "skipped": skipped_methods(),
        "errors": errors,
        "seconds": {"setup": round(setup_seconds, 1), "timed_rounds": round(timing_seconds, 1)},
    }, args.out)


if __name__ == "__main__":
    main()
