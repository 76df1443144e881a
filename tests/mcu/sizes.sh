#!/usr/bin/env bash
# sizes.sh - flash and RAM of the shipped students' C headers on a Cortex-M4 (make bench): for
# configs/fmnist-compact.json and configs/fmnist-cnn-small.json, a checkpoint trained for one
# epoch on 2,000 images (the sizes depend on the layers, not on the weights' values), exported
# as an f32 and a qint8 header (qint8 ranges from 500 training images), each compiled alone with
# arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb -O2 and measured by arm-none-eabi-size
# (code = .text, constants = .rodata: weights, tables), and run on one image under QEMU's
# mps2-an386 (tests/mcu/harness.c) for the stack the model's functions reach. flash = text +
# data of the object; RAM = the arena (qint8) or scratch (f32) the caller passes, plus that
# stack; weights = the int8 weight bytes export prints, or 4 bytes per f32 parameter. Prints
# one line per header (bytes).
#   usage: bash tests/mcu/sizes.sh [DISTILL]     (default ./distill)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
distill=$(realpath "${1:-./distill}")
for t in arm-none-eabi-gcc arm-none-eabi-size qemu-system-arm python3; do
    command -v "$t" >/dev/null || { echo "sizes: $t missing (bash .ci/setup.sh); skipped"; exit 0; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc="arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb -O2"
printf '%-18s %-5s %8s %10s %10s %9s %7s %10s %10s\n' student dtype code constants flash \
    "arena/scr" stack RAM weights
for cfg in fmnist-compact fmnist-cnn-small; do
    d=$tmp/$cfg
    mkdir -p "$d"
    # The shipped config, trained briefly and without its teacher.
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
     "$distill" export run/best.safetensors s_f.h --format c --name s_f > export_f.txt &&
     "$distill" export run/best.safetensors s_q.h --format c --dtype qint8 --calibrate 500 \
         --config c.json --name s_q > export_q.txt)
    # One image and its (irrelevant) int8 input, for the stack.
    python3 -c 'import gzip, sys; b = gzip.open(sys.argv[1]).read(800); sys.stdout.buffer.write(b[:4] + bytes([0, 0, 0, 1]) + b[8:])' \
        /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz > "$d/images.idx"
    head -c 784 /dev/zero > "$d/xq.i8"
    for kind in f q; do
        U=S_$(echo $kind | tr a-z A-Z)
        (cd "$d" && printf '#define %s_IMPLEMENTATION\n#include "s_%s.h"\n' $U $kind > impl_$kind.c &&
         $cc -c impl_$kind.c -o impl_$kind.o &&
         $cc -I. -DQINT8=$([ $kind = q ] && echo 1 || echo 0) -DFLOAT_N=1 -DMODEL=s_$kind \
             -DMODEL_UPPER=$U "-DMODEL_HEADER=\"s_$kind.h\"" -D${U}_IMPLEMENTATION \
             --specs=rdimon.specs -nostartfiles -T "$repo/tests/mcu/mps2_an386.ld" \
             "$repo/tests/mcu/harness.c" "$repo/tests/mcu/startup.c" -lm -o m4.elf &&
         timeout 120 qemu-system-arm -M mps2-an386 -nographic -semihosting -kernel m4.elf \
             < /dev/null > run_$kind.txt)
        read -r text data _ < <(arm-none-eabi-size "$d/impl_$kind.o" | tail -1)
        code=$(arm-none-eabi-size -A "$d/impl_$kind.o" | awk '$1 == ".text" {print $2}')
        stack=$(sed -n 's/.*stack \([0-9]*\) bytes.*/\1/p' "$d/run_$kind.txt")
        if [ $kind = q ]; then
            work=$(sed -n 's/.*#define S_Q_ARENA_BYTES \([0-9]*\).*/\1/p' "$d/s_q.h")
            weights=$(sed -n 's/.* \([0-9]*\) int8 weight bytes.*/\1/p' "$d/export_q.txt")
        else
            work=$(( $(sed -n 's/.*#define S_F_SCRATCH_FLOATS \([0-9]*\).*/\1/p' "$d/s_f.h") * 4 ))
            weights=$(( $(sed -n 's/.* \([0-9]*\) parameters).*/\1/p' "$d/export_f.txt") * 4 ))
        fi
        printf '%-18s %-5s %8d %10d %10d %9d %7d %10d %10s\n' $cfg \
            $([ $kind = q ] && echo qint8 || echo f32) "$code" $((text - code)) $((text + data)) \
            "$work" "$stack" $((work + stack)) "$weights"
    done
done
