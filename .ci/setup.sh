#!/usr/bin/env bash
# setup.sh - installs whatever distill needs that this Debian machine lacks; does nothing when
# everything is present. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
# protobuf-c + libonnx-dev (onnx.proto): the ONNX exporter, generated at build time;
# python3-onnx: the ONNX checker the tests run (with /usr/bin/python3, which has Debian's packages);
# clang + libclang-rt-14-dev: the libFuzzer targets (make fuzz); valgrind: make valgrind;
# util-linux: setpriv, to run the permission tests as an unprivileged user;
# libopenmpi-dev + openmpi-bin: the data-parallel build (make MPI=1) and its tests (tests/mpi.sh);
# groff-base + man-db: the installed man page rendered by the install test (tests/install_test.sh);
# gcc-arm-none-eabi + libnewlib-arm-none-eabi + qemu-system-arm: the C headers built for a
# Cortex-M4 and run under QEMU's mps2-an386 (tests/test_mcu.c; about 30 s to install).
for p in build-essential pkg-config libopenblas-openmp-dev libcjson-dev libstb-dev zlib1g-dev \
         dataset-fashion-mnist python3 libprotobuf-c-dev protobuf-c-compiler libonnx-dev \
         python3-onnx clang libclang-rt-14-dev valgrind util-linux libopenmpi-dev openmpi-bin \
         groff-base man-db gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
# The ONNX Runtime test needs Node.js with npm (the machine's own, else Debian's).
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -eq 0 ]; then
    echo "setup: all packages present"
else
    echo "setup: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# ONNX Runtime (npm onnxruntime-node, pinned) into a cache folder outside the repository. Its
# tests skip without it on a developer's machine, but fail in CI (CI=true).
if ! bash tests/export/ort_install.sh; then
    [ "${CI:-}" = true ] && exit 1
    echo "setup: ONNX Runtime not installed; the tests that need it will be skipped" >&2
fi
