#!/usr/bin/env bash
# Issue 9's GPU checks in one go (about 10 minutes on one GPU), from the repo root:
#   TRANSFERKIT_DATA_DIR=<folder with mnist/ and usps/> OUT=<results folder> \
#       bash benchmarks/gpu_issue9.sh
# 1. the CUDA tests (compiled step with CUDA graphs, data kept on the device);
# 2. the samples/s table of section u (alone on the GPU: it is a timing);
# 3. side by side: section c's DANN runs in fp32 and bf16 (compiled), and Hinton's MNIST
#    students at 1,000 epochs (compiled with CUDA graphs, data on the device).
# Each step writes its own result file, so a run cut short keeps what finished.
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -m pytest -q -p no:cacheprovider tests/test_compile.py tests/test_cifar_data.py \
    -k "gpu or cuda" >"$out/gpu_tests.log" 2>&1
tail -n 3 "$out/gpu_tests.log"
(cd benchmarks && python3 compile_speed.py --device cuda --out "$out/compile_speed_cuda.json" \
    >"$out/compile_speed.log" 2>&1)
tail -n 14 "$out/compile_speed.log"
cd benchmarks
python3 dann_digits.py --device cuda --amp off bf16 --compile on --skip-source-only \
    --out "$out/dann_digits_bf16.json" >"$out/dann_bf16.log" 2>&1 &
python3 hinton_mnist.py --device cuda --compile graphs --student-epochs 1000 \
    --out "$out/hinton_mnist_1000.json" >"$out/hinton_1000.log" 2>&1 &
wait
tail -n 5 "$out"/dann_bf16.log "$out"/hinton_1000.log
