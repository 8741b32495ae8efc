#!/usr/bin/env bash
# The one prepared GPU check (issue 4): the speed benchmark at the paper's CIFAR setting
# (ResANN n=5, w=16, 50,000 32x32 images, batch 128) eager and CUDA-graphed, the CUDA-only
# tests, and a short real training on CUDA, eager and CUDA-graphed. Runs in a few minutes on one H100/H200; writes to $OUT.
# Usage (device machine, repo root): OUT=/some/dir bash scripts/gpu_check.sh
set -uo pipefail
export PYTHONPATH="$PWD/code" PYTHONUNBUFFERED=1
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
bench() {  # one epoch of 50k images = 390 steps of 128, after 30 warm-up steps
  timeout 240 python3 -m adaloss bench --device cuda --images 50000 --steps 390 --warmup 30 --out "$OUT" "$@"
}
bench
bench --compile --compile-mode reduce-overhead
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_data.py -k cuda
for mode in eager reduce-overhead; do  # a short real training, eager and CUDA-graphed
  flags=(); [ "$mode" = eager ] || flags=(--compile --compile-mode "$mode")
  timeout 150 python3 -m adaloss train --dataset digits --out "$OUT/run_$mode" --arch-opt n=3 \
    --arch-opt width=16 --epochs 6 --update-per 5 --no-progress "${flags[@]}"
  cp "$OUT/run_$mode/exits.csv" "$OUT/cuda_digits_exits_$mode.csv" && rm -rf "$OUT/run_$mode"
done
