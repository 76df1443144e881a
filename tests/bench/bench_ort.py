"""bench_ort.py - `make bench-ort` (issue 29): the same exported ONNX files run by ONNX Runtime
(npm onnxruntime-node, tests/export/ort_bench.js: 2 intra-op threads, all graph optimisations)
and by distill (build/bench/bench_ort, 2 threads) on the same preprocessed Fashion-MNIST test
images, one process per round and side, the sides alternating, several rounds: median and range
of samples/s at the model's batch (1000; 256 for ResNet-18) and of the single-sample p50.

distill runs twice per round: pinned (the environment as the tests and CI see it) and unpinned
(OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for that command alone, so OpenBLAS picks its
kernels by its own detection); the unpinned logits are checked against the pinned run's within
|a - b| <= 1e-4 (1 + |b|), and ONNX Runtime's against the pinned run's (the largest difference
is printed). For ResNet-18 distill also runs the exported file itself (side "from-onnx":
bench_ort run --onnx, the model as distill's ONNX reader translates it for a teacher, same
kernels), pinned, its logits checked against the pinned run's within the same bound. Each row also gives distill's rate as a fraction of the sgemm rate of the same
products timed alone and of the machine's peak (a 1024^3 sgemm on both threads, under the
same pin). Standard library only; the tests never run it; never run it next to the suite.

Then the full-integer rows (issue 28): the small CNN student quantized (ranges from the same
images) and exported as QDQ (model_qint8.onnx) against its f32 file, both under ONNX Runtime at
batch 256, alternating: samples/s, single-sample p50, the qint8 file's speed over the f32
file's, and the top-1 agreement of their logits.

  python3 tests/bench/bench_ort.py [--rounds R] [--quick] [--only SUBSTRING] [--budget S]
"""
import argparse
import array
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTILL = os.path.join(ROOT, "build", "bench", "bench_ort")
ORT_JS = os.path.join(ROOT, "tests", "export", "ort_bench.js")
ORT_VERSION = "1.30.0"

# (name, config, batch)
MODELS = [
    ("compact student 784-128-10", "fmnist-compact", 1000),
    ("MLP teacher 784-1200-1200-10", "fmnist-teacher", 1000),
    ("CNN teacher", "fmnist-cnn-teacher", 1000),
    ("small ResNet student", "fmnist-resnet-student", 1000),
    ("MobileNetV2 x0.25", "fmnist-mobilenetv2", 1000),
    ("ResNet-18 forward", "resnet18", 256),
]
# Configs whose exported model.onnx distill also loads and times (the "from-onnx" side).
FROM_ONNX = {"resnet18"}
# (name, config, batch): the qint8 QDQ file against the f32 one, both under ONNX Runtime.
# The small CNN's one-channel first convolution is most of its work, and ONNX Runtime's
# integer kernel (QLinearConv) is slower there than its float one; the graph students show the
# rest of the picture.
QINT8_MODELS = [
    ("small CNN student qint8", "fmnist-cnn-small", 256),
    ("small ResNet student qint8", "fmnist-resnet-student", 256),
    ("MobileNetV2 x0.25 qint8", "fmnist-mobilenetv2", 256),
]


