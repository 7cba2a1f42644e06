#!/usr/bin/env bash
# Stage 7 of the bundled model: continue from stage 6 on BOTH synthetic embryo families
# (hoffman: data/embryo.py; volume: data/embryo_volume.py, DIC / phase / bright field from a
# 3-D refractive-index volume, zygote to 16 cells, compaction, empty dishes, 256-1024 px,
# 8-16 bit), so that the model is no specialist for one renderer.
#
#   INIT=MODEL bash recipes/bundled/stage7_mixed.sh   # STEP=all DATA=data/bundled7 OUT=runs/bundled7
#   STEP=data  bash recipes/bundled/stage7_mixed.sh   # only render (JOBS processes at once)
#   STEP=train bash recipes/bundled/stage7_mixed.sh   # only train
#
# Data (all seeded): hoffman JOBS_H sets of SEQ one-plane time-lapses from one cell (seeds
# SEEDH + i) and JOBS_H/4 five-plane sets (SEEDH5 + i); volume JOBS_V sets (seeds SEEDV + i) and
# JOBS_V/4 three-plane sets (SEEDV3 + i); FRAMES frames each. Validation: hoffman seed 3000 (as
# stages 1-6) + volume seed 3100. Held-out test sets (seeds 9000+ / 9500+) are never used here.
# Training resumes from OUT/last.safetensors when run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
STEP=${STEP:-all}
DATA=${DATA:-data/bundled7}
OUT=${OUT:-runs/bundled7}
INIT=${INIT:-}
ITERATIONS=${ITERATIONS:-1000}
BATCH=${BATCH:-8}
LR=${LR:-0.005}
VAL_EVERY=${VAL_EVERY:-250}
SEED=${SEED:-7}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-1}
JOBS=${JOBS:-2}
JOBS_H=${JOBS_H:-8}
JOBS_V=${JOBS_V:-12}
SEQ=${SEQ:-8}
SEQ_V=${SEQ_V:-6}
FRAMES=${FRAMES:-25}
SEEDH=${SEEDH:-6400}
SEEDH5=${SEEDH5:-7400}
SEEDV=${SEEDV:-8000}
SEEDV3=${SEEDV3:-8100}
INPUT_SIZES=${INPUT_SIZES:-}  # e.g. "224 256 288 320 352 384": multi-scale training (stage 9)
NA=${NAPARI_AMODAL:-napari-amodal}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=PASSIVE

params="SEEDH=$SEEDH SEEDH5=$SEEDH5 SEEDV=$SEEDV SEEDV3=$SEEDV3 JOBS_H=$JOBS_H JOBS_V=$JOBS_V SEQ=$SEQ SEQ_V=$SEQ_V FRAMES=$FRAMES"
if [ -f "$DATA/params.txt" ] && [ "$(cat "$DATA/params.txt")" != "$params" ]; then
  echo "$DATA was rendered with $(cat "$DATA/params.txt"), not $params: use another DATA folder" >&2; exit 2
fi

sets() {  # one line per set: folder and synth arguments
  for i in $(seq 0 $((JOBS_H - 1))); do echo "$DATA/h1_$i --family hoffman --sequences $SEQ --frames $FRAMES --start-cells 1 --seed $((SEEDH + i))"; done
  for i in $(seq 0 $((JOBS_H / 4 - 1))); do echo "$DATA/h5_$i --family hoffman --sequences $((SEQ / 2)) --frames $FRAMES --planes 5 --start-cells 1 --seed $((SEEDH5 + i))"; done
  for i in $(seq 0 $((JOBS_V - 1))); do echo "$DATA/v1_$i --family volume --sequences $SEQ_V --frames $FRAMES --seed $((SEEDV + i))"; done
  for i in $(seq 0 $((JOBS_V / 4 - 1))); do echo "$DATA/v3_$i --family volume --sequences $((SEQ_V / 2)) --frames $FRAMES --planes 3 --seed $((SEEDV3 + i))"; done
  echo "$DATA/val_h --family hoffman --sequences 6 --frames 20 --start-cells 2 --seed 3000"
  echo "$DATA/val_v --family volume --sequences 4 --frames 20 --seed 3100"
}

if [ "$STEP" = all ] || [ "$STEP" = data ]; then
  mkdir -p "$DATA" && echo "$params" > "$DATA/params.txt"
  # shellcheck disable=SC2086
  sets | while read -r dir rest; do [ -f "$dir/annotations.json" ] || echo "$dir $rest"; done |
    xargs -P "$JOBS" -L 1 sh -c '$0 -q synth embryo "$@"' "$NA"
  echo "data: $(ls "$DATA"/*/annotations.json | wc -l) sets in $DATA"
fi
want=$(sets | wc -l)
have=$(ls "$DATA"/*/annotations.json 2>/dev/null | wc -l)
if [ "$have" -ne "$want" ] && [ "$STEP" != data ]; then
  echo "$DATA holds $have rendered sets, not $want: render them first (STEP=data)" >&2; exit 2
fi

if [ "$STEP" = all ] || [ "$STEP" = train ]; then
  [ -n "$INIT" ] || { echo "INIT=MODEL is needed: the model to continue from" >&2; exit 2; }
  $NA train --config recipes/bundled/config.json --data "$DATA"/[hv][0-9]_*/annotations.json \
    --val "$DATA/val_h/annotations.json" "$DATA/val_v/annotations.json" --out "$OUT" --init "$INIT" \
    --iterations "$ITERATIONS" --batch-size "$BATCH" --lr "$LR" --val-every "$VAL_EVERY" --checkpoint-every 50 \
    --workers "$WORKERS" --device "$DEVICE" --seed "$SEED" ${INPUT_SIZES:+--input-sizes $INPUT_SIZES}
fi
