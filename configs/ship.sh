#!/usr/bin/env bash
# ship.sh - the last step of the demo: exports a Fashion-MNIST checkpoint for deployment as int8
# safetensors, int8 ONNX and an int8 C header, then measures each file on the 10,000 test images:
# size, top-1 accuracy and single-sample latency. distill runs the checkpoints, ONNX Runtime the
# ONNX file (when tests/export/ort_install.sh has installed it), and the C header is compiled with
# cc -std=c99 -O2 and run by tests/export/c_harness.c.
#   bash configs/ship.sh CHECKPOINT OUT_DIR [NAME]      (NAME: file and C prefix, default model)
# Environment: DISTILL (the binary, default ./distill), KD_ORT_DIR (ONNX Runtime's folder).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash configs/ship.sh CHECKPOINT OUT_DIR [NAME]" >&2; exit 2; }
ck=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"
out=$(cd "$2" && pwd)
name=${3:-model}
cd "$(dirname "$0")/.."
DISTILL=${DISTILL:-./distill}
data=/usr/share/datasets/fashion-mnist
images=$data/t10k-images-idx3-ubyte.gz
labels=$data/t10k-labels-idx1-ubyte.gz
ort=${KD_ORT_DIR:-$HOME/.cache/distill-ort/1.30.0}

"$DISTILL" export "$ck" "$out/$name-int8.safetensors" --dtype int8 >/dev/null
"$DISTILL" export "$ck" "$out/$name.onnx" --format onnx --dtype int8 >/dev/null
"$DISTILL" export "$ck" "$out/$name.h" --format c --dtype int8 --name "$name" >/dev/null

row() { printf '%-26s %-32s %9s  %-7s %-16s %s\n' "$@"; }
size() { stat -c %s "$1"; }
row "format" "file" "bytes" "top-1" "latency (p50)" "samples/s (batch 1000)"

# distill itself, f32 and int8 (its eval table: "top-1 accuracy A B", "latency p50 (us) A B").
ev=$("$DISTILL" eval --batch 1000 --data "$images" --labels "$labels" "$ck" "$out/$name-int8.safetensors")
acc=($(awk '/^top-1 accuracy/ {print $3, $4}' <<<"$ev"))
lat=($(awk '/^latency p50/ {print $4, $5}' <<<"$ev"))
tput=($(awk '/^samples\/s/ {print $4, $5}' <<<"$ev"))
row "checkpoint f32 (distill)" "$(basename "$ck")" "$(size "$ck")" "${acc[0]}" "${lat[0]} us" "${tput[0]}"
row "safetensors int8 (distill)" "$name-int8.safetensors" "$(size "$out/$name-int8.safetensors")" \
    "${acc[1]}" "${lat[1]} us" "${tput[1]}"

# ONNX Runtime on the int8 ONNX file.
if [ -f "$ort/.complete" ] && command -v node >/dev/null; then
    r=$(KD_ORT_MODULE="$ort/node_modules/onnxruntime-node" node tests/export/ort_run.js \
        "$out/$name.onnx" "$images" --n 10000 --labels "$labels" --bench)
    row "onnx int8 (ONNX Runtime)" "$name.onnx" "$(size "$out/$name.onnx")" \
        "$(awk '/^accuracy/ {print $2 "%"}' <<<"$r")" "$(awk '/^single/ {print $3, $4}' <<<"$r" | tr -d ,)" \
        "$(awk '/^batch/ {print substr($5, 2)}' <<<"$r")"
else
    row "onnx int8" "$name.onnx" "$(size "$out/$name.onnx")" "-" \
        "not run: ONNX Runtime missing (bash tests/export/ort_install.sh)"
fi

# The C header, compiled as a user would, on the same images (uncompressed IDX for the harness).
gzip -dc "$images" > "$out/t10k-images.idx"
gzip -dc "$labels" > "$out/t10k-labels.idx"
upper=$(tr '[:lower:]' '[:upper:]' <<<"$name")
printf '#define %s_IMPLEMENTATION\n#include "%s.h"\n' "$upper" "$name" > "$out/$name-impl.c"
cc -std=c99 -O2 -Wall -Wextra -pedantic -I"$out" -c "$out/$name-impl.c" -o "$out/$name-impl.o"
cc -std=c99 -O2 -I"$out" -DMODEL="$name" -DMODEL_UPPER="$upper" "-DMODEL_HEADER=\"$name.h\"" \
    tests/export/c_harness.c "$out/$name-impl.o" -lm -o "$out/$name-harness"
r=$("$out/$name-harness" "$out/t10k-images.idx" 10000 - "$out/t10k-labels.idx" --bench)
row "C header int8 (cc -O2)" "$name.h" "$(size "$out/$name.h")" \
    "$(awk '/^accuracy/ {print $2 "%"}' <<<"$r")" "$(awk '/^single/ {print $3, $4}' <<<"$r" | tr -d ,)" "-"
echo "    $name.h: $(sed -n 's/^ \* Parameters: /parameters /p' "$out/$name.h")"
rm -f "$out/t10k-images.idx" "$out/t10k-labels.idx"
