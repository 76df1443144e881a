#!/usr/bin/python3
"""graph_interop.py - checks distill's graph models against the real torchvision code, both ways,
and writes the small fixtures that tests/test_graph_interop.c checks in CI without torch.

Needs Debian's python3-torch and python3-torchvision (run it with /usr/bin/python3) and the
Fashion-MNIST package; not run by CI (the fixtures it wrote are committed).

  /usr/bin/python3 tests/graph_interop.py fixtures [DIR]
      Writes into DIR (default tests/fixtures/graph):
        resnet18.{json,safetensors,logits}   torchvision's ResNet code with BasicBlocks [2,2,2,2]
                                 adapted to 28x28 grey images (conv1 = Conv2d(1, w, 3, 1, 1,
                                 bias=False), maxpool = Identity) at stage widths 4/8/16/32
                                 instead of 64/128/256/512, so the file stays small
        mobilenetv2.{json,...}   torchvision's mobilenet_v2(num_classes=10, width_mult=0.25) with
                                 features[0][0] = Conv2d(1, 8, 3, 1, 1, bias=False) and five
                                 inverted residual blocks (SMALL_SETTING) instead of seventeen
        student.{json,...}       a small ResNet student trained by distill itself (one epoch on
                                 2,000 images, widths 8/16/32), loaded into a hand-written torch
                                 module with strict=True
      Each .json is {"input": [...], "layers": [...]} from configs/make_graph_configs.py at the
      same widths; each .safetensors a state_dict (torchvision's tensor names; the student's is
      distill's own checkpoint); each .logits the eval-mode logits of the first 64 Fashion-MNIST
      test images, preprocessed as x = (u8 / 255 - 0.286) / 0.353 in float32, one line per image.
  /usr/bin/python3 tests/graph_interop.py full
      The same check at full size (resnet18 at 64..512, the whole mobilenet_v2 at width 0.25):
      writes those fixtures into a temporary folder and runs tests/test_graph_interop.c on
      them (build/run_tests graph_interop_torchvision with KD_GRAPH_FIXTURES set; build it
      first with make test).
"""
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import make_graph_configs as gen  # noqa: E402

TEST_IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
N = 64


def images():
    with gzip.open(TEST_IMAGES) as f:
        raw = f.read()
    magic, n, h, w = struct.unpack(">IIII", raw[:16])
    assert magic == 2051 and h == 28 and w == 28
    u8 = np.frombuffer(raw, dtype=np.uint8, count=N * 784, offset=16).reshape(N, 1, 28, 28)
    x = u8.astype(np.float32) / np.float32(255.0)
    return (x - np.float32(0.286)) / np.float32(0.353)


class SlimResNet(ResNet):
    """torchvision's ResNet (its BasicBlock, _make_layer and forward) at chosen widths: only
    __init__ is written here, with the stage widths as a parameter instead of 64..512."""

    def __init__(self, widths, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(BasicBlock, widths[0], 2)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)


def resnet18_adapted(widths):
    if widths == [64, 128, 256, 512]:
        m = torchvision.models.resnet18(num_classes=10)
        m.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
        return m
    return SlimResNet(widths)


# The fixture's inverted_residual_setting: every kind of block (no expansion, expansion with and
# without the residual, stride 1 and 2) in five blocks, so the file stays small.
SMALL_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2)]


def mobilenet_adapted(width, setting):
    m = torchvision.models.mobilenet_v2(num_classes=10, width_mult=width,
                                        inverted_residual_setting=[list(r) for r in setting])
    c = m.features[0][0].out_channels
    m.features[0][0] = nn.Conv2d(1, c, 3, 1, 1, bias=False)
    return m


def randomize_bn(model, seed):
    """Running statistics away from 0 and 1, so eval-mode batch norm does something."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.num_batches_tracked.fill_(3)


def save_safetensors(path, tensors):
    """A state_dict as safetensors, laid out as the spec says (no package needed)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().cpu().contiguous().numpy()
        dt = {"float32": "F32", "int64": "I64"}[str(a.dtype)]
        b = a.astype("<" + a.dtype.str[1:]).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
        out[name] = torch.from_numpy(
            np.frombuffer(raw[8 + n + b:8 + n + e], dtype=dt).reshape(info["shape"]).copy())
    return out


