#!/usr/bin/env bash
# make_corpus.sh - writes the seed corpora of the fuzz targets into OUTDIR/<target>/, from the
# fixtures the tests use (nothing binary is committed): checkpoints that ./distill trains and
# exports on a small generated IDX set (a CNN with conv, batch norm, pooling, layer norm,
# dropout; training state included), hand-written safetensors of every dtype, IDX files of
# every element type raw and gzip (and the first images of Fashion-MNIST when installed), CSV
# tables (header, string labels, quotes, TSV, CRLF, BOM, gzip), the configs/ files with --set
# overrides, PNGs of every colour type and bit depth, JPEGs from seed_images, and soft-target
# caches (f32, f16, top-k) written here by a second implementation of kd_cache.h's layout.
# Each target reads a leading option byte (see tests/fuzz/fuzz_*.c), which the seeds carry.
#   usage: make_corpus.sh OUTDIR DISTILL SEED_IMAGES
set -euo pipefail
[ $# -eq 3 ] || { sed -n 2,10p "$0"; exit 2; }
out=$1 distill=$(realpath "$2") seed_images=$(realpath "$3")
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$out"
mkdir -p "$out"/{safetensors,idx,csv,config,image,cache,onnx}
# The ONNX seeds: the committed fixtures (tests/onnx_fixtures.py) small enough for max_len.
find "$root/tests/fixtures/onnx" -name "*.onnx" -size -16k -exec cp {} "$out/onnx/" \;
work=$(mktemp -d /tmp/kd-corpus.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- generated data files (python3, standard library only) ----
python3 - "$out" "$work" <<'PY'
import gzip, json, os, struct, sys, zlib
out, work = sys.argv[1], sys.argv[2]

def put(target, name, data, prefix=b""):
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(prefix + data)

# IDX: every element type; images [N, H, W] and labels [N]; the fuzz target's byte 0 is the
# mode (even: one file; odd: byte 1 = labels length, then labels, then images).
def idx(type_code, dims, payload):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload
imgs = idx(0x08, [3, 4, 4], bytes(range(48)))
labels = idx(0x08, [3], bytes([0, 1, 2]))
for name, data in [
    ("u8-images", imgs), ("u8-labels", labels),
    ("i8", idx(0x09, [2, 3], bytes([1, 255, 3, 128, 5, 6]))),
    ("i16", idx(0x0B, [2, 2], struct.pack(">4h", 1, -2, 300, -32768))),
    ("i32", idx(0x0C, [4], struct.pack(">4i", 0, 1, -1, 2**31 - 1))),
    ("f32", idx(0x0D, [2, 2], struct.pack(">4f", 0.5, -1.25, 3e38, 1e-38))),
    ("f64", idx(0x0E, [1, 3], struct.pack(">3d", 0.1, -2.5, 1e300))),
    ("rank4", idx(0x08, [2, 1, 2, 2], bytes(8))),
]:
    put("idx", name, data, b"\x00")
    put("idx", name + ".gz", gzip.compress(data, mtime=0), b"\x00")
put("idx", "pair", bytes([len(labels)]) + labels + imgs, b"\x01")
put("idx", "pair.gz", bytes([len(gzip.compress(labels, mtime=0))]) + gzip.compress(labels, mtime=0)
    + gzip.compress(imgs, mtime=0), b"\x03")
fm = "/usr/share/datasets/fashion-mnist"
if os.path.exists(fm + "/train-images-idx3-ubyte.gz"):
    with gzip.open(fm + "/train-images-idx3-ubyte.gz") as f:
        head = f.read(16 + 3 * 784)
    with gzip.open(fm + "/train-labels-idx1-ubyte.gz") as f:
        lhead = f.read(8 + 3)
    fimg = head[:4] + struct.pack(">I", 3) + head[8:]
    flab = lhead[:4] + struct.pack(">I", 3) + lhead[8:]
    put("idx", "fashion-mnist-3", gzip.compress(fimg, mtime=0), b"\x00")
    put("idx", "fashion-mnist-3-pair", bytes([len(flab)]) + flab + fimg, b"\x01")

# A small labelled IDX set for training the seed checkpoints: 48 images 1x6x6, 3 classes.
n = 48
px = bytearray()
for i in range(n):
    c = i % 3
    px += bytes(((r * 6 + k) * (c + 1) * 7 + i) % 256 for r in range(6) for k in range(6))
with open(os.path.join(work, "train-images.idx"), "wb") as f:
    f.write(idx(0x08, [n, 6, 6], bytes(px)))
with open(os.path.join(work, "train-labels.idx"), "wb") as f:
    f.write(idx(0x08, [n], bytes(i % 3 for i in range(n))))

# CSV: byte 0 = options (bits 0-1 delimiter , ; tab space; 2-3 label column "", "0", "none",
# "label"; 4-5 header auto/no/yes; 7 n_classes 3).
csvs = [
    (0x00, b"1,2,3,0\n4,5,6,1\n7,8,9,2\n"),
    (0x00, b"a,b,label\n1.5,-2e3,cat\n0,1,dog\n"),
    (0x0C, b"x,y,label\n1,2,0\n3,4,1\n"),
    (0x01, b"1;2;0\r\n3;4;1\r\n"),
    (0x02, b"1\t2\t1\n3\t4\t0\n"),
    (0x00, b"\xef\xbb\xbf\"q,1\",2,3\n\"x\"\"y\",5,6\n"),
    (0x08, b"1,2\n3,4\n"),
    (0x04, b"0,1.0,2.0\n2,3.0,4.0\n"),
    (0x80, b"0.1,0.2,2\n0.3,0.4,1\n"),
    (0x03, b"1 2 3\n4 5 6\n"),
]
for i, (opt, text) in enumerate(csvs):
    put("csv", "csv-%02d" % i, text, bytes([opt]))
    put("csv", "csv-%02d.gz" % i, gzip.compress(text, mtime=0), bytes([opt]))

# safetensors written by hand: every dtype, zero-size and scalar tensors, metadata.
def st(tensors, meta=None):
    head, data = {}, b""
    for name, dt, shape, raw in tensors:
        head[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta is not None:
        head["__metadata__"] = meta
    h = json.dumps(head, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data
put("safetensors", "dtypes", st([
    ("a", "F32", [2], struct.pack("<2f", 1.0, -2.0)), ("b", "F16", [2], b"\x00\x3c\x00\xc0"),
    ("c", "BF16", [1], b"\x80\x3f"), ("d", "I8", [3], b"\x01\xff\x7f"), ("e", "U8", [1], b"\xff"),
    ("f", "I32", [1], struct.pack("<i", -5)), ("g", "I64", [], struct.pack("<q", 7)),
    ("h", "F32", [0, 3], b"")], {"format": "pt"}))
put("safetensors", "empty", st([]))
put("safetensors", "arch-dense", st([
    ("0.weight", "F32", [2, 3], struct.pack("<6f", *range(6))), ("0.bias", "F32", [2], bytes(8))],
    {"format": "distill/1", "arch": json.dumps({"input": [3], "layers": [{"type": "dense", "units": 2}]}),
     "classes": "[\"a\",\"b\"]", "preprocess": json.dumps({"scale": 1, "mean": [0], "std": [1], "flatten": False})}))

# Soft-target caches (layout: include/kd_cache.h), byte 0 the fuzz target's option (bit 0:
# repair checksums, bit 1: read through a file). Logits 5 sin(1.3 k + 0.7 s + 2.1 v + 0.9 c).
import math
def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]
def cache(n_rows, C, nt, views, dtype, top_k=0, T=0.0):
    idx = [3 * r + 1 for r in range(n_rows)]
    head = {"format": "distill-cache/1", "n_rows": n_rows, "n_classes": C, "n_teachers": nt,
            "dtype": dtype, "top_k": top_k, "temperature": T if top_k else 0, "views": views,
            "view_seed": 12345, "weights": [1 / nt] * nt, "teacher_val_acc": [0.9] + [None] * (nt - 1),
            "ensemble_val_acc": None,
            "fields": {"teacher[0].checkpoint_hash": "crc32:01234567 adler32:89abcdef size:100",
                       "data.train": "train-images.idx"}}
    h = json.dumps(head, separators=(",", ":")).encode()
    fmt = "<%de" if dtype == "f16" else "<%df"
    entries = []
    for v in range(views):
        for s in idx:
            e = b""
            for k in range(nt):
                z = [f32(5 * math.sin(1.3 * k + 0.7 * s + 2.1 * v + 0.9 * c)) for c in range(C)]
                if not top_k:
                    e += struct.pack(fmt % C, *z)
                    continue
                order = sorted(range(C), key=lambda c: (-z[c], c))
                kept, rest = order[:top_k], order[top_k:]
                mx = max(z[c] / T for c in rest)
                lse = mx + math.log(sum(math.exp(z[c] / T - mx) for c in rest))
                e += struct.pack("<%dH" % top_k, *kept) + struct.pack(fmt % top_k, *[z[c] for c in kept])
                e += struct.pack("<f", lse)
            entries.append(e)
    index = struct.pack("<%dI" % n_rows, *idx)
    body = b""
    for b in range(0, len(entries), 4096):
        block = b"".join(entries[b:b + 4096])
        body += block + struct.pack("<I", zlib.crc32(block))
    return (b"KDCACHE1" + struct.pack("<II", len(h), zlib.crc32(h)) + h + index
            + struct.pack("<I", zlib.crc32(index)) + body)
for name, data in [("f32", cache(4, 3, 2, 2, "f32")), ("f16", cache(3, 5, 1, 1, "f16")),
                   ("topk-f16", cache(5, 6, 2, 2, "f16", 2, 2.0)),
                   ("topk-f32", cache(3, 4, 3, 1, "f32", 3, 1.0))]:
    for opt in (0, 1, 2):
        put("cache", "%s-%d" % (name, opt), data, bytes([opt]))

# PNG: every colour type and bit depth stb_image reads, interlaced too; byte 0 = options.
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
def png(w, h, depth, ctype, rows, plte=None, trns=None, interlace=0):
    raw = b"".join(b"\x00" + r for r in rows)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
    if plte: body += chunk(b"PLTE", plte)
    if trns: body += chunk(b"tRNS", trns)
    return body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
W = H = 5
for name, data in [
    ("gray8", png(W, H, 8, 0, [bytes((x * 50 + y) % 256 for x in range(W)) for y in range(H)])),
    ("gray16", png(W, H, 16, 0, [b"".join(struct.pack(">H", x * 9000 + y) for x in range(W)) for y in range(H)])),
    ("gray1", png(8, 2, 1, 0, [b"\xa5", b"\x5a"])),
    ("gray4", png(4, 2, 4, 0, [b"\x12\x34", b"\xfe\xdc"])),
    ("rgb8", png(W, H, 8, 2, [bytes((x * 40 + c * 80 + y) % 256 for x in range(W) for c in range(3)) for y in range(H)])),
    ("rgb16", png(2, 2, 16, 2, [bytes(range(12)), bytes(range(12, 24))])),
    ("graya8", png(W, H, 8, 4, [bytes((x * 30 + y) % 256 for x in range(W) for c in range(2)) for y in range(H)])),
    ("rgba8", png(W, H, 8, 6, [bytes((x * 20 + c * 60) % 256 for x in range(W) for c in range(4)) for y in range(H)])),
    ("palette", png(4, 2, 2, 3, [b"\x1b", b"\xe4"], plte=bytes(range(12)), trns=b"\x00\x80")),
    ("interlaced", png(9, 9, 8, 0, [bytes(range(9))] * 9, interlace=1)),
]:
    put("image", name + ".png", data, b"\x00")
    put("image", name + "-rgb.png", data, b"\x13")
PY

# ---- JPEG seeds (stb_image_write) ----
jpgs="$work/jpg"
mkdir -p "$jpgs"
"$seed_images" "$jpgs"
for f in "$jpgs"/*.jpg; do
    { printf '\x00'; cat "$f"; } > "$out/image/$(basename "$f")"
    { printf '\x95'; cat "$f"; } > "$out/image/rgb-$(basename "$f")"
done

# ---- configs: the repository's, and overrides after NUL bytes ----
for f in "$root"/configs/*.json; do cp "$f" "$out/config/"; done
{ cat "$root/configs/tiny.json"; printf '\0train.epochs=3\0model.layers[0].units=8\0teacher=null'; } \
    > "$out/config/tiny-overrides"
{ printf '{"data":{"train":{"path":"x.csv","label_column":"y","delimiter":";"}},'
  printf '"model":{"layers":[{"type":"dense","units":2}]}}'
  printf '\0data.train.header=true\0optimizer.name=adamw\0schedule={"name":"step","step_epochs":1}'; } \
    > "$out/config/csv-overrides"

# ---- checkpoints trained and exported by distill ----
cat > "$work/seed.json" <<'EOF'
{
  "data": {
    "train": {"format": "idx", "path": "train-images.idx", "labels": "train-labels.idx"},
    "validation_split": 12,
    "preprocess": {"mean": 0.5, "std": 0.25}
  },
  "model": {
    "input": [1, 6, 6],
    "layers": [
      {"type": "conv2d", "channels": 2, "kernel": 3, "padding": 1},
      {"type": "batchnorm"}, {"type": "relu"},
      {"type": "maxpool2d", "kernel": 2},
      {"type": "layernorm"}, {"type": "flatten"},
      {"type": "dropout", "p": 0.1},
      {"type": "dense", "units": 3}
    ]
  },
  "optimizer": {"name": "adam", "lr": 0.01},
  "train": {"epochs": 1, "batch_size": 8, "seed": 3, "threads": 1}
}
EOF
(cd "$work" && "$distill" train --config seed.json --out run --quiet >/dev/null)
cp "$work/run/last.safetensors" "$out/safetensors/train-last"
cp "$work/run/best.safetensors" "$out/safetensors/train-best"
for dt in f32 f16 bf16 int8; do
    "$distill" export "$work/run/last.safetensors" "$work/export-$dt.safetensors" --dtype "$dt" >/dev/null
    cp "$work/export-$dt.safetensors" "$out/safetensors/export-$dt"
done
# A full-integer model of the same network without its layer norm.
sed -e 's/{"type": "layernorm"}, //' "$work/seed.json" > "$work/qint.json"
(cd "$work" && "$distill" train --config qint.json --out qint --quiet >/dev/null &&
    "$distill" export qint/last.safetensors qint8.safetensors --dtype qint8 --calibrate 20 \
        --config qint.json --split validation >/dev/null)
cp "$work/qint8.safetensors" "$out/safetensors/export-qint8"
# The same file with one bad number each, which the reader must refuse (exit 3): scale 0, NaN
# and negative; zero points 128 and -129; shifts 31 and -32; multipliers 2^30 - 1 and negative.
python3 - "$work/qint8.safetensors" "$out/safetensors" <<'PY'
import json, math, struct, sys
blob = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
head = json.loads(blob[8:8 + n])
layer = next(k[:-len(".shift")] for k in head if k.endswith(".shift"))
def spoil(name, tensor, fmt, value):
    begin = 8 + n + head[tensor]["data_offsets"][0]
    data = bytearray(blob)
    data[begin:begin + 4] = struct.pack(fmt, value)
    open(f"{sys.argv[2]}/qint8-bad-{name}", "wb").write(bytes(data))
for name, tensor, fmt, value in [
        ("scale-0", "qint8.scale", "<f", 0.0), ("scale-nan", "qint8.scale", "<f", math.nan),
        ("scale-negative", "qint8.scale", "<f", -0.5),
        ("zero-point-128", "qint8.zero_point", "<i", 128),
        ("zero-point-minus-129", "qint8.zero_point", "<i", -129),
        ("shift-31", layer + ".shift", "<i", 31), ("shift-minus-32", layer + ".shift", "<i", -32),
        ("multiplier-low", layer + ".multiplier", "<i", 2**30 - 1),
        ("multiplier-negative", layer + ".multiplier", "<i", -2**30)]:
    spoil(name, tensor, fmt, value)
PY
# A mid-epoch checkpoint (with the running sums) through the trainer's stop hook.
(cd "$work" && KD_TRAIN_STOP_AFTER_STEPS=2 "$distill" train --config seed.json --out mid --quiet \
    >/dev/null 2>&1 || true)
[ -f "$work/mid/last.safetensors" ] && cp "$work/mid/last.safetensors" "$out/safetensors/train-mid"
cp "$work/run/config.json" "$out/config/resolved.json"
# A graph model (names, from-edges, add, concat): its arch string drives the edge parser.
sed -e 's/{"type": "conv2d", "channels": 2, "kernel": 3, "padding": 1},/{"type": "conv2d", "name": "stem.0", "channels": 2, "kernel": 3, "padding": 1},/' \
    -e 's/{"type": "batchnorm"}, {"type": "relu"},/{"type": "batchnorm"}, {"type": "relu", "name": "a"}, {"type": "add", "from": ["a", "stem.0", 2]}, {"type": "concat", "from": [3, "input"]},/' \
    "$work/seed.json" > "$work/graph.json"
(cd "$work" && "$distill" train --config graph.json --out graph --quiet >/dev/null)
cp "$work/graph/last.safetensors" "$out/safetensors/train-graph"
cp "$work/graph/config.json" "$out/config/resolved-graph.json"

for t in safetensors idx csv config image cache; do
    printf '%-12s %3d seeds, %6d bytes\n' "$t" "$(ls "$out/$t" | wc -l)" "$(cat "$out/$t"/* | wc -c)"
done
