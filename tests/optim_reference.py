#!/usr/bin/env python3
"""optim_reference.py - independent double-precision reference for tests/test_optim.c.

Follows the algorithms documented for torch.optim.SGD / Adam / AdamW,
torch.nn.utils.clip_grad_norm_ and the schedules documented in include/kd_optim.h, on a fixed
3-parameter problem with a fixed 5-step gradient sequence. Stdlib only. Output, one record a
line, numbers as %.9g (the C test parses it and replays every setting):
  init p0 p1 p2
  grad <step> g0 g1 g2                     (step is 1-based)
  opt <name> <kind> <lr> <momentum> <nesterov> <beta1> <beta2> <eps> <wd> <clip>
  traj <name> <step> p0 p1 p2              (parameters after that step)
  norm <name> <step> <gradient norm before clipping>
  sched <name> <kind> <base> <warmup> <step_size> <gamma> <total> <min_lr>
  lr <name> <t> <lr>                       (t is 0-based)
"""
import math

SGD, ADAM, ADAMW = 0, 1, 2
CONSTANT, STEP, COSINE = 0, 1, 2

INIT = [1.0, -0.5, 0.25]
# Dyadic values (exact in float32); norms straddle the clip value 2 so some steps clip.
GRADS = [
    [0.5, -1.25, 2.0],
    [-0.75, 0.25, 1.5],
    [3.0, -2.0, 0.125],
    [0.0, 0.5, -0.25],
    [-1.0, 4.0, -2.5],
]


def fmt(x):
    return "%.9g" % x


def opt(kind, lr, momentum=0.0, nesterov=0, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0, clip=0.0):
    return dict(kind=kind, lr=lr, momentum=momentum, nesterov=nesterov, beta1=beta1,
                beta2=beta2, eps=eps, wd=wd, clip=clip)


OPTS = [
    ("sgd", opt(SGD, 0.1)),
    ("sgd_momentum", opt(SGD, 0.1, momentum=0.9)),
    ("sgd_nesterov", opt(SGD, 0.1, momentum=0.9, nesterov=1)),
    ("sgd_wd", opt(SGD, 0.1, wd=0.1)),
    ("sgd_momentum_wd", opt(SGD, 0.05, momentum=0.8, nesterov=1, wd=0.05)),
    ("sgd_clip", opt(SGD, 0.1, momentum=0.9, clip=2.0)),
    ("adam", opt(ADAM, 0.01)),
    ("adam_betas_eps", opt(ADAM, 0.1, beta1=0.5, beta2=0.75, eps=0.1)),
    ("adam_wd", opt(ADAM, 0.01, wd=0.1)),
    ("adamw", opt(ADAMW, 0.01, wd=0.1)),
    ("adamw_clip", opt(ADAMW, 0.05, beta1=0.8, beta2=0.9, eps=1e-3, wd=0.2, clip=2.0)),
]


def clip_grad(g, max_norm):
    """torch.nn.utils.clip_grad_norm_: returns (clipped grads, total norm before clipping)."""
    total = math.sqrt(sum(x * x for x in g))
    if max_norm > 0:
        coef = min(max_norm / (total + 1e-6), 1.0)
        g = [x * coef for x in g]
    return g, total


def run_sgd(o, p, g, state, step):
    mu, wd = o["momentum"], o["wd"]
    for i in range(len(p)):
        d = g[i] + wd * p[i] if wd != 0 else g[i]
        if mu != 0:
            if step == 1:
                buf = d
            else:
                buf = mu * state["buf"][i] + d  # dampening 0
            state["buf"][i] = buf
            d = d + mu * buf if o["nesterov"] else buf
        p[i] = p[i] - o["lr"] * d


def run_adam(o, p, g, state, step):
    lr, b1, b2, eps, wd = o["lr"], o["beta1"], o["beta2"], o["eps"], o["wd"]
    bc1 = 1 - b1 ** step
    bc2 = 1 - b2 ** step
    for i in range(len(p)):
        if o["kind"] == ADAMW:
            p[i] = p[i] * (1 - lr * wd)
            d = g[i]
        else:
            d = g[i] + wd * p[i]
        state["m"][i] = b1 * state["m"][i] + (1 - b1) * d
        state["v"][i] = b2 * state["v"][i] + (1 - b2) * d * d
        m_hat = state["m"][i] / bc1
        v_hat = state["v"][i] / bc2
        p[i] = p[i] - lr * m_hat / (math.sqrt(v_hat) + eps)


def sched(kind, base, warmup=0, step_size=0, gamma=1.0, total=0, min_lr=0.0):
    return dict(kind=kind, base=base, warmup=warmup, step_size=step_size, gamma=gamma,
                total=total, min_lr=min_lr)


SCHEDS = [
    ("constant", sched(CONSTANT, 0.1)),
    ("constant_warmup", sched(CONSTANT, 0.1, warmup=4)),
    ("step", sched(STEP, 0.1, step_size=3, gamma=0.5)),
    ("step_warmup", sched(STEP, 0.2, warmup=2, step_size=4, gamma=0.1)),
    ("step_size_zero", sched(STEP, 0.1, step_size=0, gamma=0.5)),
    ("cosine", sched(COSINE, 0.1, total=10, min_lr=0.001)),
    ("cosine_warmup", sched(COSINE, 0.05, warmup=3, total=11, min_lr=0.0)),
    ("cosine_total_le_warmup", sched(COSINE, 0.1, warmup=4, total=2, min_lr=0.01)),
]


def lr_at(s, t):
    w = s["warmup"]
    if w > 0 and t < w:
        return s["base"] * (t + 1) / w
    tp = t - w
    if s["kind"] == CONSTANT:
        return s["base"]
    if s["kind"] == STEP:
        if s["step_size"] == 0:
            return s["base"]
        return s["base"] * s["gamma"] ** (tp // s["step_size"])
    span = s["total"] - w
    if span <= 0:
        return s["base"]
    x = min(tp, span) / span
    return s["min_lr"] + (s["base"] - s["min_lr"]) * (1 + math.cos(math.pi * x)) / 2


def main():
    out = ["init " + " ".join(fmt(x) for x in INIT)]
    for k, g in enumerate(GRADS, 1):
        out.append("grad %d %s" % (k, " ".join(fmt(x) for x in g)))
    for name, o in OPTS:
        out.append("opt %s %d %s %s %d %s %s %s %s %s" % (
            name, o["kind"], fmt(o["lr"]), fmt(o["momentum"]), o["nesterov"], fmt(o["beta1"]),
            fmt(o["beta2"]), fmt(o["eps"]), fmt(o["wd"]), fmt(o["clip"])))
        p = list(INIT)
        n = len(p)
        state = {"buf": [0.0] * n, "m": [0.0] * n, "v": [0.0] * n}
        for k, g in enumerate(GRADS, 1):
            g, total = clip_grad(list(g), o["clip"])
            if o["kind"] == SGD:
                run_sgd(o, p, g, state, k)
            else:
                run_adam(o, p, g, state, k)
            out.append("traj %s %d %s" % (name, k, " ".join(fmt(x) for x in p)))
            out.append("norm %s %d %s" % (name, k, fmt(total)))
    for name, s in SCHEDS:
        out.append("sched %s %d %s %d %d %s %d %s" % (
            name, s["kind"], fmt(s["base"]), s["warmup"], s["step_size"], fmt(s["gamma"]),
            s["total"], fmt(s["min_lr"])))
        for t in range(0, 14):
            out.append("lr %s %d %s" % (name, t, fmt(lr_at(s, t))))
    print("\n".join(out))


if __name__ == "__main__":
    main()
