"""Every adaptation method on the digits pairs, 3 seeds: last epoch, each validator's choice
and the oracle (reported only), plus the source-free methods from the source-only model.

One budget for every row, that of section c's DANN run cut to ``--steps`` iterations: LeNet
with a 256-d fc-BatchNorm-ReLU bottleneck, batch 128 source + 128 target, SGD lr 0.03
momentum 0.9, weight decay 1e-3, DANN's inverse schedule, ``--evals`` evaluations along the
run. 10% of the source training set is held out for the validators (the same rows for every
seed). Source-free rows (shot, tent, adabn) start from the seed's source-only model and see
no source data, for ``--free-steps`` iterations. Rows are appended to
``benchmarks/results/adapt_table.jsonl`` as they finish (a killed grid keeps them; a rerun
skips finished (pair, method, seed)), so the grid can be split across sessions by seed or
method. ``--jobs N`` trains N rows at once, each in its own process on
``--threads-per-job`` threads (one thread per small LeNet run uses a core best).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/adapt_table.py --seeds 0,1,2 --jobs 2 --device cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import transferkit as tk
from _common import RESULTS, append, done, environment, parser
from _parallel import Job, run_jobs
from transferkit.data import load_pair

PAIRS = ["mnist->usps", "usps->mnist", "mnist->mnist_m"]
# table name -> (method list, options); source-only is adapt's supervised term alone
METHODS: dict[str, tuple[str, dict]] = {
    "source-only": ("supervised", {}),
    "dann": ("dann", {}),
    "dan": ("dan", {}),
    "jan": ("jan", {}),
    "coral": ("coral", {}),
    "cdan": ("cdan", {}),
    "cdan+e": ("cdan+e", {}),
    "mdd": ("mdd", {}),
    "mcd": ("mcd", {}),
    "adda": ("adda", {}),
    "afn": ("afn", {}),
    "dann+bsp": ("dann+bsp", {}),
    "mcc": ("mcc", {}),
    "bnm": ("bnm", {}),
    "pseudo_label": ("pseudo_label", {"warmup": 0.2}),
    "fixmatch": ("fixmatch", {}),
}
# Rows whose paper changes the network: MCD's two classifiers have three layers (Saito et al.
# 2018: fc-BN-ReLU twice, then fc), so its head is 256-256-10 on the shared bottleneck.
MODEL_OPTIONS: dict[str, dict] = {"mcd": {"head_hidden": [256, 256]}}
SOURCE_FREE: dict[str, tuple[str, dict]] = {
    "shot": ("shot", {"beta": 0.1}),  # the paper's digits beta
    "tent": ("tent", {}),
    "adabn": ("adabn", {}),
}
# Published target accuracy (%) for the same pairs, where a paper or TLlib gives one.
PUBLISHED = {
    "mnist->usps": {"source-only": 82.1, "dann": 91.7, "cdan": 93.9, "cdan+e": 95.6,
                    "mcd": 94.2, "adda": 89.4, "shot": 97.9},
    "usps->mnist": {"source-only": 74.6, "dann": 95.2, "cdan": 96.9, "cdan+e": 98.0,
                    "mcd": 94.1, "adda": 90.1, "shot": 98.0},
    "mnist->mnist_m": {"source-only": 52.3, "dann": 76.7},
}
RESULT = RESULTS / "adapt_table.jsonl"


def record(pair: str, name: str, seed: int, result, seconds: float, steps: int,
           target_labels: torch.Tensor) -> dict:
    s = result.summary
    epoch_seconds = [r["seconds"] for r in result.history]
    last = result.history[-1].get("eval", {}).get("target_test", {}) if result.history else {}
    return {
        "pair": pair, "method": name, "seed": seed, "methods": s.get("methods"),
        "target_test_last": s["final"]["target_test"],
        "source_test_last": s["final"].get("source_test"),
        "choices": s.get("choices", {}), "steps": steps,
        "seconds_per_step": sum(epoch_seconds) / max(steps, 1),
        "seconds": round(seconds, 1), "environment": environment(),
        "memory_format": s.get("memory_format"),  # absent from rows before the setting
        **({"warning": s["warning"]} if s.get("warning") else {}),  # e.g. collapsed
        # the largest predicted class's share of the target test set, and the largest true
        # class's: predictions concentrating on one class show as the first far above the second
        "target_top_class_share": last.get("top_class_share"),
        "target_largest_class_share": largest_class_share(target_labels),
        "threads": torch.get_num_threads(),
    }


def largest_class_share(labels: torch.Tensor) -> float:
    """The largest class's share of ``labels``: 0.1 for ten balanced classes."""
    return float(torch.bincount(labels).max()) / max(len(labels), 1)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--methods", help="comma-separated table names (default: all)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--free-steps", type=int, default=1000)
    p.add_argument("--evals", type=int, default=8, help="evaluations (epochs) along a run")
    p.add_argument("--runs", default="runs/adapt_table", help="run directories")
    p.add_argument("--jobs", type=_at_least_one, default=1,
                   help="rows trained at once, each in its own process (source-free rows wait "
                   "for their source-only model)")
    p.add_argument("--threads-per-job", type=_at_least_one, default=1)
    args = p.parse_args()
    out = Path(args.out) if args.out else RESULT
    names = args.methods.split(",") if args.methods else [*METHODS, *SOURCE_FREE]
    unknown = [n for n in names if n not in METHODS and n not in SOURCE_FREE]
    if unknown:
        raise SystemExit(f"unknown table rows {unknown}; valid: {[*METHODS, *SOURCE_FREE]}")
    # A run whose predictions collapse is a result of the table (flagged), not a stop.
    common = {"device": args.device, "batch_size": 128, "optimizer": "sgd", "lr": 0.03,
              "momentum": 0.9, "weight_decay": 1e-3, "schedule": "inverse", "progress": False,
              "check_divergence": False}
    model = {"bottleneck": 256}
    runs = Path(args.runs)
    seen = done(out, "pair", "method", "seed")
    if args.jobs > 1:
        schedule(args, names, seen)
        return
    for pair_name in args.pairs.split(","):
        pair = load_pair(pair_name, args.data_dir)
        for seed in (int(s) for s in args.seeds.split(",")):
            source_only = runs / pair_name.replace("->", "2") / f"seed{seed}" / "source-only"
            for name in names:
                if (pair_name, name, seed) in seen:
                    continue
                start = time.perf_counter()
                tag = name.replace("+", "_")
                if name in SOURCE_FREE:
                    if not (source_only / "model.pt").is_file():
                        print(f"skip {pair_name} {name} seed {seed}: no source-only model yet",
                              flush=True)
                        continue
                    method, options = SOURCE_FREE[name]
                    steps = args.free_steps
                    # pass only the target side: the source data is not even loaded
                    result = tk.adapt(source_only, pair.target, method=method,
                                      method_options=options, seed=seed, epochs=args.evals,
                                      steps_per_epoch=steps // args.evals,
                                      out=source_only.parent / tag, resume=True,
                                      **{**common, "lr": 0.003})
                else:
                    method, options = METHODS[name]
                    steps = args.steps
                    result = tk.adapt("lenet", pair, method=method, method_options=options,
                                      model_options={**model, **MODEL_OPTIONS.get(name, {})},
                                      seed=seed, epochs=args.evals,
                                      steps_per_epoch=steps // args.evals,
                                      out=source_only.parent / tag, resume=True, **common)
                row = record(pair_name, name, seed, result, time.perf_counter() - start, steps,
                             pair.target.test.y)
                append(out, row)
                seen.add((pair_name, name, seed))
                picks = {k: round(v["target_test"], 4) for k, v in row["choices"].items()}
                print(f"{pair_name} seed {seed} {name}: last {row['target_test_last']:.4f} "
                      f"{picks}", flush=True)


