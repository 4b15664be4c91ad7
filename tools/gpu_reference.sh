#!/usr/bin/env bash
# masklab's GPU reference run (issue 18): MSN's MNIST preset, longer than a CPU can afford, 3 seeds, evaluated as
# every CPU run is (target-encoder k-NN, 1/2/5-shot against random init and raw pixels), into a sweep folder that the
# claims ledger and 09_evaluate can read like any other.
#
#   tools/gpu_reference.sh [--epochs N] [--budget S] [--out DIR] [--dry-run]   (from the repository root)
#
# Why: on the CPU, MSN's 5-shot keeps growing with each quadrupling of the steps (248 -> 992 -> 3,968 -> 15,872, the
# last is results/mnist-msn-256ep): at 15,872 steps it passes raw pixels at 1/2/5-shot on every seed but not on k-NN
# (09_evaluate, *MSN at 15,872 steps*). The default here is 1024 epochs (63,488 steps, 4x the longest CPU run, about
# 4 hours of a free CPU core per seed); `--epochs 256` repeats the CPU's longest run on CUDA.
#
# The sweep is resumable: it checkpoints every 500 steps and stops cleanly when the budget (default 540 s) runs out
# (SIGTERM: the trainer saves a checkpoint and stops; a run stopped while it was being evaluated is only evaluated when
# resumed). Rerun the same command, with the folder carried back, and it continues where it stopped; finished seeds
# are not trained again. A device session keeps nothing: copy DIR back (the `run` tool
# returns what is under $OUT, so when $OUT is set the folder is copied there too, checkpoints included).
#
# --dry-run: the same sweep on the CPU for 2 steps a seed (46 s on one core, nearly all of it the evaluation), into
# /tmp: checks the command, the stop and the copy without a GPU.
set -u
cd "$(dirname "$0")/.."
BACK=${OUT:-}  # the device tool's folder for files to bring back, when there is one
EPOCHS=1024; BUDGET=540; DIR=; DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --epochs) EPOCHS="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --out) DIR="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_reference: unknown argument $1 (use --epochs N, --budget S, --out DIR, --dry-run)" >&2; exit 2 ;;
    esac
done
case "$EPOCHS" in ''|*[!0-9]*|0) echo "gpu_reference: --epochs must be an integer >= 1, got '$EPOCHS'" >&2; exit 2 ;; esac
case "$BUDGET" in ''|*[!0-9]*|0) echo "gpu_reference: --budget must be a whole number of seconds >= 1, got '$BUDGET'" >&2; exit 2 ;; esac
if [ $DRY = 1 ]; then
    DEV=cpu; EXTRA=(--max-steps 2); DIR=${DIR:-/tmp/gpu_reference/gpu-mnist-msn-${EPOCHS}ep}
else
    DEV=cuda; EXTRA=(); DIR=${DIR:-results/gpu-mnist-msn-${EPOCHS}ep}
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_reference: no CUDA device here (use --dry-run to check the script on a CPU)" >&2; exit 2; }
fi
CMD=(masklab sweep --preset mnist --method msn --grid "epochs=$EPOCHS" --grid seed=0,1,2 --metric none
     --device "$DEV" --save-every 500 --no-progress "${EXTRA[@]}" --out "$DIR")
echo "[gpu_reference] ${CMD[*]} (budget ${BUDGET}s)" >&2
T0=$(date +%s)
timeout --signal=TERM --kill-after=60 "$BUDGET" "${CMD[@]}"
RC=$?
echo "[gpu_reference] exit $RC after $(( $(date +%s) - T0 ))s$([ $RC = 124 ] && echo ': budget spent, rerun to continue')" >&2
if [ -n "$BACK" ] && [ -d "$DIR" ]; then  # the whole folder, checkpoints included, so that a later session can resume it
    mkdir -p "$BACK/$(basename "$DIR")" && cp -r "$DIR/." "$BACK/$(basename "$DIR")/"
    echo "[gpu_reference] copied $DIR to $BACK/$(basename "$DIR")" >&2
fi
exit $RC
