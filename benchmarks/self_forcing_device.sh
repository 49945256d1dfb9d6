#!/usr/bin/env bash
# Training II on one GPU in about nine minutes: clip bank + ODE pairs, causal init, Self Forcing,
# the teacher- and diffusion-forcing baselines (the same number of generator steps), end-frame training,
# and the evaluations (each in the background while the next stage trains; their json is rewritten
# after every run, so a stopped evaluation keeps what it finished).
# Usage: bash benchmarks/self_forcing_device.sh OUT
# `touch $WORK/STOP` ends the training stage running now at its next step, as if its budget were spent.
# Longer than one device call (the machine stays warm between calls), detached and scaled by the environment:
#   STEPS=150 INIT_MINUTES=3 STAGE_SECONDS=480 LAST_START=1260 DEADLINE=1380 \
#     setsid bash benchmarks/self_forcing_device.sh /tmp/sf_out >/tmp/sf.log 2>&1 </dev/null &
# then poll /tmp/sf.log with calls back to back, each ending with
#   python3 benchmarks/collect_self_forcing.py /tmp/self_forcing $OUT --student /tmp/sf_out/world_causal.safetensors
# so that what has finished comes back with every call (a machine taken back between two calls keeps nothing).
# Writes to OUT: world_causal.safetensors (the student to ship, in models/ together with the VAE and text encoder
# of MODELS), results.json, log.txt, samples_*.npz.
# Measured on an H100 (2026-11-25, world sizes, batch 64, float32 + TF32): causal init 5.3 steps/s,
# one generator step (with its 5 critic steps) about 3.5 s alone, up to 7 s beside the evaluations.
# The training stages run under bf16 autocast on the GPU (PRECISION=auto; PRECISION=no is the float32 of the
# runs above); on an H200 (2026-12-02) a generator step took 1.5 s in bf16 and 1.75 s in float32 at batch 64.
set -u
OUT=${1:?usage: self_forcing_device.sh OUT}
WORK=${WORK:-/tmp/self_forcing}
MODELS=${MODELS:-benchmarks/checkpoints/run14}  # VAE, teacher and text encoder of one Training I run
TRAIN="python3 -m selfforcing_core.training.distill_cli"
FROZEN="--teacher $MODELS/world_teacher.safetensors --text-encoder $MODELS/world_text_encoder.safetensors"
EVAL="--out $WORK --vae $MODELS/world_vae.safetensors --text-encoder $MODELS/world_text_encoder.safetensors
  --workers 4 --clips ${CLIPS:-200} --long-clips ${LONG_CLIPS:-100}"
STEPS=${STEPS:-20}  # generator steps of each of Self Forcing, teacher forcing and diffusion forcing
BATCH=${BATCH:-64}
PRECISION=${PRECISION:-auto}  # training stages: auto (= bf16 autocast on the GPU), bf16, or no (float32 + TF32)
# One thread per process: the evaluator's worker processes oversubscribed the cores otherwise.
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$WORK" "$OUT"
began=$(date +%s)
stamp() { echo "[$(( $(date +%s) - began ))s] $*"; }
background=()
evaluate() {  # label, then the evaluate options
  local label=$1; shift
  $TRAIN evaluate --label "$label" $EVAL "$@" >"$WORK/eval_$label.out" 2>&1 &
  background+=($!)
}
run() {  # log name, time limit, then the train command's arguments (skipped past LAST_START seconds)
  local name=$1 limit=$2; shift 2
  if [ $(( $(date +%s) - began )) -gt "${LAST_START:-470}" ]; then stamp "$name skipped: out of time"; return; fi
  stamp "$name"
  timeout "$limit" $TRAIN "$@" >"$WORK/$name.out" 2>&1 && return 0
  local rc=$?
  echo "$name failed (rc $rc):"; tail -n 30 "$WORK/$name.out"
  return $rc
}
trained() {  # like run, for a training stage: an error under bf16 (not a timeout or a kill) is tried once more
  local name=$1 limit=$2; shift 2   # in float32, if there is time left to start it
  run "$name" "$limit" "$@" --precision "$PRECISION" && return 0
  local rc=$?
  case "$rc" in 124|137) return "$rc" ;; esac
  [ "$PRECISION" = no ] && return "$rc"
  mv "$WORK/$name.out" "$WORK/${name}_bf16.out"
  run "$name" "$limit" "$@" --precision no
}
distill() {  # log name, then the stage and its options
  local name=$1; shift
  trained "$name" "${STAGE_SECONDS:-150}" "$@" $FROZEN --out "$WORK" --bank "$WORK/clip_bank.safetensors" --batch "$BATCH"
}

run ode 80 ode --out "$WORK" $FROZEN --vae $MODELS/world_vae.safetensors --bank-clips 4096 \
  --bank-minutes 0.3 --pairs 6144 --pairs-minutes 0.3 --batch "${PAIR_BATCH:-256}"
INIT_MINUTES=${INIT_MINUTES:-1.0}
init_limit=$(awk "BEGIN { print int($INIT_MINUTES * 60 + 25) }")  # its budget plus start-up and export
trained causal_init "$init_limit" causal-init --out "$WORK" $FROZEN --pairs "$WORK/ode_pairs.safetensors" \
  --minutes "$INIT_MINUTES" --batch "$BATCH"
evaluate init --model "$WORK/causal_init.safetensors" --keyframes start
evaluate teacher --teacher $MODELS/world_teacher.safetensors --truth
distill self_forcing self-forcing --init "$WORK/causal_init.safetensors" --steps "$STEPS" --export "$OUT/world_causal.safetensors"
evaluate sf --model "$WORK/self_forcing.safetensors" --keyframes start,guidance
evaluate sf_nosink --model "$WORK/self_forcing.safetensors" --lengths 2,4 --local-window 9 --sink-frames 0
distill teacher_forcing baseline --method teacher_forcing --init "$WORK/causal_init.safetensors" --steps "$STEPS"
evaluate tf --model "$WORK/teacher_forcing.safetensors" --keyframes start
distill diffusion_forcing baseline --method diffusion_forcing --init "$WORK/causal_init.safetensors" --steps "$STEPS"
evaluate df --model "$WORK/diffusion_forcing.safetensors" --keyframes start
distill end_frame end-frame --init "$WORK/self_forcing.safetensors" --steps "${END_STEPS:-10}" --start-probability 0.75
evaluate goal --model "$WORK/end_frame.safetensors" --lengths "" --keyframes goal,goal_pinned

deadline=$(( began + ${DEADLINE:-550} ))
for pid in "${background[@]}"; do
  while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 1; done
  kill "$pid" 2>/dev/null
done
stamp collect
python3 benchmarks/collect_self_forcing.py "$WORK" "$OUT" >/dev/null
stamp done
