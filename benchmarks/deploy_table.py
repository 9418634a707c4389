"""The distilled students as deployable files: accuracy, size and CPU latency (issue 8, o).

For the teacher, the student alone and the distilled students of two existing benchmarks,
each written as ONNX (run by onnxruntime) and TorchScript, fp32 and int8 (dynamic
quantisation), with transferkit's own ``export``: test accuracy of the exported file (the
whole test split), parameters, file size, and latency per image at batch 1 (median, p95) and
at batch 256, all on 1 CPU thread.

* digits: the four distillation runs of ``transferkit demo`` (teacher ``small-cnn``, student
  ``mlp`` alone, ``+ l2``, ``+ kd``): ``--demo-runs DIR`` reuses them, otherwise
  ``transferkit.demo.run_demo`` trains them into ``<run-dir>/demo`` (a few minutes; reused on
  the next call).
* Fashion-MNIST: ``benchmarks/distill_table.py``'s teacher (``<distill-runs>/teacher``) and
  students (``<distill-runs>/seed<S>/<method>``). That script keeps no run of its student
  alone (``"student alone"``, trained without a run directory), so it is trained here with the
  recorded settings of the first distilled run and the training subset recorded in
  ``results/distill_table.jsonl``, into ``<run-dir>/fashion_mnist/student-alone``. Without
  ``<distill-runs>`` the table has the digits rows only and says so.

Latency is timed in one process after every file is exported: ``--rounds`` rounds, each
visiting every file in a fresh random order (``--calls`` batch-1 calls, then one batch of
256). Each file's ratio is the median over rounds of its time divided by its own group
teacher's fp32 ONNX time in the same round: the machine's load moves both alike, so the
ratios compare across runs where the milliseconds do not.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/deploy_table.py \
        [--demo-runs DIR] [--distill-runs runs/distill_table] [--methods kd,dkd,dist]
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

import transferkit as tk
from _common import RESULTS, limit_train, parser, read_rows, write_result
from transferkit import api
from transferkit.data.inputs import fit_splits
from transferkit.deploy import SUFFIX, _runner

DEMO_RUNS = {  # run_demo's sub-runs: directory -> role
    "teacher": "teacher", "student-alone": "student alone", "student-l2": "distilled",
    "student-kd": "distilled",
}
PRECISIONS = {"fp32": None, "int8": "int8"}
THREADS = 1


@dataclass
class Entry:
    """One trained model: its run directory, group (dataset), role and distillation method."""

    group: str
    name: str  # short file stem, unique in its group
    run: Path
    role: str
    method: str


def config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def finished(run: Path) -> bool:
    return all((run / n).is_file() for n in ("config.yaml", "model.pt", "summary.json"))


def model_label(run: Path) -> str:
    model = config(run)["model"]
    options = ", ".join(f"{k} {v}" for k, v in (model.get("options") or {}).items())
    return f"{model['name']} ({options})" if options else model["name"]


def demo_entries(demo: Path) -> tuple[list[Entry], list[str]]:
    entries, missing = [], []
    for name, role in DEMO_RUNS.items():
        run = demo / name
        if not finished(run):
            missing.append(str(run))
            continue
        method = config(run)["method"] if role == "distilled" else ""
        entries.append(Entry("digits", name, run, role, method))
    return entries, missing


def train_fashion_alone(distilled: Path, out: Path, data_dir: str | None) -> dict:
    """distill_table.py's "student alone" (trained there without a run directory), with the
    settings recorded by ``distilled`` (a student run of the same grid) and its subset."""
    record = config(distilled)
    seed = record["train"]["seed"]
    rows = read_rows(RESULTS / "distill_table.jsonl")
    grid = next((r for r in rows if r["method"] == "student alone" and r["seed"] == seed), {})
    train_limit = grid.get("train_limit", 20000)  # distill_table.py's default
    if not finished(out):
        data = limit_train(api.resolve_data(record["data"], data_dir), train_limit)
        settings = {**record["train"], "device": "cpu", "progress": False}
        tk.train(record["model"]["name"], data, model_options=record["model"]["options"],
                 out=out, resume=True, **settings)
    return {"run": str(out), "settings_from": str(distilled), "train_limit": train_limit,
            "accuracy_here": json.loads((out / "summary.json").read_text())["final"]["test"],
            "accuracy_in_distill_table": grid.get("accuracy")}


def distill_entries(root: Path, seed: int, methods: list[str], run_dir: Path,
                    data_dir: str | None) -> tuple[list[Entry], list[str], dict | None]:
    students = [(m, root / f"seed{seed}" / m) for m in methods]
    present = [(m, run) for m, run in students if finished(run)]
    missing = [str(run) for _, run in students if not finished(run)]
    if not finished(root / "teacher") or not present:
        return [], [*missing, str(root / "teacher")], None
    group = config(root / "teacher")["data"]
    alone_run = run_dir / group / "student-alone"
    alone = train_fashion_alone(present[0][1], alone_run, data_dir)
    entries = [Entry(group, "teacher", root / "teacher", "teacher", ""),
               Entry(group, "student-alone", alone_run, "student alone", "")]
    entries += [Entry(group, f"student-{m}", run, "distilled", config(run)["method"])
                for m, run in present]
    return entries, missing, alone


def test_inputs(run: Path, data_dir: str | None) -> torch.Tensor:
    """The test split in the model's input convention, as ``api.export`` feeds it."""
    model = api.load_model(run)
    data = api.resolve_data(config(run)["data"], data_dir)
    splits, _ = fit_splits(model, data, {"test": data.test}, f"model {run}")
    return splits["test"].x.float()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_all(runners: dict, inputs: dict, reference: dict, rounds: int, calls: int,
             seed: int) -> dict:
    """Interleaved timing: per round, each file in a random order; ratios to the reference
    (the group's teacher fp32 ONNX) within each round, then the median over rounds."""
    b1: dict = {k: [] for k in runners}
    b1_round: dict = {k: [] for k in runners}
    b256: dict = {k: [] for k in runners}
    order = list(runners)
    rng = random.Random(seed)
    for key in order:  # warm-up: allocation, lazy initialisation
        x = inputs[key[0]]
        runners[key](x[:1])
        runners[key](x[:256])
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            x = inputs[key[0]]
            times = []
            for i in range(calls):
                row = x[i % len(x):i % len(x) + 1]
                start = time.perf_counter()
                runners[key](row)
                times.append(time.perf_counter() - start)
            b1[key] += times
            b1_round[key].append(statistics.median(times))
            batch = x[:256]
            start = time.perf_counter()
            runners[key](batch)
            b256[key].append((time.perf_counter() - start) / len(batch))
    out = {}
    for key in runners:
        ref = reference[key[0]]
        out[key] = {
            "b1_median_ms": 1000 * statistics.median(b1[key]),
            "b1_p95_ms": 1000 * pct(b1[key], 0.95),
            "b256_per_image_ms": 1000 * statistics.median(b256[key]),
            "ratio_b1": statistics.median(a / b for a, b in zip(b1_round[key], b1_round[ref],
                                                                 strict=True)),
            "ratio_b256": statistics.median(a / b for a, b in zip(b256[key], b256[ref],
                                                                   strict=True)),
            "b1_calls": len(b1[key]), "rounds": rounds,
        }
    return out


