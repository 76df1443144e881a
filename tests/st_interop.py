#!/usr/bin/env python3
"""st_interop.py - an independent, stdlib-only safetensors implementation for distill's tests.

It shares no code with the C reader/writer: it writes files the way
safetensors.torch.save_file does and checks files written by distill.

  write OUT [--dtype F32|F16|BF16] [--meta]
      Writes the state_dict of nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
      with deterministic values. Layout as the reference writer (safetensors `prepare`):
      tensors sorted by dtype (descending alignment) then by name, offsets contiguous from 0,
      compact JSON with "__metadata__" first when present, header padded with spaces to a
      multiple of 8. --meta adds {"format": "pt"} (what save_model writes); plain save_file
      writes no metadata. Prints, for the C test to compare against:
        tensor NAME v1 v2 ...   the values as stored (after rounding to the dtype)
        logits z0 z1            per sample of INPUTS below, computed here in double
                                precision from the stored weights
  check IN [--require-meta KEY ...] [--dump]
      Validates a file: header length, UTF-8, JSON object without duplicate keys, padding,
      known dtypes, integer shapes, data_offsets == prod(shape) * size, offsets contiguous
      from 0 with no hole or overlap, exact file size, metadata all strings. Prints
      "OK <n> tensors" or the problem (exit status 1). --dump then prints every tensor
      (F32/F16/BF16/I8/U8/I32/I64) as a "tensor NAME v1 v2 ..." line, in offset order.
"""
import json
import struct
import sys

# Sizes and the reference writer's sort rank (its Dtype enum order = increasing alignment).
DTYPES = {
    "BOOL": (1, 0), "U8": (1, 1), "I8": (1, 2), "F8_E5M2": (1, 3), "F8_E4M3": (1, 4),
    "I16": (2, 5), "U16": (2, 6), "F16": (2, 7), "BF16": (2, 8), "I32": (4, 9), "U32": (4, 10),
    "F32": (4, 11), "F64": (8, 12), "I64": (8, 13), "U64": (8, 14),
}
SUPPORTED = ("F32", "F16", "BF16", "I8", "U8", "I32", "I64")

# (name, shape) in torch state_dict order for Linear(4,3), ReLU, Linear(3,2).
LAYOUT = [("0.weight", [3, 4]), ("0.bias", [3]), ("2.weight", [2, 3]), ("2.bias", [2])]
INPUTS = [[0.5, -1.0, 0.25, 2.0], [-0.3, 0.8, -1.5, 0.1], [1.0, 1.0, 1.0, 1.0]]


def model_values():
    """Deterministic values 0.01 * k with a sign pattern so some ReLU inputs are negative."""
    vals, k = {}, 0
    for name, shape in LAYOUT:
        n = 1
        for d in shape:
            n *= d
        v = []
        for _ in range(n):
            k += 1
            v.append(0.01 * k * (1 if (k * 7) % 5 < 3 else -1))
        vals[name] = v
    return vals


