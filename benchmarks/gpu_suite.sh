#!/usr/bin/env bash
# Benchmarks a, b and the DANN grid on one GPU, three processes side by side.
# On the lent GPU machine (see docs/benchmarks.md), from the repo root:
#   TRANSFERKIT_DATA_DIR=<datasets> OUT=<results folder> bash benchmarks/gpu_suite.sh
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
cd benchmarks
python3 hinton_mnist.py --device cuda --out "$out/hinton_mnist.json" >"$out/hinton.log" 2>&1 &
python3 seed_mnist.py --device cuda --out "$out/seed_mnist.json" >"$out/seed.log" 2>&1 &
python3 dann_digits.py --device cuda --steps 2000 5000 --trade-off 1.0 0.3 \
    --out "$out/dann_digits_gpu_grid.json" >"$out/dann.log" 2>&1 &
wait
tail -n 5 "$out"/*.log
