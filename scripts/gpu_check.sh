#!/usr/bin/env bash
# The one prepared GPU check (issue 4): the speed benchmark at the paper's CIFAR setting
# (ResANN n=5, w=16, 50,000 32x32 images, batch 128) eager and compiled, the CUDA-only tests,
# and a short real training on CUDA. Runs in a few minutes on one H100/H200; writes to $OUT.
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
bench --compile --compile-mode max-autotune-no-cudagraphs
bench --compile --compile-mode reduce-overhead
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_data.py -k cuda
timeout 180 python3 -m adaloss train --dataset digits --out "$OUT/run" --arch-opt n=3 --arch-opt width=16 \
  --epochs 6 --update-per 5 --no-progress
cp "$OUT/run/exits.csv" "$OUT/cuda_digits_exits.csv" 2>/dev/null
rm -rf "$OUT/run"