def f32_round(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_bits(x):
    """float32 -> bfloat16 with round-to-nearest-even (finite inputs only)."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    lower = u & 0xFFFF
    hi = u >> 16
    if lower > 0x8000 or (lower == 0x8000 and (hi & 1)):
        hi += 1
    return hi & 0xFFFF


def encode(values, dtype):
    """Returns (bytes, the values as stored)."""
    if dtype == "F32":
        b = struct.pack("<%df" % len(values), *values)
        return b, list(struct.unpack("<%df" % len(values), b))
    if dtype == "F16":  # struct 'e' is IEEE binary16, rounding to nearest even
        b = struct.pack("<%de" % len(values), *values)
        return b, list(struct.unpack("<%de" % len(values), b))
    if dtype == "BF16":
        bits = [bf16_bits(v) for v in values]
        b = struct.pack("<%dH" % len(bits), *bits)
        stored = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in bits]
        return b, stored
    raise SystemExit("unsupported --dtype " + dtype)


def build(dtype, with_meta):
    vals = model_values()
    entries = []
    stored = {}
    for name, shape in LAYOUT:
        data, st = encode(vals[name], dtype)
        stored[name] = st
        entries.append((name, dtype, shape, data))
    # The reference writer: descending dtype rank, then name (byte order).
    entries.sort(key=lambda e: (-DTYPES[e[1]][1], e[0].encode("utf-8")))
    header = {}
    if with_meta:
        header["__metadata__"] = {"format": "pt"}
    offset = 0
    for name, dt, shape, data in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    blob = struct.pack("<Q", len(hb)) + hb + b"".join(e[3] for e in entries)
    return blob, stored


def cmd_write(args):
    out = args[0]
    dtype = "F32"
    if "--dtype" in args:
        dtype = args[args.index("--dtype") + 1]
    blob, w = build(dtype, "--meta" in args)
    with open(out, "wb") as f:
        f.write(blob)
    for name, _ in LAYOUT:
        print("tensor %s %s" % (name, " ".join(repr(v) for v in w[name])))
    for x in INPUTS:
        h = []
        for o in range(3):
            s = w["0.bias"][o] + sum(w["0.weight"][o * 4 + i] * x[i] for i in range(4))
            h.append(max(s, 0.0))
        z = [w["2.bias"][o] + sum(w["2.weight"][o * 3 + i] * h[i] for i in range(3))
             for o in range(2)]
        print("logits %s" % " ".join(repr(v) for v in z))
    return 0


class Bad(Exception):
    pass


def no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Bad("duplicate key %r in header" % k)
        d[k] = v
    return d


def parse(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise Bad("file shorter than 8 bytes")
    n = struct.unpack("<Q", blob[:8])[0]
    if n > 100 * 1024 * 1024 or 8 + n > len(blob):
        raise Bad("header length %d invalid for a %d-byte file" % (n, len(blob)))
    if (8 + n) % 8:
        raise Bad("header length %d: data section not 8-byte aligned" % n)
    raw = blob[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Bad("header is not UTF-8: %s" % e)
    if not text.startswith("{"):
        raise Bad("header does not start with '{'")
    try:
        header = json.loads(text.rstrip(" "), object_pairs_hook=no_dups)
    except ValueError as e:
        raise Bad("header is not valid JSON: %s" % e)
    if not isinstance(header, dict):
        raise Bad("header is not an object")
    meta = header.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise Bad("__metadata__ must map strings to strings")
    tensors = []
    for name, e in header.items():
        if not isinstance(e, dict) or sorted(e) != ["data_offsets", "dtype", "shape"]:
            raise Bad("tensor %s: entry must have exactly dtype, shape, data_offsets" % name)
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in DTYPES:
            raise Bad("tensor %s: unknown dtype %r" % (name, dt))
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise Bad("tensor %s: bad shape %r" % (name, shape))
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)):
            raise Bad("tensor %s: bad data_offsets %r" % (name, offs))
        numel = 1
        for d in shape:
            numel *= d
        if offs[1] - offs[0] != numel * DTYPES[dt][0]:
            raise Bad("tensor %s: offsets %r do not match shape %r of %s" % (name, offs, shape, dt))
        tensors.append((offs[0], offs[1], name, dt, shape))
    tensors.sort()
    pos = 0
    for b, e, name, _, _ in tensors:
        if b != pos:
            raise Bad("tensor %s: begins at %d, expected %d" % (name, b, pos))
        pos = e
    if 8 + n + pos != len(blob):
        raise Bad("file is %d bytes, expected %d" % (len(blob), 8 + n + pos))
    return blob, n, meta or {}, {t[2]: t for t in tensors}


def values(blob, n, b, e, dt):
    data = blob[8 + n + b:8 + n + e]
    fmt = {"F32": "f", "F16": "e", "I8": "b", "U8": "B", "I32": "i", "I64": "q"}
    if dt == "BF16":
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0]
                for h in struct.unpack("<%dH" % (len(data) // 2), data)]
    if dt in fmt:
        size = DTYPES[dt][0]
        return list(struct.unpack("<%d%s" % (len(data) // size, fmt[dt]), data))
    raise Bad("cannot dump dtype %s" % dt)


def cmd_check(args):
    path = args[0]
    dump = False
    try:
        blob, n, meta, tensors = parse(path)
        i = 1
        while i < len(args):
            if args[i] == "--require-meta":
                if args[i + 1] not in meta:
                    raise Bad("metadata key %r missing" % args[i + 1])
                i += 2
            elif args[i] == "--dump":
                dump = True
                i += 1
            else:
                raise SystemExit("unknown option " + args[i])
        lines = []
        if dump:
            for b, e, name, dt, _ in sorted(tensors.values()):
                vals = values(blob, n, b, e, dt)
                lines.append("tensor %s %s" % (name, " ".join(repr(v) for v in vals)))
    except Bad as e:
        print("%s: %s" % (path, e))
        return 1
    print("OK %d tensors" % len(tensors))
    for line in lines:
        print(line)
    return 0


def main(argv):
    cmds = {"write": cmd_write, "check": cmd_check}
    if len(argv) < 3 or argv[1] not in cmds:
        sys.stderr.write(__doc__)
        return 2
    return cmds[argv[1]](argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
