#!/usr/bin/env python3
"""cnn_reference.py - a small CNN checkpoint in PyTorch layout and its logits, stdlib only.

  write OUT
      Writes the state_dict of
        nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))
      for a 1x4x4 input as a safetensors file, laid out as safetensors.torch.save_file does
      (tensors sorted by dtype alignment, then name; num_batches_tracked an I64 scalar; no
      metadata, so the architecture must come from elsewhere). Weights and running statistics
      are deterministic. Then prints, for the C test:
        input v0 ... v15     one line per sample
        logits z0 z1 z2      eval-mode logits for that sample, computed here in double
                             precision with plain loops from the stored float32 values
"""
import json
import struct
import sys

EPS = 1e-5
NUM_BATCHES = 7
# (name, shape) in torch's state_dict order.
LAYOUT = [
    ("0.weight", [2, 1, 3, 3]), ("0.bias", [2]),
    ("1.weight", [2]), ("1.bias", [2]), ("1.running_mean", [2]), ("1.running_var", [2]),
    ("5.weight", [3, 8]), ("5.bias", [3]),
]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def values():
    """Deterministic float32 values; running_var stays positive, signs vary elsewhere."""
    v = {}
    k = 0
    for name, shape in LAYOUT:
        n = 1
        for d in shape:
            n *= d
        vals = []
        for _ in range(n):
            k += 1
            if name == "1.running_var":
                x = 0.5 + 0.3 * len(vals)
            elif name == "1.running_mean":
                x = 0.2 - 0.35 * len(vals)
            elif name == "1.weight":
                x = 1.25 - 0.5 * len(vals)
            else:
                x = 0.05 * ((k * 37) % 23 - 11)
            vals.append(f32(x))
        v[name] = vals
    return v


def inputs():
    """Three samples of 16 values each, a fixed pseudo-random pattern in [-1, 1]."""
    out = []
    s = 12345
    for _ in range(3):
        row = []
        for _ in range(16):
            s = (s * 1103515245 + 12345) % (1 << 31)
            row.append(f32(s / float(1 << 30) - 1.0))
        out.append(row)
    return out


def forward(w, x):
    # Conv2d(1, 2, 3, padding=1): 4x4 -> 2x4x4
    conv = [[[0.0] * 4 for _ in range(4)] for _ in range(2)]
    for o in range(2):
        for i in range(4):
            for j in range(4):
                acc = w["0.bias"][o]
                for ki in range(3):
                    for kj in range(3):
                        r, c = i + ki - 1, j + kj - 1
                        if 0 <= r < 4 and 0 <= c < 4:
                            acc += w["0.weight"][o * 9 + ki * 3 + kj] * x[r * 4 + c]
                conv[o][i][j] = acc
    # BatchNorm2d (eval: running statistics), then ReLU.
    for o in range(2):
        inv = 1.0 / (w["1.running_var"][o] + EPS) ** 0.5
        for i in range(4):
            for j in range(4):
                h = (conv[o][i][j] - w["1.running_mean"][o]) * inv
                conv[o][i][j] = max(h * w["1.weight"][o] + w["1.bias"][o], 0.0)
    # MaxPool2d(2): 2x4x4 -> 2x2x2; Flatten in C, H, W order.
    flat = []
    for o in range(2):
        for i in range(2):
            for j in range(2):
                flat.append(max(conv[o][2 * i + a][2 * j + b] for a in range(2) for b in range(2)))
    # Linear(8, 3)
    return [w["5.bias"][o] + sum(w["5.weight"][o * 8 + k] * flat[k] for k in range(8))
            for o in range(3)]


def write(path, w):
    entries = []
    for name, shape in LAYOUT:
        entries.append((name, "F32", shape, struct.pack("<%df" % len(w[name]), *w[name])))
    entries.append(("1.num_batches_tracked", "I64", [], struct.pack("<q", NUM_BATCHES)))
    # save_file's order: I64 (8-byte alignment) before F32, then by name.
    rank = {"I64": 0, "F32": 1}
    entries.sort(key=lambda e: (rank[e[1]], e[0].encode("utf-8")))
    header, off = {}, 0
    for name, dt, shape, data in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(e[3] for e in entries))


def main(argv):
    if len(argv) != 3 or argv[1] != "write":
        sys.stderr.write("usage: cnn_reference.py write OUT\n")
        return 2
    w = values()
    write(argv[2], w)
    for x in inputs():
        print("input %s" % " ".join(repr(v) for v in x))
        print("logits %s" % " ".join(repr(v) for v in forward(w, x)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