def ort_module():
    d = os.environ.get("KD_ORT_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "distill-ort", ORT_VERSION)
    m = os.path.join(d, "node_modules", "onnxruntime-node")
    return m if os.path.isdir(m) else None


def run(cmd, env=None):
    """One round of one side: the fields of its "result" line, or None."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr))
        return None
    line = [l for l in p.stdout.splitlines() if l.startswith("result ")]
    if not line:
        return None
    return dict(f.split("=", 1) for f in line[-1].split()[1:])


def read_f32(path):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


def worst(a, b):
    """The largest |a - b| / (1 + |b|) over the two logit files (inf if their sizes differ)."""
    if len(a) != len(b) or not a:
        return float("inf")
    return max(abs(x - y) / (1.0 + abs(y)) for x, y in zip(a, b))


def top1_agreement(a, b, classes):
    """The fraction of rows of two logit files with the same argmax."""
    n = min(len(a), len(b)) // classes
    if not n:
        return 0.0
    arg = lambda z, i: max(range(classes), key=lambda c: z[i * classes + c])
    return sum(arg(a, i) == arg(b, i) for i in range(n)) / n


def qint8_rows(args, mod, oenv, tmp):
    """The QDQ file against the f32 file under ONNX Runtime; 1 when a step failed."""
    bad = 0
    for name, config, batch in QINT8_MODELS:
        if args.only and args.only not in name:
            continue
        if not mod:
            print("%-28s skipped: ONNX Runtime is not installed" % name)
            continue
        d = os.path.join(tmp, config + "-qint8")
        os.makedirs(d)
        cfg = os.path.join(ROOT, "configs", config + ".json")
        prep = subprocess.run([DISTILL, "prepare", cfg, d, "--n", str(batch), "--qint8", "1"],
                              capture_output=True, text=True)
        if prep.returncode != 0:
            sys.stderr.write("prepare %s failed:\n%s" % (config, prep.stderr))
            bad += 1
            continue
        res = {"f32": [], "qint8": []}
        files = {"f32": "model.onnx", "qint8": "model_qint8.onnx"}
        for r in range(args.rounds):
            order = ("f32", "qint8") if r % 2 == 0 else ("qint8", "f32")
            for side in order:
                cmd = ["node", ORT_JS, os.path.join(d, files[side]), os.path.join(d, "input.f32"),
                       "--batch", str(batch), "--budget", str(args.budget)]
                if r == 0:
                    cmd += ["--logits", os.path.join(d, "ort_" + side + ".f32")]
                out = run(cmd, oenv)
                if out:
                    res[side].append(out)
                else:
                    bad += 1
        if not res["f32"] or not res["qint8"]:
            continue
        rate = {k: statistics.median(float(o["samples_per_s"]) for o in v) for k, v in res.items()}
        single = {k: statistics.median(float(o["single_us"]) for o in v) for k, v in res.items()}
        for side in ("f32", "qint8"):
            rows = res[side]
            print("%-28s %5d %-19s %22s %22s %11s" % (
                name[:28], batch, "ORT " + side, spread([float(o["samples_per_s"]) for o in rows]),
                "%.1f" % single[side],
                "%.2fx/%.2fx" % (rate[side] / rate["f32"], single["f32"] / single[side])))
        agree = top1_agreement(read_f32(os.path.join(d, "ort_qint8.f32")),
                               read_f32(os.path.join(d, "ort_f32.f32")), 10)
        print("    qint8 vs f32 under ONNX Runtime: batch %.2fx, single %.2fx; top-1 agreement "
              "%.1f%% (random weights, ranges from the same %d images)" % (
                  rate["qint8"] / rate["f32"], single["f32"] / single["qint8"], 100 * agree,
                  batch))
        sys.stdout.flush()
    return bad


def spread(vals):
    if not vals:
        return "-"
    return "%.0f [%.0f-%.0f]" % (statistics.median(vals), min(vals), max(vals))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 rounds, short budgets")
    ap.add_argument("--only", default="", help="the models whose name contains this")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per timing in a round")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.budget = 2, 0.3
    mod = ort_module()
    if not mod:
        print("ONNX Runtime is not installed: run bash tests/export/ort_install.sh")
    unpinned = {k: v for k, v in os.environ.items()
                if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    oenv = dict(os.environ, KD_ORT_MODULE=mod or "")
    print("distill 2 threads, ONNX Runtime %s 2 intra-op threads; %d rounds; pinned: "
          "OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s" % (
              ORT_VERSION, args.rounds, os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
              os.environ.get("OPENBLAS_L2_SIZE", "(unset)")))
    hdr = "%-28s %5s %-19s %22s %22s %11s %8s %11s %5s %5s" % (
        "model", "batch", "side", "samples/s med [range]", "single p50 us [range]",
        "/ORT batch/1", "GFLOP/s", "sgemm alone", "frac", "peak")
    print(hdr)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="bench_ort.") as tmp:
        for name, config, batch in MODELS:
            if args.only and args.only not in name:
                continue
            d = os.path.join(tmp, config)
            os.makedirs(d)
            cfg = os.path.join(ROOT, "configs", config + ".json")
            prep = subprocess.run([DISTILL, "prepare", cfg, d, "--n", str(batch)],
                                  capture_output=True, text=True)
            if prep.returncode != 0:
                sys.stderr.write("prepare %s failed:\n%s" % (config, prep.stderr))
                bad += 1
                continue
            res = {"ORT": [], "pinned": [], "unpinned": [], "from-onnx": []}
            for r in range(args.rounds):
                common = ["--batch", str(batch), "--budget", str(args.budget)]
                sides = [("pinned", [DISTILL, "run", cfg, d] + common, None),
                         ("unpinned", [DISTILL, "run", cfg, d] + common, unpinned)]
                if config in FROM_ONNX:
                    sides.append(("from-onnx", [DISTILL, "run", cfg, d, "--onnx",
                                                os.path.join(d, "model.onnx")] + common, None))
                if mod:
                    sides.append(("ORT", ["node", ORT_JS, os.path.join(d, "model.onnx"),
                                          os.path.join(d, "input.f32")] + common, oenv))
                # Logits from the first round; the order turns every round.
                for side, cmd, env in sides[r % len(sides):] + sides[:r % len(sides)]:
                    if r == 0:
                        cmd = cmd + ["--logits", os.path.join(d, side + ".f32")]
                    out = run(cmd, env)
                    if out:
                        res[side].append(out)
            ort_rate = statistics.median([float(o["samples_per_s"]) for o in res["ORT"]]) \
                if res["ORT"] else None
            ort_single = statistics.median([float(o["single_us"]) for o in res["ORT"]]) \
                if res["ORT"] else None
            for side in ("ORT", "pinned", "unpinned", "from-onnx"):
                rows = res[side]
                if not rows:
                    continue
                rate = [float(o["samples_per_s"]) for o in rows]
                single = [float(o["single_us"]) for o in rows]
                ratio = "-"
                extra = ("", "", "", "")
                if side != "ORT":
                    if ort_rate:
                        ratio = "%.2fx/%.2fx" % (statistics.median(rate) / ort_rate,
                                                 ort_single / statistics.median(single))
                    g = statistics.median(float(o["gflops"]) for o in rows)
                    s = statistics.median(float(o["sgemm_gflops"]) for o in rows)
                    pk = statistics.median(float(o["peak_gflops"]) for o in rows)
                    extra = ("%.1f" % g, "%.1f" % s, "%.2f" % (g / s), "%.2f" % (g / pk))
                label = side if side == "ORT" else "%s %s" % (side, rows[0]["core"])
                print("%-28s %5d %-19s %22s %22s %11s %8s %11s %5s %5s" % (
                    name[:28], batch, label[:19], spread(rate),
                    "%.1f [%.1f-%.1f]" % (statistics.median(single), min(single), max(single)),
                    ratio, *extra))
            pf, of = (os.path.join(d, s + ".f32") for s in ("pinned", "ORT"))
            for other in ("unpinned", "from-onnx"):
                uf = os.path.join(d, other + ".f32")
                if os.path.exists(pf) and os.path.exists(uf):
                    w = worst(read_f32(uf), read_f32(pf))
                    ok = w <= 1e-4
                    bad += not ok
                    print("    logits %s vs pinned: max |a-b|/(1+|b|) = %.2e %s" % (
                        other, w, "ok" if ok else "OVER 1e-4"))
            if os.path.exists(pf) and os.path.exists(of):
                print("    logits ORT vs distill pinned: max |a-b|/(1+|b|) = %.2e" % worst(
                    read_f32(of), read_f32(pf)))
            sys.stdout.flush()
        bad += qint8_rows(args, mod, oenv, tmp)
    print("/ORT: distill's batch rate over ORT's / ORT's single-sample p50 over distill's "
          "(>= 1.00x: distill at least as fast); frac: distill's GFLOP/s over its products' "
          "sgemm rate alone; peak: over a 1024^3 sgemm under the same pin; qint8 rows: the "
          "file's batch rate over the f32 file's / the f32 file's single p50 over its own")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
