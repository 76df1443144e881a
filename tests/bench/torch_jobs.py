"""torch_jobs.py - PyTorch's side of `make bench-torch` (tests/bench/side_by_side.py): the same
job as tests/bench/bench_jobs.c, with the same arguments, architecture (distill's layer list,
built as the torch.nn.Sequential distill's checkpoints map to), data and optimizer, one job per
process so the driver reads its peak RSS. Needs Debian's python3-torch; the tests never run it.

  torch_jobs.py KIND ARCH [TEACHER_ARCH] [--steps N] [--batch B] [--threads T] [--data DIR]
                [--alpha A] [--temperature T]

Prints one line: result samples_per_s=S us_per_sample=U steps=N
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Merge(nn.Module):
    """add (summed in list order) or concat (along channels / features)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, *xs):
        if self.kind == "concat":
            return torch.cat(xs, 1)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        return y


class Graph(nn.Module):
    """distill's layer list with its from-edges: each layer reads earlier values (0 = the input),
    and a value is dropped after its last reader, as distill's inference plan does."""

    def __init__(self, mods, srcs):
        super().__init__()
        self.mods = nn.ModuleList(mods)
        self.srcs = srcs
        self.last = {}
        for i, s in enumerate(srcs):
            for v in s:
                self.last[v] = i

    def forward(self, x):
        vals = [x] + [None] * len(self.mods)
        for i, (m, s) in enumerate(zip(self.mods, self.srcs)):
            vals[i + 1] = m(*[vals[v] for v in s])
            for v in set(s):
                if self.last[v] == i:
                    vals[v] = None
        return vals[-1]


def layer_module(spec, shape, shapes):
    """The torch module of one layer and its output shape; shapes are its inputs'."""
    t = spec["type"]
    if t == "dense":
        return nn.Linear(shape[0], spec["units"], bias=spec.get("bias", True)), [spec["units"]]
    if t == "conv2d":
        k = spec["kernel"]
        kh, kw = (k, k) if isinstance(k, int) else k
        s, p = spec.get("stride", 1), spec.get("padding", 0)
        mod = nn.Conv2d(shape[0], spec["channels"], (kh, kw), s, p, groups=spec.get("groups", 1),
                        bias=spec.get("bias", True))
        return mod, [spec["channels"], (shape[1] + 2 * p - kh) // s + 1,
                     (shape[2] + 2 * p - kw) // s + 1]
    if t in ("maxpool2d", "avgpool2d"):
        k = spec["kernel"]
        kh, kw = (k, k) if isinstance(k, int) else k
        s, p = spec.get("stride"), spec.get("padding", 0)
        sh, sw = (s, s) if s else (kh, kw)
        cls = nn.MaxPool2d if t == "maxpool2d" else nn.AvgPool2d
        return cls((kh, kw), (sh, sw), p), [shape[0], (shape[1] + 2 * p - kh) // sh + 1,
                                            (shape[2] + 2 * p - kw) // sw + 1]
    if t == "batchnorm":
        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return cls(shape[0], eps=spec.get("eps", 1e-5), momentum=spec.get("momentum", 0.1)), shape
    if t == "layernorm":
        return nn.LayerNorm(shape[-1], eps=spec.get("eps", 1e-5)), shape
    if t == "flatten":
        n = 1
        for d in shape:
            n *= d
        return nn.Flatten(), [n]
    if t == "global_avgpool":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), [shape[0]]
    if t == "dropout":
        return nn.Dropout(spec.get("p", 0.5)), shape
    if t == "leaky_relu":
        return nn.LeakyReLU(spec.get("slope", 0.01)), shape
    if t == "add":
        return Merge("add"), shape
    if t == "concat":
        return Merge("concat"), [sum(x[0] for x in shapes)] + list(shape[1:])
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
            "relu6": nn.ReLU6, "hardswish": nn.Hardswish}[t](), shape


