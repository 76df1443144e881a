#!/usr/bin/env bash
# onnx_fullsize.sh - the full-size ONNX-teacher check (issue 26), not run by CI (the files are
# ~100 MB): torchvision's resnet18 (widths 64..512) and the whole mobilenet_v2 (width 1.0),
# adapted to 28x28 grey images and exported by torch.onnx.export at opset 13 and 17 with a
# dynamic batch (tests/onnx_fixtures.py full), run by ONNX Runtime (tests/export/ort_run.js) and
# by distill's ONNX reader (build/bench/bench_ort logits: the model a teacher path gets) on the
# same first N Fashion-MNIST test images, preprocessed as the models expect
# ((u8 / 255 - 0.286) / 0.353). Every logit must satisfy |a - b| <= 1e-4 (1 + |b|) with
# b = ONNX Runtime's; prints, per model, the largest |a - b| and |a - b| / (1 + |b|) against
# ONNX Runtime and against torch, and how much ORT's logits vary over the images. Exit 0 when every model passes, 1 otherwise.
#   bash tests/onnx_fullsize.sh [DIR] [N]     DIR default /tmp/distill-onnx-full, N 1000
# Needs Debian's python3-torch and python3-torchvision, ONNX Runtime
# (bash tests/export/ort_install.sh) and `make build/bench/bench_ort`.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/distill-onnx-full}
N=${2:-1000}
ORT=${KD_ORT_DIR:-$HOME/.cache/distill-ort/1.30.0}/node_modules/onnxruntime-node
[ -d "$ORT" ] || { echo "onnx_fullsize: ONNX Runtime missing: bash tests/export/ort_install.sh" >&2; exit 1; }
make -s build/bench/bench_ort
mkdir -p "$DIR"
if [ ! -r "$DIR/input.f32" ] || [ ! -r "$DIR/mobilenet_v2_o17.onnx" ] ||
   [ "$(stat -c %s "$DIR/input.f32")" != $((N * 784 * 4)) ]; then
    /usr/bin/python3 tests/onnx_fixtures.py full "$DIR" "$N"
fi
status=0
for m in resnet18_o13 resnet18_o17 mobilenet_v2_o13 mobilenet_v2_o17; do
    KD_ORT_MODULE="$ORT" node tests/export/ort_run.js "$DIR/$m.onnx" "$DIR/input.idx" --n "$N" \
        --logits "$DIR/$m.ort.f32" > /dev/null
    build/bench/bench_ort logits "$DIR/$m.onnx" "$DIR" --n "$N" --threads 2 \
        --logits "$DIR/$m.distill.f32"
    /usr/bin/python3 - "$DIR/$m" "$N" <<'EOF' || status=1
import sys
import numpy as np
base, n = sys.argv[1], int(sys.argv[2])
a = np.fromfile(base + ".distill.f32", "<f4").astype(np.float64)
line = "%-17s %d images:" % (base.rsplit("/", 1)[-1], n)
ok = True
for ref in ("ort", "torch"):
    b = np.fromfile(base + "." + ref + ".f32", "<f4").astype(np.float64)
    assert a.size == b.size and a.size % n == 0, "%s: %d logits vs %d" % (ref, a.size, b.size)
    d = np.abs(a - b)
    line += "  vs %s max abs %.2e, max rel %.2e" % (ref, d.max(), (d / (1 + np.abs(b))).max())
    if ref == "ort":
        # how much the logits depend on the image (a constant output would prove nothing)
        line += " [ORT: max |b| %.2f, sd over images %.2f]" % (
            np.abs(b).max(), b.reshape(n, -1).std(axis=0).mean())
        bad = np.flatnonzero(d > 1e-4 * (1 + np.abs(b)))
        ok = bad.size == 0
        if not ok:
            c = a.size // n
            line += " (%d logits over, first: image %d class %d)" % (bad.size, bad[0] // c, bad[0] % c)
print(line + ("  ok" if ok else "  FAIL"))
sys.exit(0 if ok else 1)
EOF
done
exit $status
