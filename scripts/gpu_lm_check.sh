#!/usr/bin/env bash
# The prepared GPU check of E8 at config/lm_gpu.yaml's scale (issue 20, item 6), at most 7 minutes on
# one H100/H200; what a session lent a GPU runs first, since no CPU setting met E8's premise.
#  1. Step time: one tt_uniform run of lm_gpu.yaml's transformer (12 layers, width 256, 8 heads,
#     context 256, batches of 32 windows, bf16) for TIME_STEPS steps; from it, lm_gpu.yaml's time
#     (36 trainings, the work of 31.5 full ones, one at a time) is estimated.
#  2. The premise (OPT beats uniform at the final exit in every seed), at lm_gpu.yaml's settings:
#     tt_uniform and OPT at exit 11 for seeds 0, 1, 2, six runs at once on the one GPU, cut at
#     PREMISE_S seconds. Each logs validation bits per byte every EVAL_EVERY steps, so a cut run
#     still gives its curve; a finished one gives test bits per byte too.
# Writes $OUT/gpu_lm_check.log, $OUT/lm_gpu_step_time.csv and $OUT/lm_gpu_premise.csv (one row per
# run and validation point, with the final test bits per byte where the run finished).
# Usage (device machine, repo root): OUT=/some/dir bash scripts/gpu_lm_check.sh
# The sizes are variables so that the plumbing can be checked on a CPU in seconds, e.g.
#   OUT=/tmp/o DEVICE=cpu WIDTH=32 HEADS=2 CONTEXT=32 BATCH=4 STEPS=20 TIME_STEPS=10 EVAL_EVERY=10 \
#   EVAL_WINDOWS=8 bash scripts/gpu_lm_check.sh
# (tests/test_lm_train.py runs it so, on a corpus of its own).
set -uo pipefail
export PYTHONPATH="$PWD/code" PYTHONUNBUFFERED=1
OUT="${OUT:-results/gpu_lm}" DEVICE="${DEVICE:-cuda}"
LAYERS="${LAYERS:-12}" WIDTH="${WIDTH:-256}" HEADS="${HEADS:-8}" CONTEXT="${CONTEXT:-256}" BATCH="${BATCH:-32}"
STEPS="${STEPS:-5000}" TIME_STEPS="${TIME_STEPS:-200}" EVAL_EVERY="${EVAL_EVERY:-500}" EVAL_WINDOWS="${EVAL_WINDOWS:-512}"
PREMISE_S="${PREMISE_S:-300}" RUNS="${RUNS:-/tmp/gpu_lm_runs}" THREADS="${THREADS:-2}"
CORPUS="${CORPUS:-stdlib}" DATA_ROOT="${DATA_ROOT:-data}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" && rm -rf "$RUNS" && mkdir -p "$RUNS"
exec > >(tee "$OUT/gpu_lm_check.log") 2>&1
START=$SECONDS
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import sys, torch; print('torch', torch.__version__, 'python', sys.version.split()[0])"

# lm_gpu.yaml's training settings, shared by both parts
common=(--layers "$LAYERS" --width "$WIDTH" --heads "$HEADS" --context "$CONTEXT" --batch-size "$BATCH"
        --lr 0.001 --min-lr 0.0001 --warmup-steps 200 --update-per 10 --eval-windows "$EVAL_WINDOWS"
        --device "$DEVICE" --threads "$THREADS" --corpus "$CORPUS" --data-root "$DATA_ROOT"
        --no-progress --no-latency --model-name transformer12w)

echo "== 1. step time: tt_uniform, $TIME_STEPS steps"
timeout 90 "$PY" -m adaloss train-lm "${common[@]}" --weighting tt_uniform --seed 0 --steps "$TIME_STEPS" \
  --eval-every "$TIME_STEPS" --out "$RUNS/time"
"$PY" - "$RUNS/time" "$OUT/lm_gpu_step_time.csv" "$STEPS" <<'EOF'
import csv, json, sys
run, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = json.load(open(f"{run}/metrics.json"))
s_per_step = m["train_seconds"] / m["steps"]  # includes the first steps' warm-up and one evaluation
row = {"device_name": m["device_name"], "torch": m["torch"], "bf16": m["bf16"], "steps_timed": m["steps"],
       "ms_per_step": round(1000 * s_per_step, 2), "tokens_per_s": round(m["tokens_seen"] / m["train_seconds"]),
       "lm_gpu_hours_one_at_a_time": round(31.5 * steps * s_per_step / 3600, 3)}
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(row))
    w.writeheader()
    w.writerow(row)
print(row)
EOF
echo "elapsed: $((SECONDS - START)) s"

echo "== 2. premise: tt_uniform and OPT (exit $((LAYERS - 1))), seeds 0 1 2, $STEPS steps, six at once, cut at $PREMISE_S s"
pids=()
for seed in 0 1 2; do
  timeout "$PREMISE_S" "$PY" -m adaloss train-lm "${common[@]}" --weighting tt_uniform --seed "$seed" \
    --steps "$STEPS" --eval-every "$EVAL_EVERY" --out "$RUNS/tt_uniform/seed$seed" > "$RUNS/uniform$seed.txt" 2>&1 &
  pids+=($!)
  timeout "$PREMISE_S" "$PY" -m adaloss train-lm "${common[@]}" --weighting opt --opt-exit "$((LAYERS - 1))" \
    --seed "$seed" --steps "$STEPS" --eval-every "$EVAL_EVERY" --out "$RUNS/opt/seed$seed" > "$RUNS/opt$seed.txt" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"  # a bare `wait` would also wait for the log's tee, which ends only with this script
tail -n 3 "$RUNS"/*.txt
"$PY" - "$RUNS" "$OUT/lm_gpu_premise.csv" "$((LAYERS - 1))" <<'EOF'
import csv, json, os, sys
runs, out, last = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows, final = [], {}
for weighting in ("tt_uniform", "opt"):
    for seed in (0, 1, 2):
        d = f"{runs}/{weighting}/seed{seed}"
        done = os.path.exists(f"{d}/metrics.json")
        test = json.load(open(f"{d}/metrics.json"))["final_test_bpb"][-1] if done else ""
        log = list(csv.DictReader(open(f"{d}/log.csv"))) if os.path.exists(f"{d}/log.csv") else []
        for r in log:  # OPT's network ends at exit `last`, so both runs have that exit's column
            rows.append(dict(weighting=weighting, seed=seed, step=r["step"], seconds=r["seconds"],
                             val_bpb_final_exit=r[f"val_bpb_e{last}"], finished=done, test_bpb_final_exit=test))
        if log:
            final[weighting, seed] = (rows[-1]["step"], float(rows[-1]["val_bpb_final_exit"]),
                                      f"{test:.3f}" if done else "(cut before the end)")
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["weighting", "seed", "step", "seconds", "val_bpb_final_exit", "finished",
                                      "test_bpb_final_exit"])
    w.writeheader()
    w.writerows(rows)
for seed in (0, 1, 2):
    u, o = final.get(("tt_uniform", seed)), final.get(("opt", seed))
    if u and o:
        print(f"seed {seed}: uniform step {u[0]} val {u[1]:.3f} test {u[2]}; OPT step {o[0]} val {o[1]:.3f} "
              f"test {o[2]}; OPT - uniform (validation) {o[1] - u[1]:+.3f}")
    else:
        print(f"seed {seed}: no validation point from {'uniform' if not u else 'OPT'}")
EOF
echo "total: $((SECONDS - START)) s"