def build(arch):
    """distill's layer list as torch modules: an nn.Sequential for a chain (the same indices,
    so state_dicts line up), else a Graph that follows the from-edges."""
    shapes, names, mods, srcs = [list(arch["input"])], {"input": 0}, [], []
    for i, spec in enumerate(arch["layers"]):
        frm = spec.get("from", i - 1 if i else "input")
        frm = frm if isinstance(frm, list) else [frm]
        src = [names[f] if isinstance(f, str) else f + 1 for f in frm]
        mod, out = layer_module(spec, shapes[src[0]], [shapes[v] for v in src])
        mods.append(mod)
        srcs.append(src)
        shapes.append(out)
        if "name" in spec:
            names[spec["name"]] = i + 1
    if all(s == [i] for i, s in enumerate(srcs)):
        return nn.Sequential(*mods)
    return Graph(mods, srcs)


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def load_data(args, shape, n, n_classes):
    """The first n Fashion-MNIST training images, scaled and normalised as the configs do
    (x / 255 - 0.286) / 0.353; seeded noise when the files are missing (as bench_jobs.c)."""
    per = 1
    for d in shape:
        per *= d
    try:
        dims, img = idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
        _, lab = idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
        if dims[1] * dims[2] != per or dims[0] < n:
            raise ValueError("shape")
        x = torch.frombuffer(bytearray(img[:n * per]), dtype=torch.uint8).float()
        x = (x / 255.0 - 0.286) / 0.353
        y = torch.frombuffer(bytearray(lab[:n]), dtype=torch.uint8).long()
    except (OSError, ValueError):
        print("torch_jobs: no data in %s, using noise" % args.data, file=sys.stderr)
        g = torch.Generator().manual_seed(11)
        x = torch.randn(n * per, generator=g)
        y = torch.arange(n) % n_classes
    return x.reshape([n] + list(shape)).contiguous(), y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["train", "distill", "infer", "latency"])
    ap.add_argument("arch")
    ap.add_argument("teacher", nargs="?")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    arch = json.loads(args.arch)
    model = build(arch)
    B = 1 if args.kind == "latency" else args.batch
    n_classes = arch["layers"][-1].get("units", 10)
    n_b = min(args.steps, 20)
    x, y = load_data(args, arch["input"], n_b * B, n_classes)
    xs, ys = x.split(B), y.split(B)

    if args.kind == "latency":
        model.eval()
        ts = []
        with torch.inference_mode():
            for i in range(-100, args.steps):
                t0 = time.perf_counter()
                model(xs[(i + 100) % len(xs)])
                if i >= 0:
                    ts.append(time.perf_counter() - t0)
        ts.sort()
        sec = ts[(len(ts) - 1) // 2]
    elif args.kind == "infer":
        model.eval()
        with torch.inference_mode():
            for i in range(-3, args.steps):
                if i == 0:
                    t0 = time.perf_counter()
                model(xs[(i + 3) % n_b])
        sec = (time.perf_counter() - t0) / (args.steps * B)
    else:
        teacher = None
        if args.kind == "distill":
            teacher = build(json.loads(args.teacher)).eval()
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        a, T = args.alpha, args.temperature
        for i in range(-3, args.steps):
            if i == 0:
                t0 = time.perf_counter()
            k = (i + 3) % n_b
            xb, yb = xs[k], ys[k]
            opt.zero_grad()
            z = model(xb)
            if teacher is not None:
                with torch.no_grad():
                    zt = teacher(xb)
                # The same loss as distill (docs/design.md), T^2 included.
                soft = F.kl_div(F.log_softmax(z / T, dim=1), F.softmax(zt / T, dim=1),
                                reduction="batchmean")
                loss = a * T * T * soft + (1 - a) * F.cross_entropy(z, yb)
            else:
                loss = F.cross_entropy(z, yb)
            loss.backward()
            opt.step()
        sec = (time.perf_counter() - t0) / (args.steps * B)
    print("result samples_per_s=%.1f us_per_sample=%.3f steps=%d threads=%d"
          % (1.0 / sec, 1e6 * sec, args.steps, torch.get_num_threads()))


if __name__ == "__main__":
    main()