def measure(entries: list[Entry], files: Path, formats: list[str], rounds: int, calls: int,
            data_dir: str | None, seed: int = 0) -> list[dict]:
    """Export every entry in every format and precision, then time them all interleaved."""
    torch.set_num_threads(THREADS)
    rows, runners, inputs = [], {}, {}
    for entry in entries:
        if entry.group not in inputs:
            inputs[entry.group] = test_inputs(entry.run, data_dir)
        label = model_label(entry.run)
        for fmt in formats:
            for precision, quantize in PRECISIONS.items():
                tag = ".int8" if quantize else ""
                path = files / entry.group / f"{entry.name}{tag}{SUFFIX[fmt]}"
                report = api.export(entry.run, fmt, quantize=quantize, data_dir=data_dir,
                                    out=path, rows=len(inputs[entry.group]), threads=THREADS)
                key = (entry.group, entry.name, fmt, precision)
                runners[key] = _runner(fmt, path.read_bytes(), THREADS)
                rows.append({
                    "group": entry.group, "model": label, "role": entry.role,
                    "method": entry.method, "run": str(entry.run), "format": fmt,
                    "precision": precision, "file": str(path), "bytes": report["bytes"],
                    "parameters": report["parameters"], "accuracy": report["accuracy"],
                    "pytorch_accuracy": report["pytorch_accuracy"],
                    "top1_agreement": report["top1_agreement"],
                    "max_abs_diff": report["max_abs_diff"],
                    "test_rows": report["rows_checked"], "_key": key,
                })
                print(f"{entry.group} {entry.name} {fmt} {precision}: accuracy "
                      f"{report['accuracy']:.4f}, {report['bytes']:,} bytes", flush=True)
    reference_fmt = "onnx" if "onnx" in formats else formats[0]
    reference = {key[0]: (key[0], "teacher", reference_fmt, "fp32") for key in runners}
    timing = time_all(runners, inputs, reference, rounds, calls, seed)
    for row in rows:
        row.update(timing[row.pop("_key")])
    return rows


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(run_dir="runs/deploy_table")
    p.add_argument("--demo-runs", help="a transferkit demo run directory (default: train one)")
    p.add_argument("--distill-runs", default="runs/distill_table",
                   help="benchmarks/distill_table.py's run directories")
    p.add_argument("--distill-seed", type=int, default=0)
    p.add_argument("--methods", default="kd,dkd,dist", help="distill_table students to include")
    p.add_argument("--formats", default="onnx,torchscript")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=20, help="batch-1 calls per file per round")
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    run_dir = Path(args.run_dir)
    formats = args.formats.split(",")
    if args.demo_runs:
        demo = Path(args.demo_runs)
    else:
        demo = run_dir / "demo"
        if not all(finished(demo / name) for name in DEMO_RUNS):
            from transferkit.demo import run_demo

            run_demo(out=str(demo), seed=args.seed)
    entries, missing = demo_entries(demo)
    if not entries or entries[0].role != "teacher":
        raise SystemExit(f"no finished teacher run in {demo}")
    groups = {"digits": {"runs": str(demo), "source": "transferkit demo (run_demo)"}}
    distill_root = Path(args.distill_runs)
    if distill_root.is_dir():
        more, absent, alone = distill_entries(distill_root, args.distill_seed,
                                              args.methods.split(","), run_dir, args.data_dir)
        missing += absent
        if more:
            entries += more
            groups[more[0].group] = {"runs": str(distill_root), "seed": args.distill_seed,
                                     "source": "benchmarks/distill_table.py",
                                     "student_alone": alone}
    else:
        groups["distill_table"] = {"absent": f"{distill_root} not found: digits rows only"}
    rows = measure(entries, run_dir / "files", formats, args.rounds, args.calls, args.data_dir,
                   args.seed)
    payload = {
        "rows": rows, "groups": groups, "missing_runs": missing,
        "settings": {"formats": formats, "rounds": args.rounds, "calls": args.calls,
                     "threads": THREADS, "reference": "the group's teacher, fp32 ONNX"
                     if "onnx" in formats else f"the group's teacher, fp32 {formats[0]}"},
        "machine": {"cpu_count": os.cpu_count(), "load_average_start": list(load_start),
                    "load_average_end": list(os.getloadavg())},
    }
    write_result("deploy_table", payload, args.out)


if __name__ == "__main__":
    main()
