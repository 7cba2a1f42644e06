#!/usr/bin/env bash
# Everything this project checks on a lent GPU machine, in one call of under ten minutes:
#
#   bash benchmarks/gpu_check.sh RESULTS_DIR
#
# 1. the CUDA tests (tests/test_cuda.py: mixed-precision training, GPU inference vs CPU, fine-tuning);
# 2. whole-stack throughput of the bundled model on the GPU (benchmarks/throughput.py stack --device cuda;
#    with a training stage, after it, and not with S3_EVAL=1);
# 3. Table II variants at the CPU run's budget (3000 iterations x batch 4, seed 0) on the same
#    synthetic shapes data, rendered there (VARIANTS, empty for none; SHAPE_VQ: a shape VQ-VAE to reuse);
# 4. with S3_ITER set (a number, or "auto": as many as fit before the deadline, measured by a
#    40-iteration probe): one more training stage (recipes/bundled/stage3_gpu.sh, with its
#    JOBS, SEED1, SEED5, SEED, LR, BATCH, WORKERS) from the installed bundled model (or S3_INIT),
#    ending S3_TAIL seconds (default 45) before END; the result
#    comes back as float16 (as shipped) in 15 MiB parts (stage_fp16.part_*: `cat` them), with
#    its log; with S3_EVAL=1 also the held-out benchmark (benchmarks/bundled_accuracy.py) of the
#    result and of the installed model. A stage refuses to start where WORK holds an earlier
#    stage (it would resume that one) unless S3_RESUME=1.
# Jobs run side by side and stop at fixed deadlines (seconds from the start), so the script
# ends by END whatever happens; each job's log lands in RESULTS_DIR.
# Environment: PY (python with torch), DEVICE (cuda), and the sizes below for a CPU smoke run.
set -uo pipefail
cd "$(dirname "$0")/.."
R=${1:?results folder}
mkdir -p "$R"
R=$(cd "$R" && pwd)
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
END=${END:-560}
T2_ITER=${T2_ITER:-3000}
T2_TRAIN=${T2_TRAIN:-5000}
T2_TEST=${T2_TEST:-1000}
VARIANTS=${VARIANTS-vae vq vq_refine+occlusion}
S3_ITER=${S3_ITER:-0}
S3_EVAL=${S3_EVAL:-0}
[[ $S3_ITER =~ ^([0-9]+|auto)$ ]] || { echo "S3_ITER must be a number or auto, not '$S3_ITER'" >&2; exit 2; }
TP_FRAMES=${TP_FRAMES:-300}
WORK=${WORK:-/tmp/gpu_check}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export NAPARI_AMODAL="$PY -m napari_amodal.cli"
left() { local s=$(($1 - SECONDS)); echo $((s > 1 ? s : 1)); }  # seconds until deadline $1
stamp() { echo "[$SECONDS s] $*" | tee -a "$R/timeline.txt"; }
throughput() {  # throughput DEADLINE: whole-stack throughput of the installed bundled model
  timeout "$(left "$1")" $PY benchmarks/throughput.py stack --device "$DEVICE" --frames "$TP_FRAMES" \
    > "$R/throughput_cuda.txt" 2>&1
  stamp "throughput rc $?"
}
stage() {  # stage OUT ITERATIONS DEADLINE [VAL_EVERY]: train a further bundled-model stage on WORK/s3data
  (STEP=train DATA="$WORK/s3data" OUT="$1" ITERATIONS="$2" DEVICE="$DEVICE" VAL_EVERY="${4:-400}" \
    INIT="${S3_INIT:-src/napari_amodal/models/bundled.safetensors}" timeout "$(left "$3")" bash recipes/bundled/stage3_gpu.sh)
}

