#!/usr/bin/env bash
# mpi.sh - data-parallel training end to end (issue 16): runs the MPI build of distill
# (KD_DISTILL_MPI; `make mpi-test` builds it) under `mpirun -np 2` on small Fashion-MNIST jobs and
# compares with one process of the same build, same global batch and seed:
#   sgd_one_step          SGD, one step: every weight within 1e-6 of one process (relative to
#                         its tensor's largest value), and a step twice as large is not
#   odd_global_batch      batches of 75 (shards of 38 and 37) with dropout: the same, 4 steps
#   empty_shard_np3       3 ranks, a last batch of 1 sample (two empty shards): the same
#   bn_dropout_epoch      batch norm + dropout, SGD momentum, one epoch: test accuracy within 0.2
#                         points; one log, saying how many ranks run
#   bitwise_repeat        that run again: last.safetensors byte for byte the same
#   resume_other_k        stopped after 3 steps under 2 ranks, resumed under 3: the weights of an
#                         uninterrupted one-process run within 1e-5
#   ranks_disagree        ranks resuming from different checkpoints: exit 1, "ranks disagree"
#   dead_rank             one rank killed (SIGKILL): mpirun ends the others, exits non-zero
#   cached_views          distilled from a soft-target cache of 3 augmented views, batches of 75:
#                         the view draws are the whole global batch's on every rank, so the
#                         weights are one process's within 1e-6
#   cache_parallel_build  `distill logits` under 2 ranks (each computes a share of the samples,
#                         rank 0 writes the file): the same header as one process's cache and
#                         every logit within 1e-5 of it; no part file left behind
#   loss_terms            distilled with a dkd + kl + ce list from an online teacher, batches of
#                         75, 2 epochs: the 2-rank metrics.jsonl's terms (loss.dkd.tckd, ...) add
#                         up to its loss with the weights (1e-6: the pack's floats), and every term, soft, hard and loss is
#                         within 1e-5 of one process's (the weights drift by float reassociation
#                         over the 10 steps; the terms ride the step's allreduce)
#   feature_hint          a ce + hint list (a dense adapter 64 -> 64), batches of 75 (shards of 38
#                         and 37): every weight, the adapter's included, within 1e-6 of one process
# Prints one line per case and "N passed, N failed, N skipped" last; exit 1 on a failure.
# About 20 s on 2 cores. Needs Open MPI (mpirun), python3 and Fashion-MNIST (.ci/setup.sh).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# The MPI build's test binary: some cases stop a run with KD_TRAIN_STOP_AFTER_STEPS.
D=${KD_DISTILL_MPI:-$root/build-mpi/hooks/distill}
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
FM=/usr/share/datasets/fashion-mnist
work=$(mktemp -d /tmp/distill-mpi.XXXXXX)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0 skip=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

need_missing=""
[ -x "$D" ] || need_missing="the MPI build $D (make MPI=1)"
command -v mpirun >/dev/null || need_missing="mpirun (openmpi-bin)"
command -v python3 >/dev/null || need_missing="python3"
[ -r "$FM/train-images-idx3-ubyte.gz" ] || need_missing="Fashion-MNIST ($FM)"
if [ -n "$need_missing" ]; then
    if [ "${CI:-}" = true ]; then echo "FAIL mpi: missing $need_missing"; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
    echo "skip mpi: missing $need_missing"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi

# cfg NAME TRAIN_SUBSET VALIDATION TEST_SUBSET BATCH EPOCHS OPTIMIZER LAYERS
cfg() {
    cat > "$work/$1.json" <<EOF
{"data": {"train": {"format": "idx", "path": "$FM/train-images-idx3-ubyte.gz",
                    "labels": "$FM/train-labels-idx1-ubyte.gz", "subset": $2},
          "test": {"format": "idx", "path": "$FM/t10k-images-idx3-ubyte.gz",
                   "labels": "$FM/t10k-labels-idx1-ubyte.gz", "subset": $4},
          "validation_split": $3,
          "preprocess": {"mean": [0.286], "std": [0.353], "flatten": true}},
 "model": {"layers": $8},
 "optimizer": $7,
 "train": {"epochs": $6, "batch_size": $5, "seed": 7, "threads": 1}}
EOF
}
MLP='[{"type": "dense", "units": 64}, {"type": "relu"}, {"type": "dense", "units": 10}]'
MLP_DROP='[{"type": "dense", "units": 64}, {"type": "relu"}, {"type": "dropout", "p": 0.3},
           {"type": "dense", "units": 10}]'
BN_DROP='[{"type": "dense", "units": 128}, {"type": "batchnorm"}, {"type": "relu"},
          {"type": "dropout", "p": 0.3}, {"type": "dense", "units": 10}]'
