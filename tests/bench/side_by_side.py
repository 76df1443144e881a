"""side_by_side.py - `make bench-torch`: the jobs of issue 12 in distill (build/bench/bench_jobs)
and, when /usr/bin/python3 can import torch (Debian's python3-torch), in PyTorch
(tests/bench/torch_jobs.py): the same architectures (read from configs/), batch 128, Adam, the
same Fashion-MNIST images and 2 threads (PyTorch with OMP_WAIT_POLICY=PASSIVE, its best setting
on this machine), one process per job and side, the two sides alternating, and one table of
samples/s and peak RSS with their ratios. Without PyTorch it says so and prints distill's side.
Standard library only; the tests never run it.

  python3 tests/bench/side_by_side.py [--rounds R] [--threads T] [--only SUBSTRING]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTILL = os.path.join(ROOT, "build", "bench", "bench_jobs")
PYTHON = "/usr/bin/python3"
TORCH = [PYTHON, os.path.join(ROOT, "tests", "bench", "torch_jobs.py")]


def arch_of(config, inp):
    with open(os.path.join(ROOT, "configs", config + ".json")) as f:
        return json.dumps({"input": inp, "layers": json.load(f)["model"]["layers"]})


FLAT, IMG = [784], [1, 28, 28]
# torch's examples/mnist network: conv32-conv64-maxpool-dense128-dense10, no batch norm.
TORCH_CNN = json.dumps({"input": IMG, "layers": [
    {"type": "conv2d", "channels": 32, "kernel": 3}, {"type": "relu"},
    {"type": "conv2d", "channels": 64, "kernel": 3}, {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2}, {"type": "dropout", "p": 0.25}, {"type": "flatten"},
    {"type": "dense", "units": 128}, {"type": "relu"}, {"type": "dropout", "p": 0.5},
    {"type": "dense", "units": 10}]})


def jobs():
    teacher = arch_of("fmnist-teacher", FLAT)
    student = arch_of("fmnist-student", FLAT)
    compact = arch_of("fmnist-compact", FLAT)
    cnn = arch_of("fmnist-cnn-teacher", IMG)
    resnet_student = arch_of("fmnist-resnet-student", IMG)
    mobilenet = arch_of("fmnist-mobilenetv2", IMG)
    resnet18 = arch_of("resnet18", IMG)
    # (name, kind, arch, teacher arch, batch, steps, target ratio distill/torch)
    return [
        ("MLP teacher 784-1200-1200-10 training", "train", teacher, None, 128, 60, 2.5),
        ("distillation 1200x2 -> 800x2", "distill", student, teacher, 128, 60, 1.35),
        ("distillation 1200x2 -> 784-128-10", "distill", compact, teacher, 128, 100, None),
        ("compact 784-128-10 from scratch", "train", compact, None, 128, 400, None),
        # distill reads the teacher's logits from a cache (teacher.cache); PyTorch runs the
        # teacher online, as its users do: the ratio of the two.
        ("cached distillation -> 784-128-10 (torch online)", "cached", compact, teacher, 128,
         400, 6.0),
        ("CNN conv32-conv64-maxpool-dense128 (torch's)", "train", TORCH_CNN, None, 128, 12, 1.6),
        ("CNN teacher (configs/fmnist-cnn-teacher)", "train", cnn, None, 128, 20, None),
        ("MLP teacher inference, batch 1000", "infer", teacher, None, 1000, 20, 1.3),
        ("CNN teacher inference, batch 1000", "infer", cnn, None, 1000, 4, 1.3),
        ("compact single-sample latency", "latency", compact, None, 1, 3000, 10.0),
        ("small ResNet student training (16/32/64)", "train", resnet_student, None, 128, 10, 1.8),
        ("MobileNetV2 x0.25 training", "train", mobilenet, None, 128, 6, 1.2),
        ("ResNet-18 forward, batch 256", "infer", resnet18, None, 256, 2, None),
    ]


def run(cmd, env=None):
    """Runs one job; returns (samples/s, us/sample, peak RSS in MiB) or None. os.wait4 gives
    this child's own rusage, so the peak RSS is the job's alone."""
    with tempfile.TemporaryFile(mode="w+") as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, env=env, text=True)
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if p.returncode != 0:
            errf.seek(0)
            sys.stderr.write("failed (%d): %s %s\n%s" % (p.returncode, cmd[0], cmd[1],
                                                          errf.read()))
            return None
    line = [l for l in out.splitlines() if l.startswith("result ")]
    if not line:
        return None
    kv = dict(f.split("=") for f in line[-1].split()[1:])
    return float(kv["samples_per_s"]), float(kv["us_per_sample"]), ru.ru_maxrss / 1024.0


def have_torch():
    try:
        return subprocess.run([PYTHON, "-c", "import torch"], capture_output=True).returncode == 0
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="alternations per job (best kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="run the jobs whose name contains this")
    args = ap.parse_args()
    torch_ok = have_torch()
    if not torch_ok:
        print("PyTorch is not importable by %s (Debian: apt-get install python3-torch); "
              "showing distill's side only.\n" % PYTHON)
    tenv = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    rows = []
    for name, kind, arch, teacher, batch, steps, target in jobs():
        if args.only and args.only not in name:
            continue
        common = [kind, arch] + ([teacher] if teacher else []) + [
            "--steps", str(steps), "--batch", str(batch), "--threads", str(args.threads)]
        best = {"distill": None, "torch": None}
        for _ in range(args.rounds):
            sides = [("distill", [DISTILL] + common, None)]
            if torch_ok:
                tcommon = ["distill" if kind == "cached" else kind] + common[1:]
                sides.append(("torch", TORCH + tcommon, tenv))
            # The best rate of the rounds, with the largest peak RSS of any round (PyTorch's
            # varies by a fifth between runs of the same job).
            for side, cmd, env in sides:
                r = run(cmd, env)
                if not r:
                    continue
                b = best[side]
                if b is None:
                    best[side] = r
                else:
                    best[side] = (r if r[0] > b[0] else b)[:2] + (max(r[2], b[2]),)
        rows.append((name, kind, best["distill"], best["torch"], target))
        print_row(rows[-1])
        sys.stdout.flush()


def print_row(row):
    name, kind, d, t, target = row
    if not hasattr(print_row, "done"):
        print("%-46s %12s %12s %7s %8s %9s %9s %6s" % (
            "job (batch 128, 2 threads)", "distill", "PyTorch", "ratio", "target",
            "RSS MiB", "torch MiB", "RSS x"))
        print_row.done = True

    def val(r):
        if r is None:
            return "-"
        return ("%.1f us" % r[1]) if kind == "latency" else ("%.0f" % r[0])
    ratio = rss = "-"
    if d and t:
        # Latency: distill's time over PyTorch's (lower is better, target <= 0.1x);
        # throughput: distill's rate over PyTorch's.
        ratio = ("%.3fx" % (d[1] / t[1])) if kind == "latency" else ("%.2fx" % (d[0] / t[0]))
        rss = "%.2fx" % (d[2] / t[2])
    tgt = "-" if target is None else (("<=%.1fx" % (1 / target)) if kind == "latency"
                                      else (">=%.2fx" % target))
    print("%-46s %12s %12s %7s %8s %9s %9s %6s" % (
        name, val(d), val(t), ratio, tgt, "%.0f" % d[2] if d else "-",
        "%.0f" % t[2] if t else "-", rss))


if __name__ == "__main__":
    main()
