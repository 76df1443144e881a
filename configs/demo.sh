#!/usr/bin/env bash
# demo.sh - the README's main job (`make demo`): trains the Fashion-MNIST teacher, distils the
# 784-800-800-10 student and the compact 784-128-10 student (23.5x fewer parameters; from the
# teacher's cached logits, `distill logits`) from it,
# compares all three on the test set (accuracy, size, throughput, latency), draws the pictures
# into the student's run folder (curves.svg: training curves; report.svg: the comparison), then
# ships the compact student as int8 ONNX and an int8 C header (configs/ship.sh: each file's size,
# test accuracy and single-sample latency). Run from the repository root after
# `bash .ci/setup.sh && make`.
# Environment: DISTILL (the binary, default ./distill), RUNS (run folder root, default runs),
# THREADS (BLAS threads, default all cores). A teacher already trained in $RUNS is reused.
# Rerunnable: each student run (and a teacher run that did not finish) starts with --overwrite,
# which moves the previous run folder to DIR.1 (or the next free DIR.N); nothing is deleted.
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
    echo "== 1/5 teacher: reusing $teacher (delete $RUNS/fmnist-teacher.log to retrain)"
else
    echo "== 1/5 training the teacher (configs/fmnist-teacher.json: 784-1200-1200-10, dropout)"
    "$DISTILL" train --config configs/fmnist-teacher.json --out "$RUNS/fmnist-teacher" --overwrite \
        --threads "$THREADS" | tee "$RUNS/fmnist-teacher.log" | show
fi

echo "== 2/5 distilling the student (configs/fmnist-student.json: 784-800-800-10, T = 4, alpha = 0.9)"
# The student config finds its teacher at runs/fmnist-teacher/best.safetensors; point it at $RUNS.
abs_teacher="$(cd "$(dirname "$teacher")" && pwd)/best.safetensors"
"$DISTILL" train --config configs/fmnist-student.json --out "$RUNS/fmnist-student" --overwrite \
    --threads "$THREADS" --set "teacher.checkpoint=$abs_teacher" \
    | tee "$RUNS/fmnist-student.log" | show

echo "== 3/5 distilling the compact student from cached teacher logits (configs/fmnist-compact-cached.json: 784-128-10, T = 4, alpha = 0.9)"
# The teacher runs once over the training set (distill logits); every epoch then reads its
# logits from the cache file instead of running the teacher (about 90% of the step's work).
cache="$(cd "$RUNS" && pwd)/fmnist-teacher/logits-f32.kdc"
"$DISTILL" logits --config configs/fmnist-compact-cached.json --threads "$THREADS" --force \
    --set "teacher.checkpoint=$abs_teacher" --set "teacher.cache.path=$cache" | show
"$DISTILL" train --config configs/fmnist-compact-cached.json --out "$RUNS/fmnist-compact" --overwrite \
    --threads "$THREADS" --set "teacher.checkpoint=$abs_teacher" --set "teacher.cache.path=$cache" \
    | tee "$RUNS/fmnist-compact.log" | show

echo "== 4/5 teacher vs students on the test set (latency: one sample at a time)"
if ! "$DISTILL" eval --config configs/fmnist-student.json --threads "$THREADS" \
        --report "$RUNS/fmnist-student/report.svg" \
        "$teacher" "$RUNS/fmnist-student/best.safetensors" "$RUNS/fmnist-compact/best.safetensors"; then
    echo "(distill eval failed; the run summaries say:)"
    grep -h '^summary:' "$RUNS/fmnist-teacher.log" "$RUNS/fmnist-student.log" "$RUNS/fmnist-compact.log"
fi
"$DISTILL" plot "$RUNS/fmnist-teacher" "$RUNS/fmnist-student" "$RUNS/fmnist-compact" \
    --out "$RUNS/fmnist-student/curves.svg"

echo "== 5/5 shipping the compact student: int8 safetensors, ONNX and C header ($RUNS/ship)"
DISTILL="$DISTILL" bash configs/ship.sh "$RUNS/fmnist-compact/best.safetensors" "$RUNS/ship" fmnist_compact
echo "demo: done in $(( $(date +%s) - start )) s"