def _at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1 (else a one-line usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a whole number >= 1, got {text!r}")
    return value


def schedule(args, names: list[str], seen: set[tuple]) -> None:
    """The missing rows as ``--jobs`` processes: source-only rows first (the source-free rows
    of the same pair and seed wait for them), then the slowest method, then table order."""
    worker = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps),
              "--free-steps", str(args.free_steps), "--evals", str(args.evals),
              "--runs", args.runs, *(["--out", args.out] if args.out else []),
              *(["--data-dir", args.data_dir] if args.data_dir else [])]
    first = dict.fromkeys(["source-only", "mcd", *METHODS, *SOURCE_FREE])  # first place kept
    order = {name: i for i, name in enumerate(first)}
    missing = [(pair_name, int(seed), name) for pair_name in args.pairs.split(",")
               for seed in args.seeds.split(",") for name in names
               if (pair_name, name, int(seed)) not in seen]
    jobs = []
    for pair_name, seed, name in sorted(missing, key=lambda row: order[row[2]]):
        after = f"{pair_name} seed {seed} source-only" if name in SOURCE_FREE else None
        jobs.append(Job(f"{pair_name} seed {seed} {name}",
                        [*worker, "--pairs", pair_name, "--seeds", str(seed),
                         "--methods", name], after))
    failed = run_jobs(jobs, args.jobs, args.threads_per_job)
    if failed:
        raise SystemExit(f"{len(failed)} row(s) did not finish: {', '.join(failed)}")


if __name__ == "__main__":
    main()
