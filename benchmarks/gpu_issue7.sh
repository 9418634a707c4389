#!/usr/bin/env bash
# Issue 7's digits grid (section j) on one GPU: the MNIST<->USPS rows not yet in
# benchmarks/results/adapt_table.jsonl, in parallel processes (disjoint (pair, seed, methods)
# chunks, so no two write one run directory). MNIST-M (156 MB) does not fit what travels to a
# lent GPU; its rows run on the CPU. From the repo root:
#   TRANSFERKIT_DATA_DIR=<folder with mnist/ and usps/> OUT=<results folder> \
#       bash benchmarks/gpu_issue7.sh
# Rows are appended to $OUT/adapt_table.jsonl (a copy of the repo's file first, so finished
# rows are skipped); append the new lines to the repo's file afterwards.
set -u
out=${OUT:-benchmarks/results}
seeds=${SEEDS:-0 1 2}
mkdir -p "$out"
[ "$out/adapt_table.jsonl" -ef benchmarks/results/adapt_table.jsonl ] || \
    cp benchmarks/results/adapt_table.jsonl "$out/adapt_table.jsonl"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
chunks=("source-only,shot,tent,adabn,dann,dan" "jan,coral,cdan,cdan+e,mdd" "mcd"
        "adda,afn,dann+bsp" "mcc,bnm,pseudo_label,fixmatch")
jobs=()
for pair in "mnist->usps" "usps->mnist"; do
    for seed in $seeds; do
        for chunk in "${chunks[@]}"; do
            jobs+=("$pair|$seed|$chunk")
        done
    done
done
printf '%s\n' "${jobs[@]}" | xargs -P "${PARALLEL:-10}" -I{} bash -c '
    IFS="|" read -r pair seed methods <<< "{}"
    log="$0/grid-${pair/->/2}-s$seed-${methods%%,*}.log"
    python3 benchmarks/adapt_table.py --device cuda --pairs "$pair" --seeds "$seed" \
        --methods "$methods" --out "$0/adapt_table.jsonl" >"$log" 2>&1
    tail -n 2 "$log"' "$out"
wc -l "$out/adapt_table.jsonl"