SGD='{"name": "sgd", "lr": 0.1, "momentum": 0}'
MOM='{"name": "sgd", "lr": 0.05, "momentum": 0.9}'

one() { "$D" train --config "$work/$1.json" --out "$work/$2" --quiet "${@:3}" > "$work/$2.log" 2>&1; }
par() { local k=$1; shift; "${MPIRUN[@]}" -np "$k" "$D" train --config "$work/$1.json" \
          --out "$work/$2" --quiet "${@:3}" > "$work/$2.log" 2>&1; }
# worst A B: the largest over F32 tensors (not the optimizer's) of max|a - b| / max|a|.
worst() {
    python3 - "$1" "$2" <<'EOF'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k == "__metadata__" or v["dtype"] != "F32" or k.startswith("optim."):
            continue
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys() and a
w = 0.0
for k in a:
    scale = max(abs(x) for x in a[k]) or 1.0
    w = max(w, max(abs(x - y) for x, y in zip(a[k], b[k])) / scale)
print("%.3g" % w)
EOF
}
# within A B TOL: worst(A, B) <= TOL (prints the value on failure)
within() { local w; w=$(worst "$1" "$2") && python3 -c "import sys; sys.exit(0 if $w <= $3 else 1)" && echo "$w"; }
acc() { sed -n 's/.*summary: test_acc \([0-9.]*\).*/\1/p' "$1" | head -1; }

# 1. SGD, one step (128 of 160 samples train, batch 128).
cfg one_step 160 32 200 128 1 "$SGD" "$MLP"
if one one_step s1 && par 2 one_step s2 && par 2 one_step s2x --set optimizer.lr=0.2; then
    if w=$(within "$work/s1/last.safetensors" "$work/s2/last.safetensors" 1e-6); then
        if within "$work/s1/last.safetensors" "$work/s2x/last.safetensors" 1e-4 >/dev/null; then
            bad sgd_one_step "a step of twice the size also passes: the check cannot see it"
        else ok "sgd_one_step (worst relative difference $w)"; fi
    else bad sgd_one_step "weights differ from one process: $(worst "$work/s1/last.safetensors" "$work/s2/last.safetensors")"; fi
else bad sgd_one_step "a run failed: $(tail -2 "$work"/s*.log)"; fi

# 2. An odd global batch: 300 samples in batches of 75, shards of 38 and 37, with dropout.
cfg odd 332 32 200 75 1 "$SGD" "$MLP_DROP"
if one odd o1 && par 2 odd o2; then
    if w=$(within "$work/o1/last.safetensors" "$work/o2/last.safetensors" 1e-6); then ok "odd_global_batch (worst $w)"
    else bad odd_global_batch "weights differ: $(worst "$work/o1/last.safetensors" "$work/o2/last.safetensors")"; fi
else bad odd_global_batch "a run failed: $(tail -2 "$work"/o*.log)"; fi

# 3. Three ranks; 257 samples in batches of 128: the last batch of 1 leaves two shards empty.
cfg tail 289 32 200 128 1 "$SGD" "$MLP_DROP"
if one tail t1 && par 3 tail t3; then
    if w=$(within "$work/t1/last.safetensors" "$work/t3/last.safetensors" 1e-6); then ok "empty_shard_np3 (worst $w)"
    else bad empty_shard_np3 "weights differ: $(worst "$work/t1/last.safetensors" "$work/t3/last.safetensors")"; fi
else bad empty_shard_np3 "a run failed: $(tail -2 "$work"/t*.log)"; fi

# 4. Batch norm and dropout, SGD with momentum, one epoch of 1500 samples; 1000 test images.
cfg bn 2000 500 1000 128 1 "$MOM" "$BN_DROP"
if one bn b1 && "${MPIRUN[@]}" -np 2 "$D" train --config "$work/bn.json" --out "$work/b2" > "$work/b2.log" 2>&1; then
    a1=$(acc "$work/b1.log") a2=$(acc "$work/b2.log")
    n_summary=$(grep -c '^summary:' "$work/b2.log")
    if ! python3 -c "import sys; sys.exit(0 if abs($a1 - $a2) <= 0.002 else 1)"; then
        bad bn_dropout_epoch "test accuracy $a2 under 2 ranks, $a1 in one process"
    elif [ "$n_summary" != 1 ] || ! grep -q 'data-parallel: 2 ranks' "$work/b2.log"; then
        bad bn_dropout_epoch "the log should be rank 0's alone and name 2 ranks: $(head -c 600 "$work/b2.log")"
    else ok "bn_dropout_epoch (test accuracy $a1 one process, $a2 two ranks)"; fi
else bad bn_dropout_epoch "a run failed: $(tail -2 "$work"/b*.log)"; fi

