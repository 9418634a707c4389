#!/usr/bin/env bash
# Issue 7's digits grid (section j) on one GPU: the MNIST<->USPS rows not yet in
# benchmarks/results/adapt_table.jsonl, one process per row. MNIST-M (156 MB) does not fit what travels to a
# lent GPU; its rows run on the CPU. adapt_table.py --jobs runs the rows as parallel
# processes, source-free rows after their source-only model. From the repo root:
#   TRANSFERKIT_DATA_DIR=<folder with mnist/ and usps/> OUT=<results folder> \
#       bash benchmarks/gpu_issue7.sh
# Rows are appended to $OUT/adapt_table.jsonl (a copy of the repo's file first, so finished
# rows are skipped); append the new lines to the repo's file afterwards.
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
[ "$out/adapt_table.jsonl" -ef benchmarks/results/adapt_table.jsonl ] || \
    cp benchmarks/results/adapt_table.jsonl "$out/adapt_table.jsonl"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
python3 benchmarks/adapt_table.py --device cuda --pairs "mnist->usps,usps->mnist" \
    --seeds "${SEEDS:-0,1,2}" --jobs "${PARALLEL:-10}" --out "$out/adapt_table.jsonl" \
    > "$out/grid.log" 2>&1
tail -n 20 "$out/grid.log"
wc -l "$out/adapt_table.jsonl"
