#!/usr/bin/env bash
# The one prepared GPU check (issue 4), a few minutes on one H100/H200; writes to $OUT:
# the CUDA-only tests, the speed benchmark at the CIFAR setting (ResANN n=5, w=16, 50,000
# 32x32 images, batch 128, one epoch of 390 steps) with each of our step's variants against the
# plain loop in the same run, and a short real training on CUDA with the whole step CUDA-graphed.
# Usage (device machine, repo root): OUT=/some/dir bash scripts/gpu_check.sh [--no-bench]
set -uo pipefail
export PYTHONPATH="$PWD/code" PYTHONUNBUFFERED=1
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_graphed.py tests/test_data.py -k "cuda or graph"
bench() {  # one epoch of 50k images = 390 steps of 128, after 30 warm-up steps
  echo "== bench $*"
  timeout 200 python3 -m adaloss bench --device cuda --images 50000 --steps 390 --warmup 30 --out "$OUT" "$@" \
    | grep -E "device_name|torch |compile|cuda_graph|images_per_s|ratio|epoch|fraction"
}
if [ "${1:-}" != --no-bench ]; then
  bench                                            # eager kernels, launched one by one
  bench --cuda-graph                               # eager kernels, the whole step one CUDA graph
  bench --compile --cuda-graph                     # inductor's fused kernels, the whole step one CUDA graph
  bench --compile --compile-mode reduce-overhead   # forward+backward CUDA-graphed by torch.compile
fi
for flags in "" "--cuda-graph" "--compile --cuda-graph"; do  # a short real training, eager and graphed
  name=$(echo "${flags:-eager}" | tr -d ' -')
  timeout 150 python3 -m adaloss train --dataset digits --out "$OUT/run" --arch-opt n=3 --arch-opt width=16 \
    --epochs 6 --update-per 5 --no-progress $flags
  cp "$OUT/run/exits.csv" "$OUT/cuda_digits_exits_$name.csv"
  python3 -c "import json; m = json.load(open('$OUT/run/metrics.json')); print('train_seconds', m['train_seconds'])"
  rm -rf "$OUT/run"
done