# 5. The same two-rank run again, bit for bit.
if par 2 bn b2again && cmp -s "$work/b2/last.safetensors" "$work/b2again/last.safetensors"; then ok bitwise_repeat
else bad bitwise_repeat "two -np 2 runs differ (or one failed)"; fi

# 6. Resume under another rank count: 2 epochs of 4 steps; stop after step 3 under 2 ranks (the
# stop is agreed at the next step's allreduce), resume under 3.
cfg res 332 32 200 75 2 "$MOM" "$MLP_DROP"
one res r1
KD_TRAIN_STOP_AFTER_STEPS=3 par 2 res r2; rc=$?
if [ "$rc" != 130 ]; then bad resume_other_k "the stopped run exited $rc, not 130: $(tail -2 "$work/r2.log")"
elif ! "${MPIRUN[@]}" -np 3 "$D" train --resume "$work/r2" --quiet > "$work/r3.log" 2>&1; then
    bad resume_other_k "the resumed run failed: $(tail -3 "$work/r3.log")"
elif w=$(within "$work/r1/last.safetensors" "$work/r2/last.safetensors" 1e-5); then ok "resume_other_k (worst $w)"
else bad resume_other_k "weights differ: $(worst "$work/r1/last.safetensors" "$work/r2/last.safetensors")"; fi

# 7. The same config, but each rank resumes from another run's checkpoint.
"${MPIRUN[@]}" -np 1 "$D" train --config "$work/one_step.json" --out "$work/dis" --resume "$work/s1/last.safetensors" --epochs 2 \
    : -np 1 "$D" train --config "$work/one_step.json" --out "$work/dis" --resume "$work/s2x/last.safetensors" --epochs 2 \
    > "$work/dis.log" 2>&1; rc=$?
if [ "$rc" = 1 ] && grep -q 'ranks disagree: the starting state' "$work/dis.log"; then ok ranks_disagree
else bad ranks_disagree "exit $rc: $(grep distill: "$work/dis.log" | head -3)"; fi

# 8. A rank killed mid-run: mpirun must end the other and exit non-zero instead of hanging.
cfg long 2000 500 200 32 400 "$SGD" "$MLP"
"${MPIRUN[@]}" -np 2 "$D" train --config "$work/long.json" --out "$work/long" > "$work/long.log" 2>&1 &
mp=$!
for _ in $(seq 100); do grep -q '^epoch 1/' "$work/long.log" 2>/dev/null && break; sleep 0.1; done
victim=$(pgrep -P "$mp" | tail -1)
[ -n "$victim" ] && kill -KILL "$victim"
for _ in $(seq 300); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$mp" 2>/dev/null; then
    kill -TERM "$mp"; wait "$mp"; bad dead_rank "mpirun still running 30 s after a rank died"
else
    wait "$mp"; rc=$?
    if [ -n "$victim" ] && [ "$rc" != 0 ]; then ok "dead_rank (mpirun exit $rc)"
    else bad dead_rank "victim '${victim}', mpirun exit $rc"; fi
fi

# 9. A cache of augmented views: each rank draws the views of the whole global batch, so the
# run RNG (shuffle, views) stays the same on every rank and the shards see one process's views.
sed -e 's/"flatten": true/"flatten": false/' \
    -e 's|"model": {"layers": \[|"model": {"layers": [{"type": "flatten"}, |' "$work/odd.json" > "$work/cv_t.json"
sed -e 's|"optimizer":|"data_augment_placeholder": 0, "optimizer":|' "$work/cv_t.json" |
python3 -c "
import json, sys
c = json.load(sys.stdin)
del c['data_augment_placeholder']
c['data']['augment'] = {'shift': 1}
c['teacher'] = {'checkpoint': '$work/cvt/last.safetensors',
                'cache': {'path': '$work/cv.kdc', 'views': 3}}
print(json.dumps(c))" > "$work/cv.json"
if one cv_t cvt --set data.augment=null && one cv cv1 && par 2 cv cv2; then
    if w=$(within "$work/cv1/last.safetensors" "$work/cv2/last.safetensors" 1e-6); then ok "cached_views (worst $w)"
    else bad cached_views "weights differ: $(worst "$work/cv1/last.safetensors" "$work/cv2/last.safetensors")"; fi
else bad cached_views "a run failed: $(tail -2 "$work"/cv*.log)"; fi