stamp "start"
{ nvidia-smi -L; $PY -c "import torch, torchvision, sys; print(sys.version.split()[0], torch.__version__,
torchvision.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"; nproc; } \
  > "$R/env.txt" 2>&1

# data, on the CPU, in the background
t2data= s3data=
if [ -n "$VARIANTS" ]; then
  mkdir -p "$WORK/t2"
  [ -n "${SHAPE_VQ:-}" ] && cp "$SHAPE_VQ".* "$WORK/t2/" 2>/dev/null
  (OMP_NUM_THREADS=1 timeout "$(left 200)" $PY -c "from napari_amodal.data.shapes import write_shapes_dataset as w
w('$WORK/t2/data', n_train=$T2_TRAIN, n_test=$T2_TEST, seed=0)" && md5sum "$WORK"/t2/data/*.json) \
    > "$R/t2_data.txt" 2>&1 &
  t2data=$!
fi
if [ "$S3_ITER" != 0 ] && [ "${S3_RESUME:-0}" != 1 ] && [ -e "$WORK/s3" -o -e "$WORK/probe" ]; then
  stamp "$WORK holds an earlier stage: no stage trained (use a new WORK, or S3_RESUME=1 to continue it)"
  S3_ITER=0
fi
if [ "$S3_ITER" != 0 ]; then
  (STEP=data DATA="$WORK/s3data" timeout "$(left 200)" bash recipes/bundled/stage3_gpu.sh) > "$R/s3_data.txt" 2>&1 &
  s3data=$!
fi

stamp "CUDA tests (the data renders beside them, on the CPU)"
timeout "$(left 100)" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$R/pytest_cuda.txt" 2>&1
stamp "CUDA tests rc $?"
# with a training stage, throughput runs at the end, if time is left
[ "$S3_ITER" = 0 ] && throughput 170

[ -n "$t2data" ] && wait $t2data
if [ -n "$s3data" ] && ! wait $s3data; then
  stamp "stage data failed to render (see s3_data.txt): no stage trained"
  S3_ITER=0
fi
stamp "data rendered"

# the vq variants share one shape VQ-VAE: train it once, before they start side by side
if [[ " $VARIANTS " == *" vq"* ]] && [ ! -f "$WORK/t2/shape-vq.safetensors" ]; then
  stamp "training the shape VQ-VAE"
  OMP_NUM_THREADS=1 timeout "$(left 300)" $PY benchmarks/shapes_table2.py --out "$WORK/t2" --device "$DEVICE" \
    --n-train "$T2_TRAIN" --n-test "$T2_TEST" --only vq --shape-models-only > "$R/t2_shape_vq.txt" 2>&1
  stamp "shape VQ-VAE rc $?"
fi
pids=()
for v in $VARIANTS; do
  OMP_NUM_THREADS=1 timeout "$(left $((END - 8)))" $PY benchmarks/shapes_table2.py --out "$WORK/t2" \
    --iterations "$T2_ITER" --batch-size 4 --device "$DEVICE" --workers 2 --n-train "$T2_TRAIN" \
    --n-test "$T2_TEST" --only "$v" > "$R/t2_${v}.log" 2>&1 &
  pids+=($!)
done
[ -n "$VARIANTS" ] && stamp "Table II variants started: $VARIANTS"

train_end=$((END - ${S3_TAIL:-45}))
if [ "$S3_ITER" = auto ]; then  # seconds per iteration (median of the last 20 of 40) and start-up cost
  t0=$SECONDS
  stage "$WORK/probe" 40 "$train_end" 0 > "$R/s3_probe.txt" 2>&1
  overhead_and_s=$($PY - "$WORK/probe/log.jsonl" "$((SECONDS - t0))" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"seconds"' in l and "validation" not in l]
s = statistics.median(r["seconds"] for r in rows[-20:])
print(f"{max(float(sys.argv[2]) - s * len(rows), 5.0):.1f} {s:.4f}")
PYEOF
)
  read -r overhead per_it <<< "$overhead_and_s"
  # start-up + 4 validations (each taken as half the probe's start-up + validation), 10 % margin;
  # the probe's iterations run slower than a long run's (0.197 vs 0.125 s on an H100)
  S3_ITER=$($PY -c "print(max(100, int(($(left "$train_end") - 3 * $overhead) / $per_it / 1.1) // 100 * 100))")
  stamp "probe: $per_it s/iteration, $overhead s start-up and validation; stage of $S3_ITER iterations"
  [[ $S3_ITER =~ ^[0-9]+$ ]] || { stamp "the probe failed (see s3_probe.txt): no stage trained"; S3_ITER=0; }
fi
if [ "$S3_ITER" != 0 ]; then
  stage "$WORK/s3" "$S3_ITER" "$train_end" $((S3_ITER / 4)) > "$R/s3_train.txt" 2>&1
  stamp "stage training rc $?"
  s3model="$WORK/s3/model.safetensors"
  [ -f "$s3model" ] || s3model="$WORK/s3/last.safetensors"
  cp "$WORK/s3/log.jsonl" "$R/s3_log.jsonl" 2>/dev/null
  # the weights as float16 (as shipped), for installing if they do better
  rm -f "$R"/stage_fp16.part_* "$R/stage_fp16.sha256"
  if $PY recipes/bundled/install.py --float16 "$s3model" "$WORK/stage_fp16.safetensors"; then
    split -b 15M "$WORK/stage_fp16.safetensors" "$R/stage_fp16.part_"
    sha256sum "$WORK/stage_fp16.safetensors" > "$R/stage_fp16.sha256"
    stamp "stage model saved ($s3model)"
  fi
  if [ "$S3_EVAL" = 1 ]; then
    timeout "$(left $((END - 5)))" $PY benchmarks/bundled_accuracy.py --model "$s3model" --device "$DEVICE" \
      --sequences "${ACC_SEQ:-10}" --json "$R/accuracy_new_stage.json" > "$R/accuracy_new_stage.txt" 2>&1 &
    acc3=$!
    timeout "$(left $((END - 5)))" $PY benchmarks/bundled_accuracy.py --model bundled --device "$DEVICE" \
      --sequences "${ACC_SEQ:-10}" --json "$R/accuracy_installed.json" > "$R/accuracy_installed.txt" 2>&1
    wait $acc3
    stamp "accuracy done"
  else
    throughput $((END - 5))
  fi
fi
[ ${#pids[@]} -gt 0 ] && wait "${pids[@]}" && stamp "Table II done"

cp "$WORK/t2/table2.json" "$R/" 2>/dev/null
for v in $VARIANTS; do cp "$WORK/t2/$v/log.jsonl" "$R/t2_${v}_log.jsonl" 2>/dev/null; done
stamp "end"