def write_logits(path, z):
    with open(path, "w") as f:
        for row in z:
            f.write(" ".join("%.9g" % v for v in row) + "\n")


def write_arch(path, layers):
    with open(path, "w") as f:
        json.dump({"input": [1, 28, 28], "layers": layers}, f, indent=0)
        f.write("\n")


def torchvision_fixture(out, name, model, layers, seed):
    torch.manual_seed(seed)
    randomize_bn(model, seed)
    model.eval()
    with torch.no_grad():
        z = model(torch.from_numpy(images())).numpy()
    save_safetensors(os.path.join(out, name + ".safetensors"), model.state_dict())
    write_logits(os.path.join(out, name + ".logits"), z)
    write_arch(os.path.join(out, name + ".json"), layers)


class Block(nn.Module):
    """A basic block written by hand (not torchvision's), to load distill's student with
    strict=True."""

    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class SmallResNet(nn.Module):
    def __init__(self, widths):
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        inp = widths[0]
        for s, w in enumerate(widths):
            setattr(self, "layer%d" % (s + 1), nn.Sequential(Block(inp, w, 1 if s == 0 else 2)))
            inp = w
        self.fc = nn.Linear(inp, 10)
        self.n = len(widths)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        for s in range(self.n):
            x = getattr(self, "layer%d" % (s + 1))(x)
        return self.fc(x.mean(dim=(2, 3)))


def student_fixture(out):
    """distill trains the student; torch loads its checkpoint strictly and computes logits."""
    widths = [8, 16, 32]
    layers = gen.resnet(widths, [1, 1, 1])
    cfg = gen.config(layers, 1)
    cfg["data"]["train"]["subset"] = 7000
    with tempfile.TemporaryDirectory() as tmp:
        cpath = os.path.join(tmp, "student.json")
        with open(cpath, "w") as f:
            json.dump(cfg, f)
        subprocess.run([os.path.join(ROOT, "distill"), "train", "--config", cpath, "--out",
                        os.path.join(tmp, "run"), "--quiet", "--threads", "2"], check=True)
        sd = load_safetensors(os.path.join(tmp, "run", "best.safetensors"))
        with open(os.path.join(tmp, "run", "best.safetensors"), "rb") as f:
            ck = f.read()
    model = SmallResNet(widths)
    model.load_state_dict(sd, strict=True)
    model.eval()
    with torch.no_grad():
        z = model(torch.from_numpy(images())).numpy()
    with open(os.path.join(out, "student.safetensors"), "wb") as f:
        f.write(ck)
    write_logits(os.path.join(out, "student.logits"), z)
    write_arch(os.path.join(out, "student.json"), layers)


def fixtures(out, full=False):
    os.makedirs(out, exist_ok=True)
    rw = [64, 128, 256, 512] if full else [4, 8, 16, 32]
    ms = gen.MOBILENET_V2_SETTING if full else SMALL_SETTING
    torchvision_fixture(out, "resnet18", resnet18_adapted(rw), gen.resnet(rw, [2, 2, 2, 2]), 1)
    torchvision_fixture(out, "mobilenetv2", mobilenet_adapted(0.25, ms),
                        gen.mobilenet_v2(0.25, setting=ms), 2)
    if not full:
        student_fixture(out)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "fixtures":
        fixtures(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tests/fixtures/graph"))
    elif what == "full":
        with tempfile.TemporaryDirectory() as tmp:
            fixtures(tmp, full=True)
            env = dict(os.environ, KD_GRAPH_FIXTURES=tmp)
            r = subprocess.run([os.path.join(ROOT, "build/run_tests"), "graph_interop_torchvision"],
                               env=env)
            sys.exit(r.returncode)
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
