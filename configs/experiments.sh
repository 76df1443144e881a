#!/usr/bin/env bash
# experiments.sh - reproduces the numbers in the README's "Results": trains a teacher once, then
# every student pair (distilled vs from scratch) over several seeds, and prints test accuracy
# as mean and spread. Slow (tens of minutes on 2 cores); not part of the tests.
#   bash configs/experiments.sh mlp     # the fmnist-* configs (issue: train)
#   bash configs/experiments.sh cnn     # the fmnist-cnn-* configs (issue: convolutional teachers)
#   bash configs/experiments.sh cnn-aug # the CNN teacher's students on augmented batches: compact
#                                       # MLP 30 epochs, shifts of 2 + flips; small CNN 24 epochs,
#                                       # shifts of 2; distilled vs from scratch
# Environment: DISTILL (binary, default ./distill), RUNS (default runs/exp), SEEDS ("1 2 3").
set -euo pipefail
cd "$(dirname "$0")/.."
DISTILL=${DISTILL:-./distill}
RUNS=${RUNS:-runs/exp}
SEEDS=${SEEDS:-1 2 3}
suite=${1:-mlp}
case "$suite" in
mlp) teacher=fmnist-teacher
     pairs="fmnist-student:fmnist-student-scratch fmnist-compact:fmnist-compact-scratch fmnist-scarce-kd:fmnist-scarce-scratch" ;;
cnn) teacher=fmnist-cnn-teacher
     pairs="fmnist-cnn-compact:fmnist-cnn-compact-scratch fmnist-cnn-small:fmnist-cnn-small-scratch" ;;
cnn-aug) teacher=fmnist-cnn-teacher  # pair fields: kd:scratch:epochs:shift:flip
     pairs="fmnist-cnn-compact:fmnist-cnn-compact-scratch:30:2:true fmnist-cnn-small:fmnist-cnn-small-scratch:24:2:false" ;;
*) echo "usage: experiments.sh mlp|cnn|cnn-aug" >&2; exit 2 ;;
esac
mkdir -p "$RUNS"
summary_field() { grep -o "$2 [0-9.]*" "$1" | head -1 | cut -d' ' -f2; }

if [ ! -r "$RUNS/$teacher/best.safetensors" ]; then
    "$DISTILL" train --config "configs/$teacher.json" --out "$RUNS/$teacher" --quiet \
        > "$RUNS/$teacher.log"
fi
tacc=$(summary_field "$RUNS/$teacher.log" best_test_acc)
echo "teacher $teacher: best-checkpoint test accuracy $tacc"
abs_teacher="$(cd "$RUNS/$teacher" && pwd)/best.safetensors"
for pair in $pairs; do
    IFS=: read -r kd scratch epochs shift flip <<< "$pair"
    args=()
    if [ -n "$epochs" ]; then
        args=(--epochs "$epochs" --set "data.augment.shift=$shift" --set "data.augment.flip=$flip")
    fi
    for cfg in $kd $scratch; do
        accs=""
        for seed in $SEEDS; do
            out="$RUNS/$cfg${epochs:+-aug$epochs}-s$seed"
            if [ ! -r "$out.log" ] || ! grep -q '^summary:' "$out.log"; then
                set_teacher=()
                grep -q '"teacher"' "configs/$cfg.json" && set_teacher=(--set "teacher.checkpoint=$abs_teacher")
                "$DISTILL" train --config "configs/$cfg.json" --seed "$seed" --out "$out" --quiet \
                    "${set_teacher[@]+"${set_teacher[@]}"}" "${args[@]+"${args[@]}"}" > "$out.log"
            fi
            accs="$accs $(summary_field "$out.log" best_test_acc)"
        done
        echo "$cfg${epochs:+-aug$epochs}$accs" | awk -v t="$tacc" '{ n = NF - 1; s = 0; q = 0;
            for (i = 2; i <= NF; i++) { s += $i; q += $i * $i }
            m = s / n; sd = n > 1 ? sqrt((q - n * m * m) / (n - 1)) : 0;
            printf "%-30s test acc %.2f%% +- %.2f (n=%d, seeds:", $1, 100 * m, 100 * sd, n;
            for (i = 2; i <= NF; i++) printf " %.2f", 100 * $i;
            printf ")  retention %.1f%%\n", 100 * m / t }'
    done
done
