#!/usr/bin/env bash
# setup.sh - installs whatever distill needs that this Debian machine lacks; does nothing when
# everything is present. Run as root (or with sudo available).
set -euo pipefail
need=()
# clang + libclang-rt-14-dev: the libFuzzer targets (make fuzz); valgrind: make valgrind;
# util-linux: setpriv, to run the permission tests as an unprivileged user.
for p in build-essential pkg-config libopenblas-dev libcjson-dev libstb-dev zlib1g-dev \
         dataset-fashion-mnist python3 clang libclang-rt-14-dev valgrind util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "setup: all packages present"
    exit 0
fi
echo "setup: installing ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
