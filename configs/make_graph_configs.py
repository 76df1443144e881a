#!/usr/bin/env python3
"""make_graph_configs.py - writes the graph-model configs of this folder (their layer lists are
too long to keep by hand), with every layer named as in torchvision's state_dict, so a
torchvision checkpoint loads into them unchanged and distill's checkpoints load back.

  python3 configs/make_graph_configs.py          rewrite the configs (stdlib only)

The configs it writes:
  resnet18.json                  torchvision resnet18(num_classes=10) adapted to 28x28 grey
                                 images (conv1 = Conv2d(1, 64, 3, 1, 1, bias=False), maxpool =
                                 Identity): 456M multiply-adds per sample, for interop and
                                 benchmarks, not for experiments on a small machine
  fmnist-mobilenetv2.json        torchvision mobilenet_v2(num_classes=10, width_mult=0.25) with
                                 features[0][0] = Conv2d(1, 8, 3, 1, 1, bias=False), distilled
                                 from the small ResNet teacher (-scratch: from labels alone)
  fmnist-resnet-teacher.json     a small ResNet teacher (stages of 32/64/128 channels, one
                                 basic block each)
  fmnist-resnet-student.json     a small ResNet student (16/32/64, one block each, under 100k
                                 parameters), distilled from that teacher (-scratch: alone)

The builders are functions of the widths, so tests/graph_interop.py makes the same graphs at
reduced widths for the committed fixtures.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def conv(name, ch, k, stride=1, pad=None, groups=1, bias=False, src=None):
    l = {"type": "conv2d", "name": name, "channels": ch, "kernel": k}
    if stride != 1:
        l["stride"] = stride
    p = (k - 1) // 2 if pad is None else pad
    if p:
        l["padding"] = p
    if groups != 1:
        l["groups"] = groups
    if not bias:
        l["bias"] = False
    if src is not None:
        l["from"] = src
    return l


def bn(name):
    return {"type": "batchnorm", "name": name}


def act(kind, name=None):
    l = {"type": kind}
    if name:
        l["name"] = name
    return l


def basic_block(prefix, inp, planes, stride, src):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn, plus the input (through a 1x1
    conv + bn 'downsample' when the shape changes), then relu. Returns (layers, output name)."""
    out = prefix + ".relu"
    layers = [conv(prefix + ".conv1", planes, 3, stride, src=src), bn(prefix + ".bn1"),
              act("relu"), conv(prefix + ".conv2", planes, 3), bn(prefix + ".bn2")]
    shortcut = src
    if stride != 1 or inp != planes:
        layers += [conv(prefix + ".downsample.0", planes, 1, stride, src=src),
                   bn(prefix + ".downsample.1")]
        shortcut = prefix + ".downsample.1"
    layers += [{"type": "add", "from": [prefix + ".bn2", shortcut]}, act("relu", out)]
    return layers, out


def resnet(widths, blocks, classes=10):
    """torchvision's ResNet with BasicBlocks, stem conv 3x3 stride 1, no max-pool."""
    layers = [conv("conv1", widths[0], 3), bn("bn1"), act("relu", "relu")]
    src, inp = "relu", widths[0]
    for s, (planes, n) in enumerate(zip(widths, blocks)):
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            block, src = basic_block("layer%d.%d" % (s + 1, b), inp, planes, stride, src)
            layers += block
            inp = planes
    layers += [act("global_avgpool"), {"type": "dense", "name": "fc", "units": classes}]
    return layers


def make_divisible(v, divisor=8):
    """torchvision's _make_divisible."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


MOBILENET_V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(width_mult, classes=10, setting=MOBILENET_V2_SETTING):
    """torchvision's MobileNetV2 (inverted residuals, ReLU6, depthwise 3x3), with
    features[0][0] = Conv2d(1, c, 3, 1, 1, bias=False); setting is its
    inverted_residual_setting (t, c, n, s)."""
    inp = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    layers = [conv("features.0.0", inp, 3), bn("features.0.1"), act("relu6", "features.0.2")]
    src, k = "features.0.2", 1
    for t, c, n, s in setting:
        oup = make_divisible(c * width_mult)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = int(round(inp * t))
            p, j = "features.%d.conv." % k, 0
            block = []
            if t != 1:
                block += [conv(p + "0.0", hidden, 1, src=src), bn(p + "0.1"), act("relu6")]
                j = 1
            block += [conv("%s%d.0" % (p, j), hidden, 3, stride, groups=hidden,
                           src=None if t != 1 else src),
                      bn("%s%d.1" % (p, j)), act("relu6"),
                      conv("%s%d" % (p, j + 1), oup, 1), bn("%s%d" % (p, j + 2))]
            if stride == 1 and inp == oup:
                block.append({"type": "add", "name": "features.%d.out" % k,
                              "from": [block[-1]["name"], src]})
                src = "features.%d.out" % k
            else:
                src = block[-1]["name"]
            layers += block
            inp, k = oup, k + 1
    layers += [conv("features.%d.0" % k, last, 1, src=src), bn("features.%d.1" % k),
               act("relu6"), act("global_avgpool"), {"type": "dropout", "p": 0.2},
               {"type": "dense", "name": "classifier.1", "units": classes}]
    return layers


def fmnist_data():
    base = "/usr/share/datasets/fashion-mnist/"
    return {
        "train": {"format": "idx", "path": base + "train-images-idx3-ubyte.gz",
                  "labels": base + "train-labels-idx1-ubyte.gz"},
        "test": {"format": "idx", "path": base + "t10k-images-idx3-ubyte.gz",
                 "labels": base + "t10k-labels-idx1-ubyte.gz"},
        "validation_split": 5000,
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot"],
        "preprocess": {"mean": [0.286], "std": [0.353]},
    }


def config(layers, epochs, teacher=None):
    c = {"data": fmnist_data(), "model": {"layers": layers}}
    if teacher:
        c["teacher"] = {"checkpoint": "../runs/%s/best.safetensors" % teacher}
        c["distill"] = {"kind": "kl", "temperature": 4, "alpha": 0.9}
    c["optimizer"] = {"name": "adam", "lr": 0.002, "weight_decay": 0.0001}
    c["schedule"] = {"name": "cosine", "warmup_epochs": 1, "min_lr": 0}
    c["train"] = {"epochs": epochs, "batch_size": 128, "seed": 1}
    return c


def write(name, cfg):
    """One layer a line: a long list stays readable and diffs well."""
    text = json.dumps(cfg, indent=2)
    lines = ['    "layers": [']
    lines += ["      %s%s" % (json.dumps(l), "," if i + 1 < len(cfg["model"]["layers"]) else "")
              for i, l in enumerate(cfg["model"]["layers"])]
    lines.append("    ]")
    start = text.index('    "layers": [')
    end = text.index("\n    ]", start) + len("\n    ]")
    text = text[:start] + "\n".join(lines) + text[end:]
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        f.write(text + "\n")


def main():
    write("resnet18", config(resnet([64, 128, 256, 512], [2, 2, 2, 2]), 2))
    write("fmnist-resnet-teacher", config(resnet([32, 64, 128], [1, 1, 1]), 6))
    student = resnet([16, 32, 64], [1, 1, 1])
    write("fmnist-resnet-student", config(student, 6, "fmnist-resnet-teacher"))
    write("fmnist-resnet-student-scratch", config(student, 6))
    mobile = mobilenet_v2(0.25)
    write("fmnist-mobilenetv2", config(mobile, 6, "fmnist-resnet-teacher"))
    write("fmnist-mobilenetv2-scratch", config(mobile, 6))


if __name__ == "__main__":
    main()