# 10. The cache of case 9 built again by 2 ranks: same rows, within float reassociation.
# rows FILE: the header's fields on one line, then every logit of an f32 cache.
rows() {
    python3 - "$1" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
hl = struct.unpack("<I", b[8:12])[0]
h = json.loads(b[16:16 + hl])
n, views, K, C = h["n_rows"], h["views"], h["n_teachers"], h["n_classes"]
pos = 16 + hl + 4 * n + 4
entries, per = n * views, K * C * 4
out = []
while entries:
    k = min(entries, 4096)
    out += struct.unpack("<%df" % (k * K * C), b[pos:pos + k * per])
    pos += k * per + 4
    entries -= k
print(json.dumps({"fields": h["fields"], "n": n, "views": views}))
print(" ".join("%.9g" % x for x in out))
EOF
}
if "${MPIRUN[@]}" -np 2 "$D" logits --config "$work/cv.json" --out "$work/cv2.kdc" --quiet > "$work/cvb.log" 2>&1; then
    rows "$work/cv.kdc" > "$work/rows1" && rows "$work/cv2.kdc" > "$work/rows2"
    if [ "$(head -1 "$work/rows1")" != "$(head -1 "$work/rows2")" ]; then bad cache_parallel_build "headers differ"
    elif ls "$work"/cv2.kdc.part* >/dev/null 2>&1; then bad cache_parallel_build "part files left: $(ls "$work"/cv2.kdc.part*)"
    elif w=$(python3 -c "
a = [float(x) for x in open('$work/rows1').read().split('\n')[1].split()]
b = [float(x) for x in open('$work/rows2').read().split('\n')[1].split()]
assert len(a) == len(b) and a
print('%.3g' % max(abs(x - y) / max(1.0, abs(x)) for x, y in zip(a, b)))") &&
         python3 -c "import sys; sys.exit(0 if $w <= 1e-5 else 1)"; then ok "cache_parallel_build (worst $w)"
    else bad cache_parallel_build "logits differ: $w"; fi
else bad cache_parallel_build "the run failed: $(tail -3 "$work/cvb.log")"; fi
# 11. The loss list's named terms through the step's allreduce into metrics.jsonl.
cfg lt 332 32 200 75 2 "$SGD" "$MLP"
LT=(--set "teacher={\"checkpoint\":\"$work/o1/last.safetensors\"}"
    --set 'distill={"losses":[{"type":"dkd","weight":0.5},{"type":"kl","weight":0.3},{"type":"ce","weight":0.2}]}')
if one lt lt1 "${LT[@]}" && par 2 lt lt2 "${LT[@]}"; then
    if w=$(python3 - "$work/lt1/metrics.jsonl" "$work/lt2/metrics.jsonl" <<'EOF'
import json, sys
a, b = ([json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:3])
keys = ["loss", "soft", "hard", "loss.dkd.tckd", "loss.dkd.nckd", "loss.kl", "loss.ce"]
assert len(a) == len(b) == 2 and all(k in r for r in a + b for k in keys), "keys missing"
# The ranks' sums make the terms the global batch's: under 2 ranks they still add up to the loss
# (within the 7 digits the step's pack keeps of each sum: kd_dist_pack_reduce sends floats).
for r in b:
    dkd = r["loss.dkd.tckd"] + 8 * r["loss.dkd.nckd"]
    want = 0.5 * dkd + 0.3 * r["loss.kl"] + 0.2 * r["loss.ce"]
    assert abs(r["loss"] - want) <= 1e-6 * max(1.0, want), "terms do not add up to the loss: %r vs %r" % (r["loss"], want)
    assert abs(r["soft"] - dkd) <= 1e-6 * max(1.0, dkd), "soft is not the dkd entry's value"
    assert abs(r["hard"] - r["loss.ce"]) <= 1e-6 * max(1.0, r["hard"]), "hard is not ce's"
w = max(abs(x[k] - y[k]) / max(1.0, abs(x[k])) for x, y in zip(a, b) for k in keys)
print("%.3g" % w)
sys.exit(0 if w <= 1e-5 else 1)
EOF
    ); then ok "loss_terms (worst $w)"
    else bad loss_terms "terms differ from one process: $w"; fi
else bad loss_terms "a run failed: $(tail -2 "$work"/lt*.log)"; fi
# 12. A hint feature loss: its gradients (at the student's value and the adapter's) scaled by
# the shard's share as dlogits are, its adapter in the one allreduce.
cfg fh 160 32 200 75 1 "$SGD" "$MLP"
FH=(--set "teacher={\"checkpoint\":\"$work/o1/last.safetensors\"}"
    --set 'distill={"losses":[{"type":"ce","weight":0.5},{"type":"hint","student":0,"teacher":0,"weight":2}]}')
if one fh fh1 "${FH[@]}" && par 2 fh fh2 "${FH[@]}"; then
    if ! grep -q '"adapters.hint.weight"' "$work/fh2/last.safetensors"; then bad feature_hint "no adapter saved"
    elif w=$(within "$work/fh1/last.safetensors" "$work/fh2/last.safetensors" 1e-6); then ok "feature_hint (worst $w)"
    else bad feature_hint "weights differ: $(worst "$work/fh1/last.safetensors" "$work/fh2/last.safetensors")"; fi
else bad feature_hint "a run failed: $(tail -2 "$work"/fh*.log)"; fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
