#!/usr/bin/env bash
# mpi_bench.sh - data-parallel throughput on this machine: the MLP distillation job of
# configs/fmnist-student.json (1200x2 teacher forward + 800x2 student, 1.28M gradients) and the
# 1200x2 MLP trained alone (2.4M gradients), each as 1 rank x 2 threads against 2 ranks x 1
# thread (same global batch of 128, same seed), alternating, ROUNDS times; then the packed
# allreduce alone (build-mpi/bench/mpi_bench_allreduce). samples/s is the epoch's training
# throughput from metrics.jsonl (global samples over rank 0's time in training steps); "comm"
# is rank 0's share of that time spent in collectives (allreduces, waiting included).
#   usage: make mpi-bench [ARGS="SAMPLES ROUNDS"]   (defaults 3200 2: ~1 minute on 2 cores)
#   quiet-machine measurement: make mpi-bench ARGS="25600 3"
# The teacher is trained for one epoch on 256 images: its accuracy does not change the cost.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
D=${KD_DISTILL_MPI:-$root/build-mpi/distill}
BENCH_AR=$(dirname "$D")/bench/mpi_bench_allreduce
samples=${1:-3200}
rounds=${2:-2}
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
FM=/usr/share/datasets/fashion-mnist
work=$(mktemp -d /tmp/distill-mpibench.XXXXXX)
trap 'rm -rf "$work"' EXIT

data() {  # train subset $1, validation 128, test 128
    cat <<EOF
"data": {"train": {"format": "idx", "path": "$FM/train-images-idx3-ubyte.gz",
                   "labels": "$FM/train-labels-idx1-ubyte.gz", "subset": $1},
         "test": {"format": "idx", "path": "$FM/t10k-images-idx3-ubyte.gz",
                  "labels": "$FM/t10k-labels-idx1-ubyte.gz", "subset": 128},
         "validation_split": 128,
         "preprocess": {"mean": [0.286], "std": [0.353], "flatten": true}}
EOF
}
TEACHER='[{"type": "dense", "units": 1200}, {"type": "relu"}, {"type": "dropout", "p": 0.3},
          {"type": "dense", "units": 1200}, {"type": "relu"}, {"type": "dropout", "p": 0.3},
          {"type": "dense", "units": 10}]'
STUDENT='[{"type": "dense", "units": 800}, {"type": "relu"}, {"type": "dense", "units": 800},
          {"type": "relu"}, {"type": "dense", "units": 10}]'
cat > "$work/teacher.json" <<EOF
{$(data $((samples + 128))), "model": {"layers": $TEACHER},
 "optimizer": {"name": "adam", "lr": 0.001}, "train": {"epochs": 1, "batch_size": 128, "seed": 1}}
EOF
cat > "$work/student.json" <<EOF
{$(data $((samples + 128))), "model": {"layers": $STUDENT},
 "teacher": {"checkpoint": "$work/t0/last.safetensors"},
 "distill": {"kind": "kl", "temperature": 4, "alpha": 0.9},
 "optimizer": {"name": "adam", "lr": 0.001}, "train": {"epochs": 1, "batch_size": 128, "seed": 1}}
EOF
"$D" train --config "$work/teacher.json" --set data.train.subset=384 --out "$work/t0" --quiet >/dev/null

sps() { python3 -c 'import json,sys; print(round(json.loads(open(sys.argv[1]).readline())["samples_per_s"]))' "$1"; }
comm() { sed -n 's/.*(\([0-9.]*%\) of its.*/\1/p' "$1"; }
printf "%-26s %-8s %-16s %-16s %s\n" job round "1 rank x 2 thr" "2 ranks x 1 thr" "comm (2 ranks)"
for job in student teacher; do
    for r in $(seq "$rounds"); do
        "$D" train --config "$work/$job.json" --threads 2 --out "$work/a" --quiet > /dev/null
        "${MPIRUN[@]}" -np 2 "$D" train --config "$work/$job.json" --threads 1 --out "$work/b" \
            > "$work/b.log" 2>&1
        name=$([ "$job" = student ] && echo "distillation (1.28M grads)" || echo "MLP alone (2.4M grads)")
        printf "%-26s %-8s %-16s %-16s %s\n" "$name" "$r" "$(sps "$work/a/metrics.jsonl")" \
            "$(sps "$work/b/metrics.jsonl")" "$(comm "$work/b.log")"
    done
done
echo
"${MPIRUN[@]}" -np 2 "$BENCH_AR" 30
