"""DANN vs source-only with LeNet on MNIST->USPS and USPS->MNIST.

Target test accuracy at the last iteration: target labels choose nothing (no early stopping,
no model selection). Published (Transfer-Learning-Library, 50k iterations): source-only
82.1 / 74.6, DANN 91.7 / 95.2. Several values of --lr / --trade-off / --steps run a grid.

    python benchmarks/dann_digits.py --data-dir ../shared/datasets --steps 3000
"""

from __future__ import annotations

import itertools
import time

import transferkit as tk
from _common import parser, run_dir, write_result
from transferkit.data import load_pair

PUBLISHED = {"mnist->usps": {"source-only": 82.1, "dann": 91.7},
             "usps->mnist": {"source-only": 74.6, "dann": 95.2}}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=["mnist->usps", "usps->mnist"])
    p.add_argument("--steps", type=int, nargs="+", default=[3000])
    p.add_argument("--lr", type=float, nargs="+", default=[0.01])
    p.add_argument("--trade-off", type=float, nargs="+", default=[1.0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=10, help="evaluation points over the budget")
    p.add_argument("--skip-source-only", action="store_true")
    p.add_argument("--bottleneck", type=int, default=256,
                   help="LeNet feature bottleneck (fc-BN-ReLU) as in TLL's benchmark; 0 = none")
    p.add_argument("--warmup-steps", type=int, help="GRL warm-up length (default: whole run)")
    p.add_argument("--amp", nargs="+", choices=["off", "auto", "bf16"], default=["off"],
                   help="precisions to run (issue 9: bf16 within 0.5 points of fp32)")
    p.add_argument("--compile", choices=["off", "on", "graphs"], default="off")
    args = p.parse_args()
    rows = []
    for pair_name in args.pairs:
        pair = load_pair(pair_name, args.data_dir)
        for steps, lr, amp in itertools.product(args.steps, args.lr, args.amp):
            common = {"amp": amp, "compile": args.compile, "seed": args.seed,
                      "device": args.device, "batch_size": args.batch_size,
                      "epochs": args.epochs, "steps_per_epoch": steps // args.epochs,
                      "optimizer": args.optimizer, "lr": lr, "momentum": 0.9,
                      "weight_decay": args.weight_decay,
                      "schedule": "inverse", "progress": False}
            model = {"bottleneck": args.bottleneck}
            runs = [] if args.skip_source_only else [("source-only", None)]
            runs += [("dann", t) for t in args.trade_off]
            for method, trade_off in runs:
                start = time.perf_counter()
                name = (f"{pair_name.replace('->', '2')}-{method}-s{steps}-lr{lr}-t{trade_off}"
                        + ("" if amp == "off" else f"-{amp}"))
                if method == "source-only":
                    result = tk.train("lenet", pair, model_options=model,
                                      out=run_dir(args.run_dir, name), **common)
                else:
                    options = {"trade_off": trade_off, "warmup_steps": args.warmup_steps}
                    result = tk.adapt("lenet", pair, method="dann", method_options=options,
                                      model_options=model,
                                      out=run_dir(args.run_dir, name), **common)
                curve = [round(r["eval"]["target_test"]["accuracy"], 4)
                         for r in result.history if "eval" in r]
                row = {"pair": pair_name, "method": method, "steps": steps, "lr": lr,
                       "trade_off": trade_off, "amp": amp,
                       "precision": result.summary["precision"]["used"],
                       "target_test_last": result.summary["final"]["target_test"],
                       "source_test_last": result.summary["final"]["source_test"],
                       "target_curve": curve, "seconds": round(time.perf_counter() - start, 1)}
                rows.append(row)
                print(row, flush=True)
    write_result("dann_digits", {"settings": vars(args), "rows": rows,
                                 "published": PUBLISHED,
                                 "selection": "last iteration; target labels only score"},
                 args.out)


if __name__ == "__main__":
    main()
