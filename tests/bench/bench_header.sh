#!/usr/bin/env bash
# bench_header.sh - single-sample speed of the qint8 C header against the f32 header (make bench):
# for configs/fmnist-compact.json and configs/fmnist-cnn-small.json, a checkpoint trained for one
# epoch on 2,000 images (the speed depends on the layers, not on the weights), exported as an f32
# and a qint8 header (ranges from 500 training images), each built with `cc -std=c99 -O2` and
# timed by tests/export/header_bench.c: p50 of 3,000 single-sample NAME_forward calls (raw float
# in, float logits out), and of the qint8 header's NAME_forward_q (int8 in and out). Prints one
# line per student: f32 and qint8 us/sample and the ratio f32 / qint8 of NAME_forward.
#   usage: bash tests/bench/bench_header.sh [DISTILL] [RUNS]     (default ./distill, 3000)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
distill=$(realpath "${1:-./distill}")
runs=${2:-3000}
images=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
for t in cc python3; do
    command -v "$t" >/dev/null || { echo "bench_header: $t missing; skipped"; exit 0; }
done
[ -r "$images" ] || { echo "bench_header: $images missing; skipped"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -c 'import gzip, sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read(16 + 64 * 784))' \
    "$images" > "$tmp/images.idx"
printf '%-18s %12s %12s %8s %14s\n' student "f32 us" "qint8 us" "f32/q8" "forward_q us"
for cfg in fmnist-compact fmnist-cnn-small; do
    d=$tmp/$cfg
    mkdir -p "$d"
    python3 - "configs/$cfg.json" > "$d/c.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for k in ("teacher", "distill", "schedule"):
    c.pop(k, None)
c["data"]["train"]["subset"], c["data"]["test"]["subset"] = 2000, 200
c["data"]["validation_split"] = 500
c["train"].update(epochs=1)
print(json.dumps(c))
PY
    (cd "$d" && "$distill" train --config c.json --out run --quiet >/dev/null &&
     "$distill" export run/best.safetensors s_f.h --format c --name s_f >/dev/null &&
     "$distill" export run/best.safetensors s_q.h --format c --dtype qint8 --calibrate 500 \
         --config c.json --name s_q >/dev/null)
    for kind in f q; do
        U=S_$(echo $kind | tr a-z A-Z)
        cc -std=c99 -O2 -I"$d" -DQINT8=$([ $kind = q ] && echo 1 || echo 0) -DMODEL=s_$kind \
            -DMODEL_UPPER=$U "-DMODEL_HEADER=\"s_$kind.h\"" -D${U}_IMPLEMENTATION \
            "$repo/tests/export/header_bench.c" -lm -o "$d/bench_$kind"
        "$d/bench_$kind" "$tmp/images.idx" "$runs" > "$d/time_$kind.txt"
    done
    f=$(awk '$1 == "forward" {print $3}' "$d/time_f.txt")
    q=$(awk '$1 == "forward" {print $3}' "$d/time_q.txt")
    fq=$(awk '$1 == "forward_q" {print $3}' "$d/time_q.txt")
    printf '%-18s %12s %12s %8s %14s\n' $cfg "$f" "$q" "$(awk -v f="$f" -v q="$q" \
        'BEGIN {printf "%.2fx", f / q}')" "$fq"
done
