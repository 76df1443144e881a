#!/usr/bin/env bash
# killtest.sh - SIGKILL at random moments of training, then resume, until the run finishes; the
# finished weights must be bit-identical to an uninterrupted run's. A small config (a generated
# 600-sample IDX set, a 70K-parameter MLP, 24 epochs of 6 steps, a checkpoint every epoch) keeps
# the checkpoint writes a large part of the run. Half the kills come after a random delay, half
# the moment a checkpoint's temporary file appears (mid-write). After every kill:
#   - the run folder holds no last.safetensors yet, or one that `distill info` validates;
#   - the next run resumes from it (or, when there is none but the folder holds a first
#     epoch's best.safetensors or metrics, is refused without --overwrite and then moves the
#     folder aside with it);
# and when a run finishes: its folder holds no temporary file (stale ones from killed writes are
# removed by the next run), last.safetensors has the reference run's tensors byte for byte, and
# a fresh run into the finished folder is refused with exit 2.
#   usage: bash tests/killtest.sh [KILLS]     (default 20, as CI runs it; the long run: 300)
# Prints the counts (kills, kills mid-write, finished runs, stale temporaries removed) and exits
# 1 on the first violation. Uses ./distill (make) and python3.
set -uo pipefail
kills_wanted=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
distill=$root/distill
[ -x "$distill" ] || { echo "killtest: $distill is missing: run make" >&2; exit 2; }
work=$(mktemp -d /tmp/kd-killtest.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

python3 - <<'PY'
import struct
n, side = 600, 8
px = bytes(((i * 37 + k * (i % 4 + 1) * 11) % 251) for i in range(n) for k in range(side * side))
with open("images.idx", "wb") as f:
    f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", n, side, side) + px)
with open("labels.idx", "wb") as f:
    f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", n) + bytes(i % 4 for i in range(n)))
PY
cat > kill.json <<'EOF'
{
  "data": {
    "train": {"format": "idx", "path": "images.idx", "labels": "labels.idx"},
    "validation_split": 100,
    "preprocess": {"flatten": true}
  },
  "model": {"layers": [{"type": "dense", "units": 1024}, {"type": "relu"},
                       {"type": "dropout", "p": 0.1}, {"type": "dense", "units": 4}]},
  "optimizer": {"name": "adam", "lr": 0.001},
  "train": {"epochs": 24, "batch_size": 100, "seed": 7, "threads": 1}
}
EOF

t0=$(date +%s.%N)
"$distill" train --config kill.json --out ref --quiet > ref.log 2>&1 || { cat ref.log; exit 1; }
t_ref=$(python3 -c "import time; print(round(time.time() - $t0, 3))")

# Same tensors (names, dtypes, shapes, bytes) in two checkpoints.
same_tensors() {
    python3 - "$1" "$2" <<'PY'
import json, struct, sys
def tensors(p):
    d = open(p, "rb").read()
    n = struct.unpack("<Q", d[:8])[0]
    h = json.loads(d[8:8 + n]); h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], d[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
sys.exit(0 if a == b else 1)
PY
}
fail() { echo "killtest: FAILED: $*" >&2; exit 1; }

kills=0 mid_write=0 finished=0 stale_removed=0 attempts=0 moved=0
run=run0
rm -rf "$run"
while [ "$kills" -lt "$kills_wanted" ]; do
    attempts=$((attempts + 1))
    args=(train --config kill.json --out "$run" --quiet)
    if [ -f "$run/last.safetensors" ]; then
        args+=(--resume "$run/last.safetensors")
    elif [ -f "$run/best.safetensors" ] || [ -f "$run/metrics.jsonl" ]; then
        # Killed between the first epoch's best and last checkpoints: a fresh start must be
        # asked for, and moves the partial folder aside instead of writing over it.
        "$distill" train --config kill.json --out "$run" --quiet > "$work/refused.log" 2>&1
        rc=$?
        [ "$rc" -eq 2 ] || fail "a fresh run into $run (holding a partial run) exited $rc, not 2"
        args+=(--overwrite)
        moved=$((moved + 1))
    fi
    "$distill" "${args[@]}" > "$work/attempt.log" 2>&1 &
    pid=$!
    if [ $((attempts % 2)) -eq 0 ]; then
        # Random moment of the whole run (delays up to a third of an uninterrupted run).
        sleep "$(python3 -c "import random; print(round(random.uniform(0, $t_ref / 3), 3))")"
    else
        # The moment a temporary appears: a checkpoint (or metrics) write in progress.
        while kill -0 "$pid" 2>/dev/null && ! compgen -G "$run/*.tmp.$pid" > /dev/null; do :; done
    fi
    if kill -KILL "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null
        kills=$((kills + 1))
        compgen -G "$run/*.tmp.$pid" > /dev/null && mid_write=$((mid_write + 1))
        if [ -f "$run/last.safetensors" ]; then
            "$distill" info "$run/last.safetensors" > /dev/null 2> info.err ||
                fail "after kill $kills: $run/last.safetensors does not validate: $(cat info.err)"
        fi
        continue
    fi
    # The run ended before the kill: it must have finished cleanly. A resume refused because
    # its checkpoint is already the last epoch's (the previous kill landed after that write)
    # is a finished run too: exit 2, said so, and its tensors are checked below.
    wait "$pid"
    rc=$?
    if [ "$rc" -eq 2 ] && grep -q "the run is finished" "$work/attempt.log"; then rc=0; fi
    [ "$rc" -eq 0 ] || { cat "$work/attempt.log"; fail "a resumed run exited with $rc"; }
    grep -q "removed .* temporary file" "$work/attempt.log" && stale_removed=$((stale_removed + 1))
    ! compgen -G "$run/*.tmp.*" > /dev/null || fail "temporary files left in $run: $(ls "$run")"
    same_tensors ref/last.safetensors "$run/last.safetensors" ||
        fail "$run/last.safetensors differs from the uninterrupted run's"
    finished=$((finished + 1))
    # A finished run is never written over: a fresh start into its folder is refused (exit 2).
    "$distill" train --config kill.json --out "$run" --quiet > "$work/refused.log" 2>&1
    rc=$?
    [ "$rc" -eq 2 ] && grep -q -- "--overwrite" "$work/refused.log" ||
        fail "a fresh run into finished $run exited $rc: $(cat "$work/refused.log")"
    rm -rf "$run" "$run".[0-9]*
    run=run$finished
done
# Finish the last interrupted run, so its resume is checked too.
while :; do
    args=(train --config kill.json --out "$run" --quiet)
    if [ -f "$run/last.safetensors" ]; then
        args+=(--resume "$run")   # the folder form of --resume
    else
        args+=(--overwrite)
    fi
    # As above: a resume refused because the last kill landed after the final checkpoint
    # (during the metrics write) is a finished run.
    "$distill" "${args[@]}" > "$work/attempt.log" 2>&1
    rc=$?
    if [ "$rc" -eq 2 ] && grep -q "the run is finished" "$work/attempt.log"; then rc=0; fi
    [ "$rc" -eq 0 ] || { cat "$work/attempt.log"; fail "final resume"; }
    grep -q "removed .* temporary file" "$work/attempt.log" && stale_removed=$((stale_removed + 1))
    ! compgen -G "$run/*.tmp.*" > /dev/null || fail "temporary files left in $run"
    same_tensors ref/last.safetensors "$run/last.safetensors" || fail "$run differs from the reference"
    finished=$((finished + 1))
    break
done
t_all=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
echo "killtest: $kills SIGKILLs ($mid_write during a write, the others at random moments), every" \
     "checkpoint left behind valid; $finished runs resumed to the end, all bit-identical to the" \
     "uninterrupted run (${t_ref}s); stale temporaries removed by $stale_removed runs;" \
     "$moved partial folders moved aside by --overwrite; ${t_all}s"
