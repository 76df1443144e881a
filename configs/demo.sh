#!/usr/bin/env bash
# demo.sh - the README's main job (`make demo`): trains the Fashion-MNIST teacher, distils the
# 784-800-800-10 student from it, then compares teacher and student on the test set (accuracy,
# size, speed) and draws both pictures into the student's run folder: curves.svg (training
# curves of both runs) and report.svg (the comparison). Run from the repository root after
# `bash .ci/setup.sh && make`.
# Environment: DISTILL (the binary, default ./distill), RUNS (run folder root, default runs),
# THREADS (BLAS threads, default all cores). A teacher already trained in $RUNS is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
DISTILL=${DISTILL:-./distill}
RUNS=${RUNS:-runs}
THREADS=${THREADS:-0}
[ -x "$DISTILL" ] || { echo "demo: $DISTILL not found: run 'make' first" >&2; exit 1; }
[ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
    { echo "demo: Fashion-MNIST is missing: run 'bash .ci/setup.sh' first" >&2; exit 1; }

start=$(date +%s)
mkdir -p "$RUNS"
teacher="$RUNS/fmnist-teacher/best.safetensors"
# Hide the printed config and model table; keep the run's story (epochs, accuracy, summary).
show() { grep --line-buffered -v -e '^[[:space:]]' -e '^[{}]' || true; }
if [ -r "$teacher" ] && grep -q '^summary:' "$RUNS/fmnist-teacher.log" 2>/dev/null; then
    echo "== 1/3 teacher: reusing $teacher (delete $RUNS/fmnist-teacher.log to retrain)"
else
    echo "== 1/3 training the teacher (configs/fmnist-teacher.json: 784-1200-1200-10, dropout)"
    "$DISTILL" train --config configs/fmnist-teacher.json --out "$RUNS/fmnist-teacher" \
        --threads "$THREADS" | tee "$RUNS/fmnist-teacher.log" | show
fi

echo "== 2/3 distilling the student (configs/fmnist-student.json: 784-800-800-10, T = 4, alpha = 0.9)"
# The student config finds its teacher at runs/fmnist-teacher/best.safetensors; point it at $RUNS.
abs_teacher="$(cd "$(dirname "$teacher")" && pwd)/best.safetensors"
"$DISTILL" train --config configs/fmnist-student.json --out "$RUNS/fmnist-student" \
    --threads "$THREADS" --set "teacher.checkpoint=$abs_teacher" \
    | tee "$RUNS/fmnist-student.log" | show

echo "== 3/3 teacher vs student on the test set"
if ! "$DISTILL" eval --config configs/fmnist-student.json --threads "$THREADS" \
        --report "$RUNS/fmnist-student/report.svg" \
        "$teacher" "$RUNS/fmnist-student/best.safetensors"; then
    echo "(distill eval failed; the run summaries say:)"
    grep -h '^summary:' "$RUNS/fmnist-teacher.log" "$RUNS/fmnist-student.log"
fi
"$DISTILL" plot "$RUNS/fmnist-teacher" "$RUNS/fmnist-student" --out "$RUNS/fmnist-student/curves.svg"
echo "demo: done in $(( $(date +%s) - start )) s"
