"""Training-step speed: transferkit's loop vs the same arithmetic in a bare PyTorch loop.

Both sides run in this one process, alternating in blocks of ``--steps`` steps, with the same
threads and ``OMP_WAIT_POLICY=PASSIVE``; the ratio of the median seconds per step is reported
(1.00 = no overhead). ``kd``: Hinton's MNIST MLPs (1200-1200 teacher, 800-800 student);
``dann``: LeNet on 1x28x28 source + target batches with a 1024-1024 discriminator.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/speed.py --threads 2
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from _common import bare_kd_step, parser, write_result
from transferkit.config import OptimConfig, TrainConfig
from transferkit.engine.loop import TrainData, Trainer
from transferkit.losses import DomainDiscriminator
from transferkit.methods import DANN, SoftTargetDistillation
from transferkit.methods.supervised import Supervised
from transferkit.models import build_model

BATCH = 128
SHAPE = (1, 28, 28)


class Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def bare_kd(teacher, student, x, y, steps: int, seed: int, temperature=4.0, alpha=0.9):
    """The hand-written loop: one closure that runs ``steps`` KD steps."""
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    def run(epoch: int) -> None:
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(x), generator=gen)[: steps * BATCH].view(steps, BATCH)
        for idx in order:
            bare_kd_step(teacher, student, opt, x[idx], y[idx], temperature, alpha)

    return run


def bare_dann(model, disc, x, y, xt, steps: int, seed: int, total: int):
    opt = torch.optim.SGD([*model.parameters(), *disc.parameters()], lr=0.01, momentum=0.9,
                          weight_decay=1e-3)
    counter = [0]

    def run(epoch: int) -> None:
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(x), generator=gen)[: steps * BATCH].view(steps, BATCH)
        target_order = torch.randperm(len(xt), generator=gen)[: steps * BATCH].view(steps, BATCH)
        for idx, tidx in zip(order, target_order, strict=True):
            step = counter[0]
            for group in opt.param_groups:
                group["lr"] = 0.01 * (1 + 0.001 * step) ** -0.75
            features = model.features(torch.cat([x[idx], xt[tidx]]))
            logits = model.head(features)
            ce = F.cross_entropy(logits[:BATCH], y[idx])
            coeff = 2.0 / (1.0 + math.exp(-10.0 * step / total)) - 1.0
            d = disc(Reverse.apply(features, coeff)).flatten()
            domain = 0.5 * (
                F.binary_cross_entropy_with_logits(d[:BATCH], torch.ones(BATCH))
                + F.binary_cross_entropy_with_logits(d[BATCH:], torch.zeros(BATCH))
            )
            loss = ce + domain
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss.item()
            opt.step()
            counter[0] += 1

    return run


def transferkit_run(model, methods, data: TrainData, steps: int, seed: int, optim: OptimConfig):
    """One epoch of ``steps`` steps through transferkit's Trainer (built once, reused)."""
    # the bare loop's layout: this compares the loops, section v compares the layouts
    cfg = TrainConfig(epochs=10_000, batch_size=BATCH, steps_per_epoch=steps, seed=seed,
                      device="cpu", progress=False, optim=optim, memory_format="contiguous")
    trainer = Trainer(model, methods, data, cfg)
    bar = _NoBar()

    def run(epoch: int) -> None:
        trainer._train_epoch(epoch, bar)

    return run


class _NoBar:
    status = ""

    def start_epoch(self, *args: object) -> None: ...

    def due(self) -> bool:
        return False

    def update(self, *args: object) -> None: ...


def compare(name: str, ours, bare, steps: int, repeats: int,
            names: tuple[str, str] = ("transferkit", "bare")) -> dict:
    """Alternate the two sides (ABBA order) and compare median seconds per step."""
    ours(0), bare(0)  # warm-up: allocator, OpenMP pool, lazy init
    first, second = names
    times: dict[str, list[float]] = {first: [], second: []}
    for r in range(1, repeats + 1):
        order = ((first, ours), (second, bare)) if r % 2 else ((second, bare), (first, ours))
        for side, fn in order:
            start = time.perf_counter()
            fn(r)
            times[side].append((time.perf_counter() - start) / steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"ms_per_step": {k: round(1000 * v, 3) for k, v in med.items()},
           "ratio_median": round(med[first] / med[second], 4),
           "ratio_min": round(min(times[first]) / min(times[second]), 4),
           "steps_per_block": steps, "blocks": repeats}
    print(name, row, flush=True)
    return row


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--methods", nargs="+", default=["kd", "dann"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n = args.steps * BATCH
    x, y = torch.randn(n, *SHAPE), torch.randint(0, 10, (n,))
    rows = {}
    if "kd" in args.methods:
        teacher = build_model("mlp", SHAPE, 10, widths=[1200, 1200], dropout=0.5).eval()
        student = build_model("mlp", SHAPE, 10, widths=[800, 800])
        ours = transferkit_run(copy.deepcopy(student),
                               [SoftTargetDistillation(teacher, temperature=4.0, alpha=0.9)],
                               TrainData(x, y, 10), args.steps, args.seed,
                               OptimConfig(lr=0.01, momentum=0.9))
        bare = bare_kd(teacher, copy.deepcopy(student), x, y, args.steps, args.seed)
        rows["kd"] = compare("kd", ours, bare, args.steps, args.repeats)
        cached = transferkit_run(copy.deepcopy(student),
                                 [SoftTargetDistillation(teacher, temperature=4.0, alpha=0.9,
                                                         cache_teacher=True)],
                                 TrainData(x, y, 10), args.steps, args.seed,
                                 OptimConfig(lr=0.01, momentum=0.9))
        rows["kd cached teacher vs live"] = compare(
            "kd cached teacher vs live", cached, ours, args.steps, args.repeats,
            names=("cached", "live"))
    if "dann" in args.methods:
        xt = torch.randn(n, *SHAPE)
        model = build_model("lenet", SHAPE, 10)
        dann = DANN()
        ours = transferkit_run(copy.deepcopy(model), [Supervised(), dann],
                               TrainData(x, y, 10, xt), args.steps, args.seed,
                               OptimConfig(lr=0.01, momentum=0.9, weight_decay=1e-3,
                                           schedule="inverse"))
        disc = DomainDiscriminator(model.feature_dim, hidden=1024)
        bare = bare_dann(copy.deepcopy(model), disc, x, y, xt, args.steps, args.seed,
                         total=args.steps * 10_000)
        rows["dann"] = compare("dann", ours, bare, args.steps, args.repeats)
    write_result("speed", {"settings": vars(args) | {"batch_size": BATCH,
                                                     "omp_wait_policy":
                                                         os.environ["OMP_WAIT_POLICY"]},
                           "rows": rows}, args.out)


if __name__ == "__main__":
    main()
