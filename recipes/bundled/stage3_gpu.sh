#!/usr/bin/env bash
# A further stage of the bundled model, on a GPU: more iterations from a trained model
# (INIT, required) on freshly rendered synthetic embryos, with mixed precision.
# train.sh runs it for stages 3 (INIT = the installed stage-2 file, float16 as shipped),
# 4 (the installed stage-3 file), 5 (stage 4's model) and 6 (stage 5's model, on the
# CPU: DEVICE=cpu), each with its own seeds.
#
#   INIT=MODEL bash recipes/bundled/stage3_gpu.sh  # STEP=all DATA=data/bundled3 OUT=runs/bundled3
#   STEP=data  bash recipes/bundled/stage3_gpu.sh # only render the data (CPU, JOBS processes at once)
#   STEP=train bash recipes/bundled/stage3_gpu.sh # only train (data rendered before)
#
# Data: JOBS sets of SEQ one-plane time-lapses (seeds SEED1 + i, default 6000 + i)
# and JOBS/3 sets of SEQ/2 five-plane ones (seeds SEED5 + i, default 7000 + i),
# 30 frames each, 2 to 8 cells; the validation set is train.sh's (seed 3000).
# Training: ITERATIONS x BATCH at LR, seed SEED (stage 3: 1600 x 4 at 0.01, seed 2).
# Every step is seeded; training resumes from OUT/last.safetensors when run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
STEP=${STEP:-all}
DATA=${DATA:-data/bundled3}
OUT=${OUT:-runs/bundled3}
INIT=${INIT:-}
ITERATIONS=${ITERATIONS:-1600}
BATCH=${BATCH:-4}
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-10}
SEQ=${SEQ:-8}
FRAMES=${FRAMES:-30}
WORKERS=${WORKERS:-3}
LR=${LR:-0.01}
VAL_EVERY=${VAL_EVERY:-400}
SEED=${SEED:-2}
SEED1=${SEED1:-6000}
SEED5=${SEED5:-7000}
NA=${NAPARI_AMODAL:-napari-amodal}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=PASSIVE

# the data folder remembers what it was rendered with: new seeds must not reuse old embryos
params="SEED1=$SEED1 SEED5=$SEED5 JOBS=$JOBS SEQ=$SEQ FRAMES=$FRAMES"
if [ -f "$DATA/params.txt" ] && [ "$(cat "$DATA/params.txt")" != "$params" ]; then
  echo "$DATA was rendered with $(cat "$DATA/params.txt"), not $params: use another DATA folder" >&2; exit 2
fi

if [ "$STEP" = all ] || [ "$STEP" = data ]; then
  mkdir -p "$DATA" && echo "$params" > "$DATA/params.txt"
  pids=()
  render() { [ -f "$1/annotations.json" ] || $NA -q synth embryo "$@" --start-cells 2 & pids+=($!); }
  for i in $(seq 0 $((JOBS - 1))); do render "$DATA/p1_$i" --sequences "$SEQ" --frames "$FRAMES" --seed $((SEED1 + i)); done
  for i in $(seq 0 $((JOBS / 3 - 1))); do
    render "$DATA/p5_$i" --sequences $((SEQ / 2 > 0 ? SEQ / 2 : 1)) --frames "$FRAMES" --planes 5 --seed $((SEED5 + i))
  done
  render "$DATA/val" --sequences 6 --frames 20 --seed 3000
  for p in "${pids[@]}"; do wait "$p"; done  # fails (set -e) if any render failed
  echo "data: $(ls -d "$DATA"/p*_* | wc -l) sets in $DATA"
fi
want=$((JOBS + JOBS / 3))
have=$(ls "$DATA"/p*_*/annotations.json 2>/dev/null | wc -l)
if [ "$have" -ne "$want" ] && [ "$STEP" != data ]; then
  echo "$DATA holds $have rendered sets, not $want: render them first (STEP=data)" >&2; exit 2
fi

if [ "$STEP" = all ] || [ "$STEP" = train ]; then
  [ -n "$INIT" ] || { echo "INIT=MODEL is needed: the model to continue from" >&2; exit 2; }
  $NA train --config recipes/bundled/config.json --data "$DATA"/p*_*/annotations.json \
    --val "$DATA/val/annotations.json" --out "$OUT" --init "$INIT" --iterations "$ITERATIONS" \
    --batch-size "$BATCH" --lr "$LR" --val-every "$VAL_EVERY" --checkpoint-every 100 --workers "$WORKERS" \
    --device "$DEVICE" --seed "$SEED"
fi
