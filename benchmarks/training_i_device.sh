#!/usr/bin/env bash
# Training I on one GPU, detached from the shell that starts it: the world VAE, then the teacher
# (DiT + text encoder) on its latents, then, with SELF_FORCING=1, Training II on the result
# (benchmarks/self_forcing_device.sh with these three models).
#   bash benchmarks/training_i_device.sh start WORK     # returns at once; the stages log to WORK/*.out
#   bash benchmarks/training_i_device.sh collect WORK OUT   # progress, and the finished files copied to OUT
#                                                    # (a teacher still training: its latest EMA weights, so
#                                                    # that a machine taken back between polls keeps them)
#   bash benchmarks/training_i_device.sh poll WORK OUT [SECONDS]  # waits until the run is done or SECONDS
#                                                    # (default 540) have passed, then collects; fails at once
#                                                    # when WORK is gone (a fresh machine: the one that ran it
#                                                    # was given back between calls), so no call is spent waiting
#   bash benchmarks/training_i_device.sh stop WORK   # the running stage stops at its next step, then exports and
#                                                    # evaluates as if its budget were spent (when time runs short)
# The device returns at most 8 files from OUT: collect writes up to 6 (weights and logs.tgz); put any
# extra output of the same call into WORK, where logs.tgz picks it up.
# A stage that fails with --compile is run again without it (it resumes from its saved state).
# Defaults: VAE 12 min (batch 8, 4096-clip bank), teacher 10 min (batch 128), both compiled.
# Go on from the committed VAE: VAE_ARGS="--init benchmarks/checkpoints/run14/world_vae.safetensors --lr 3e-4 ..."
# fine-tunes it; VAE_FILE=benchmarks/checkpoints/run14/world_vae.safetensors trains only the teacher on it
# (TEACHER_ARGS="--init benchmarks/checkpoints/run14 ..." continues the latest teacher: see training_results.md).
set -u
MODE=${1:?usage: training_i_device.sh start|collect|poll|stop WORK [OUT]}
WORK=${2:?usage: training_i_device.sh start|collect|poll|stop WORK [OUT]}
TRAIN="python3 -m selfforcing_core train"

stages() {
  export PYTHONUNBUFFERED=1
  local began; began=$(date +%s)
  stamp() { echo "[$(( $(date +%s) - began ))s] $*"; }
  attempt() {  # log name, then the train arguments; a failed --compile run is tried again without it
    local name=$1; shift
    stamp "$name"
    mkdir -p "$WORK/$name" && echo "$name" >"$WORK/stage"  # where `stop` writes its file
    $TRAIN "$@" >"$WORK/$name.out" 2>&1 && return 0
    case " $* " in *" --compile "*) ;; *) return 1 ;; esac
    stamp "$name failed with --compile, again without"; tail -n 20 "$WORK/$name.out"
    local args=() arg
    for arg in "$@"; do [ "$arg" = --compile ] || args+=("$arg"); done
    $TRAIN "${args[@]}" >>"$WORK/$name.out" 2>&1
  }
  # VAE_ARGS / TEACHER_ARGS replace the budgets and sizes (e.g. "--size toy --resolution 32 --steps 2" to try it).
  # VAE_FILE skips the VAE stage and trains the teacher on that file's latents instead.
  local vae_file=${VAE_FILE:-$WORK/vae/world_vae.safetensors}
  if [ -z "${VAE_FILE:-}" ]; then
    attempt vae vae --out "$WORK/vae" ${VAE_ARGS:---minutes 12 --batch 8 --bank-clips 4096 --eval-clips 64 --compile} \
      || { stamp "vae failed"; return 1; }
  fi
  attempt teacher teacher --vae "$vae_file" --out "$WORK/teacher" \
    ${TEACHER_ARGS:---minutes 10 --batch 128 --lr 6e-4 --bank-minutes 1.0 --workers 12 --compile} \
    || { stamp "teacher failed"; return 1; }
  if [ "${SELF_FORCING:-0}" = 1 ]; then
    mkdir -p "$WORK/models"
    cp "$vae_file" "$WORK/models/world_vae.safetensors"
    cp "$WORK/teacher/world_teacher.safetensors" "$WORK/teacher/world_text_encoder.safetensors" "$WORK/models/"
    stamp "self forcing"
    MODELS="$WORK/models" WORK="$WORK/sf" bash benchmarks/self_forcing_device.sh "$WORK/sf_out" >"$WORK/sf.out" 2>&1
  fi
  stamp done
}

case "$MODE" in
  start)
    first=vae; [ -n "${VAE_FILE:-}" ] && first=teacher
    mkdir -p "$WORK/$first" && echo "$first" >"$WORK/stage"  # so that `stop` works from the first second
    export -f stages
    export WORK TRAIN VAE_ARGS VAE_FILE TEACHER_ARGS SELF_FORCING
    setsid bash -c stages >"$WORK/stages.out" 2>&1 < /dev/null &
    echo "started; logs in $WORK"
    ;;
  collect)
    OUT=${3:?usage: training_i_device.sh collect WORK OUT}
    cat "$WORK/stages.out" 2>/dev/null
    for log in "$WORK"/vae/vae.log "$WORK"/teacher/teacher.log; do
      [ -f "$log" ] && { echo "== $log"; grep -v "^\s*$" "$log" | tail -n 4; }
    done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    for file in vae/world_vae.safetensors teacher/world_teacher.safetensors teacher/world_text_encoder.safetensors \
                teacher/world_binding_heads.safetensors sf_out/world_causal.safetensors; do
      [ -f "$WORK/$file" ] && cp "$WORK/$file" "$OUT/"
    done
    if [ ! -f "$WORK/teacher/world_teacher.safetensors" ] && [ -f "$WORK/teacher/teacher_state.json" ]; then
      $TRAIN snapshot --out "$WORK/teacher" --to "$OUT" ${SNAPSHOT_ARGS:-}  # SNAPSHOT_ARGS: the run's --size etc.
    fi
    tar -czf "$OUT/logs.tgz" -C "$WORK" --exclude='*.safetensors' --exclude='*.npz' --exclude='*_state*' . 2>/dev/null
    ls -la "$OUT"
    ;;
  poll)
    OUT=${3:?usage: training_i_device.sh poll WORK OUT [SECONDS]}
    [ -f "$WORK/stages.out" ] || { echo "no run in $WORK: this machine is a fresh one, start the run again"; exit 3; }
    until grep -q -e "done" -e "failed" "$WORK/stages.out" || [ "$SECONDS" -ge "${4:-540}" ]; do sleep 5; done
    exec bash "$0" collect "$WORK" "$OUT"
    ;;
  stop)  # the stage that runs now, as its attempt wrote it down
    stage=$(cat "$WORK/stage" 2>/dev/null) || { echo "no stage has begun in $WORK yet"; exit 1; }
    touch "$WORK/$stage/STOP" && echo "asked the $stage stage to stop"
    ;;
  *) echo "unknown mode $MODE"; exit 2 ;;
esac
