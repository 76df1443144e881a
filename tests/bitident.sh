#!/usr/bin/env bash
# bitident.sh - checks that a refactor left training unchanged: trains every config in configs/
# for one epoch (--epochs 1 --threads 2, same seed) with the binary of commit BASE and with the
# working tree's, teachers first (students read runs/<teacher>/best.safetensors), and compares
# every tensor of each run's last.safetensors byte for byte.
#   usage: bash tests/bitident.sh BASE [CONFIG-NAME...]      (e.g. bash tests/bitident.sh afa2283)
# Prints one line per config and exits 1 if any tensor differs. Needs Fashion-MNIST (setup.sh)
# and a few minutes per side on 2 cores. Not part of `make test`: it trains on the full dataset.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,7p "$0"; exit 2; }
base=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/bitident.XXXXXX)
trap 'git -C "$root" worktree remove --force "$work/base-src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

git -C "$root" worktree add --detach -q "$work/base-src" "$base"
echo "building $base ..."
make -C "$work/base-src" -j2 -s BUILD="$work/base-build" BIN="$work/base-src/distill" >/dev/null
echo "building the working tree ..."
make -C "$root" -j2 -s >/dev/null
cp "$root/distill" "$work/new-distill"   # a rebuild during the run must not change this side

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    # Teachers (no "teacher" section) before the students that read their checkpoints.
    for f in "$root"/configs/*.json; do grep -q '"teacher"' "$f" || names+=("$(basename "$f" .json)"); done
    for f in "$root"/configs/*.json; do grep -q '"teacher"' "$f" && names+=("$(basename "$f" .json)"); done
fi

run_side() {  # side binary configs-dir
    local side=$1 bin=$2 cfgdir=$3
    mkdir -p "$work/$side"
    cp -r "$cfgdir" "$work/$side/configs"
    for n in "${names[@]}"; do
        (cd "$work/$side" && "$bin" train --config "configs/$n.json" --epochs 1 --threads 2 --quiet \
            > "$work/$side/$n.log" 2>&1) || { echo "$side: $n failed:"; tail -3 "$work/$side/$n.log"; }
    done
}
echo "training with $base ..."
run_side base "$work/base-src/distill" "$work/base-src/configs"
echo "training with the working tree ..."
run_side new "$work/new-distill" "$root/configs"

python3 - "$work" "${names[@]}" <<'PY'
import json, struct, sys
work, names = sys.argv[1], sys.argv[2:]
def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    head.pop("__metadata__", None)
    body = data[8 + n:]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in head.items()}
bad = 0
for name in names:
    try:
        a = tensors(f"{work}/base/runs/{name}/last.safetensors")
        b = tensors(f"{work}/new/runs/{name}/last.safetensors")
    except OSError as e:
        print(f"MISSING   {name}: {e}"); bad += 1; continue
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        bad += 1
        print(f"DIFFERENT {name}: {len(diff)} of {len(a)} tensors differ, first {diff[0]}")
    else:
        print(f"identical {name}: {len(a)} tensors, {sum(len(v[2]) for v in a.values())} bytes")
print(f"{len(names) - bad} identical, {bad} different or missing")
sys.exit(1 if bad else 0)
PY
