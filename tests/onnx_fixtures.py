#!/usr/bin/python3
"""onnx_fixtures.py - writes the ONNX teacher fixtures that tests/test_onnx_import.c checks in CI
without torch: small models exported by torch.onnx.export (dynamic batch), each with its input
and torch's eval-mode output.

Needs Debian's python3-torch and python3-torchvision (run it with /usr/bin/python3); not run by
CI (the fixtures it wrote are committed).

  /usr/bin/python3 tests/onnx_fixtures.py [DIR]
      Writes into DIR (default tests/fixtures/onnx), for each model NAME:
        NAME.onnx       the export (input "input" [N, ...], output "logits" [N, classes])
        NAME.x.idx      the input: 8 samples, float32 IDX (big-endian, as ort_run.js reads it)
        NAME.torch.f32  torch's output on them, float32 little-endian, samples x classes
      Models: one per group of operators (conv_mlp, groups_bn, pools_shape, gelu_matmul,
      affine_concat), torchvision's resnet18 at widths 2/4/8/16 and mobilenet_v2 at width 0.25
      with five blocks, adapted to 28x28 grey images as in tests/graph_interop.py, each at
      opset 13 and 17 (resnet_o13, resnet_o17, mobilenet_o13, mobilenet_o17).
  /usr/bin/python3 tests/onnx_fixtures.py full DIR [N]
      The full-size models for tests/onnx_fullsize.sh (too big for git): torchvision's
      resnet18 (widths 64..512) and the whole mobilenet_v2 (width 1.0, its default blocks),
      adapted to 28x28 grey images as in tests/graph_interop.py, each at opset 13 and 17
      (resnet18_o13, resnet18_o17, mobilenet_v2_o13, mobilenet_v2_o17: .onnx and .torch.f32,
      torch's output on the inputs; batch-norm statistics from the inputs, so the logits
      depend on the image), and the first N (1000) Fashion-MNIST test images
      preprocessed as those models expect, x = (u8 / 255 - 0.286) / 0.353 in float32, as
      input.idx (float32 IDX, for ort_run.js) and input.f32 (little-endian, for bench_ort).
"""
import importlib.util
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 8


