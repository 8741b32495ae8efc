#!/usr/bin/env bash
# The prepared GPU check of packed training (issue 19), at most 8 minutes on one H100/H200; writes to $OUT:
#  1. a CUDA exactness check: four runs (AdaLoss, CONST, OPT, LINEAR) trained as one pack and alone
#     end with the same parameters (fp32, TF32 off);
#  2. `bench --pack P` for P in 1, 4, 8, 21 at ResANN(5, 16) and ResANN(9, 64), eager, then compiled
#     at the study's setting (ResANN(5, 16)); each is against one run of the same trainer in the same
#     process (compiled and whole-step CUDA-graphed: the best solo step), and each row is added to
#     $OUT/gpu_pack_throughput_{eager,compiled,reduce_overhead}.csv, the table the dry run's GPU-hour estimate reads
#     from docs/measurements/gpu_pack_throughput.csv (copy the one matching the profile's `compile`);
#  3. the GPU-quick profile's first pack end to end: its 21 runs of ResANN(5, 16) (3 weightings and 4
#     OPT networks x 3 seeds) on synthetic data in CIFAR-10's format (50,000 + 10,000 images), as the
#     pack job the DAG would run, for 2 epochs instead of 60: wall time, compilation, seconds per epoch.
# Usage (device machine, repo root): OUT=/some/dir bash scripts/gpu_pack_check.sh
set -uo pipefail
export PYTHONPATH="$PWD/code" PYTHONUNBUFFERED=1
OUT="${OUT:-results/gpu_pack}"
mkdir -p "$OUT"
START=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__)"

echo "== 1. packed = solo on CUDA (fp32)"
timeout 90 python3 - <<'EOF'
import tempfile, torch
from adaloss.data import load_dataset
from adaloss.pack import fit_pack
from adaloss.train import TrainConfig, fit
torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
data, tmp = load_dataset("digits", "data", train_subset=128), tempfile.mkdtemp()
members = [dict(weighting="adaloss", seed=0), dict(weighting="const", seed=1),
           dict(weighting="opt", opt_exit=1, seed=2), dict(weighting="linear", seed=0)]
cfg = lambda name, m: TrainConfig(dataset="digits", out=f"{tmp}/{name}", arch_opts={"n": 2, "width": 8, "s": 1},
                                  epochs=2, update_per=2, train_subset=128, device="cuda", bf16=False,
                                  channels_last=False, progress=False, **m)
for i, m in enumerate(members):
    fit(cfg(f"solo{i}", m), data)
fit_pack([cfg(f"pack{i}", m) for i, m in enumerate(members)], data)
for i, m in enumerate(members):
    a, b = (torch.load(f"{tmp}/{k}{i}/checkpoint.pt", weights_only=False)["model"] for k in ("solo", "pack"))
    va = torch.cat([t.double().flatten() for t in a.values() if t.is_floating_point()])
    vb = torch.cat([b[n].double().flatten() for n, t in a.items() if t.is_floating_point()])
    print(m, "relative distance packed vs solo:", f"{((va - vb).norm() / va.norm()).item():.2e}")
EOF

bench() {  # 100 timed steps of batch 128 after 20 warm-up steps, 50,000 synthetic 3x32x32 images
  local table=$1; shift
  echo "== 2. bench $*"
  timeout 150 python3 -m adaloss bench --device cuda --images 50000 --batch-size 128 --steps 100 --warmup 20 \
    --out "$OUT" --throughput-table "$OUT/gpu_pack_throughput_$table.csv" "$@" \
    | grep -E "device_name|model|compile|pack|images_per_s|train_tflops"
}
for width_n in "16 5" "64 9"; do
  set -- $width_n
  for p in 1 4 8 21; do bench eager --width "$1" --n "$2" --pack "$p" --cuda-graph; done
done
for p in 8 21; do bench compiled --width 16 --n 5 --pack "$p" --compile --cuda-graph; done
# the pack's forward+backward CUDA-graphed by torch.compile (the solo side then without its own whole-step graph)
bench reduce_overhead --width 16 --n 5 --pack 21 --compile --compile-mode reduce-overhead
echo "elapsed after benches: $((SECONDS - START)) s"

echo "== 3. GPU-quick's first pack: 21 runs of ResANN(5, 16), 2 epochs, synthetic CIFAR-10-format data"
python3 - <<'EOF'
import numpy as np
g = np.random.default_rng(0)
np.savez("data/fakecifar10.npz", x_train=g.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8),
         y_train=np.arange(50000) % 10, x_test=g.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8),
         y_test=np.arange(10000) % 10, num_classes=np.int64(10), flip=np.int64(1), crop_pad=np.int64(4))
EOF
runs=""
for w in adaloss const linear opt3 opt7 opt10 opt14; do for s in 0 1 2; do runs="$runs $w:$s"; done; done
begin=$SECONDS
timeout 240 python3 -m adaloss train --dataset fakecifar10 --model-name resann --arch resann --arch-opt n=5 \
  --arch-opt width=16 --arch-opt s=1 --epochs 2 --batch-size 128 --update-per 50 --eval-every 1 --device cuda \
  --bf16 --channels-last --compile --cuda-graph --no-progress --out "$OUT/quick/{weighting}/seed{seed}" \
  --runs $runs --pack 21
echo "pack of 21, 2 epochs: wall $((SECONDS - begin)) s (python start-up, data, compilation, evaluation included)"
python3 - "$OUT" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/quick/adaloss/seed0/log.csv")))
print("seconds per run, cumulative by epoch (its 1/21 share of the pack's training + its own evaluation):",
      [r["seconds"] for r in rows])
EOF
rm -f data/fakecifar10.npz
echo "total: $((SECONDS - START)) s"