def graph_interop():
    spec = importlib.util.spec_from_file_location("graph_interop",
                                                  os.path.join(ROOT, "tests", "graph_interop.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class ConvMlp(nn.Module):
    """Conv (stride 2, padding 1, bias), Relu, Flatten, Gemm, Tanh, Gemm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.fc1 = nn.Linear(4 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.flatten(F.relu(self.conv(x)), 1)
        return self.fc2(torch.tanh(self.fc1(x)))


class GroupsBn(nn.Module):
    """Grouped conv without bias, BatchNormalization, Clip(0, 6), depthwise conv, HardSwish,
    HardSigmoid, GlobalAveragePool, Flatten, Gemm, a final Softmax (removed)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, 1, 1, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.dw = nn.Conv2d(6, 6, 3, 2, 1, groups=6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu6(self.bn(self.conv(x)))
        x = F.hardswish(self.dw(x))
        x = F.hardsigmoid(x) + x
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return torch.softmax(self.fc(x), dim=1)


class PoolsShape(nn.Module):
    """MaxPool with padding, AveragePool, LeakyRelu, Sigmoid, x.view(x.size(0), -1) (Shape,
    Gather, Unsqueeze, Concat, Reshape), Gemm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3 * 2 * 2, 4)

    def forward(self, x):
        x = F.max_pool2d(self.conv(x), 3, 2, 1)
        x = torch.sigmoid(F.leaky_relu(F.avg_pool2d(x, 2), 0.1))
        return self.fc(x.view(x.size(0), -1))


class GeluMatmul(nn.Module):
    """Flatten, MatMul with a constant weight + Add (bias), exact GELU (Div, Erf, Add, Mul,
    Mul), Dropout, Gemm."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(20, 16, generator=g) * 0.3)
        self.b = nn.Parameter(torch.randn(16, generator=g) * 0.1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.flatten(x, 1) @ self.w + self.b
        return self.fc(self.drop(F.gelu(x)))


class AffineConcat(nn.Module):
    """Per-channel Sub and Div with constants (a normalisation), Mul by a scalar, Conv, two
    branches joined by Concat, a residual Add, ReduceMean over H and W, Squeeze, Gemm, a
    final LogSoftmax (removed)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, -0.25]).view(1, 2, 1, 1))
        self.register_buffer("std", torch.tensor([2.0, 0.5]).view(1, 2, 1, 1))
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(2, 3, 3, 1, 1)
        self.c = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = (x - self.mean) / self.std * 1.5
        y = torch.cat([self.a(x), F.relu(self.b(x))], 1)
        y = y + self.c(y)
        y = y.mean(dim=(2, 3), keepdim=True).squeeze(3).squeeze(2)
        return F.log_softmax(self.fc(y), dim=1)


def write_idx_f32(path, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x0D, x.ndim))
        f.write(struct.pack(">" + "I" * x.ndim, *x.shape))
        f.write(x.astype(">f4").tobytes())


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)


def calibrate(model, x):
    """Batch-norm statistics from the inputs x (a cumulative average over batches of 100),
    so that every layer's output varies from image to image: with torchvision's initial
    weights and random statistics the whole mobilenet_v2's logits barely depend on the image
    (their spread over 1,000 images was 6e-7), which no comparison can learn from."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 100):
            model(x[i:i + 100])
    model.eval()


def export(out, name, model, shape, opset, seed, x=None):
    """x: the inputs (default N random samples of shape, batch-norm statistics random; given:
    statistics from x, and not written)."""
    torch.manual_seed(seed)
    model.eval()
    if x is None:
        randomize(model, seed)
    else:
        calibrate(model, x)
    own = x is None
    if own:
        x = torch.randn(N, *shape, generator=torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        z = torch.cat([model(x[i:i + 100]) for i in range(0, len(x), 100)])
    path = os.path.join(out, name + ".onnx")
    torch.onnx.export(model, x[:1], path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=opset, do_constant_folding=True)
    if own:
        write_idx_f32(os.path.join(out, name + ".x.idx"), x.numpy())
    z.numpy().astype("<f4").tofile(os.path.join(out, name + ".torch.f32"))
    print("%-16s %7d bytes, output %s" % (name, os.path.getsize(path), tuple(z.shape)))


def write_full(out, n):
    import torchvision
    gi = graph_interop()
    gi.N = n
    x = gi.images()
    write_idx_f32(os.path.join(out, "input.idx"), x)
    x.astype("<f4").tofile(os.path.join(out, "input.f32"))
    x = torch.from_numpy(x)
    for opset in (13, 17):
        export(out, "resnet18_o%d" % opset, gi.resnet18_adapted([64, 128, 256, 512]), None,
               opset, 7, x)
        # mobilenet_v2 at width 1.0 with its default blocks; the first conv as in
        # graph_interop.mobilenet_adapted (1 channel in, stride 1: 28x28 images)
        m = torchvision.models.mobilenet_v2(num_classes=10)
        m.features[0][0] = nn.Conv2d(1, m.features[0][0].out_channels, 3, 1, 1, bias=False)
        export(out, "mobilenet_v2_o%d" % opset, m, None, opset, 8, x)


def main():
    args = sys.argv[1:]
    full = bool(args) and args[0] == "full"
    if full:
        if len(args) < 2:
            sys.exit("usage: onnx_fixtures.py full DIR [N]")
        os.makedirs(args[1], exist_ok=True)
        write_full(args[1], int(args[2]) if len(args) > 2 else 1000)
        return
    out = args[0] if args else os.path.join(ROOT, "tests", "fixtures", "onnx")
    os.makedirs(out, exist_ok=True)
    gi = graph_interop()
    export(out, "conv_mlp", ConvMlp(), (3, 8, 8), 13, 1)
    export(out, "groups_bn", GroupsBn(), (4, 6, 6), 13, 2)
    export(out, "pools_shape", PoolsShape(), (2, 10, 10), 13, 3)
    export(out, "gelu_matmul", GeluMatmul(), (4, 5), 13, 4)
    export(out, "affine_concat", AffineConcat(), (2, 5, 5), 17, 5)
    for opset in (13, 17):
        export(out, "resnet_o%d" % opset, gi.resnet18_adapted([2, 4, 8, 16]), (1, 28, 28), opset, 7)
        export(out, "mobilenet_o%d" % opset, gi.mobilenet_adapted(0.25, gi.SMALL_SETTING), (1, 28, 28), opset, 8)


if __name__ == "__main__":
    main()
