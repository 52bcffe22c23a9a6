"""The benchmark network in PyTorch (NCHW), with the LIF layer supplied by the peer.

``make_lif()`` returns a module mapping folded currents [T*B, ...] -> spikes [T*B, ...].
Shared by the plain-PyTorch, SpikingJelly and snnTorch peers, so they differ
only in the neuron. Weights can be loaded from jsnn's pytrees (``load_jsnn``)
for the equality check.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from benchmarks import common


class Rectangle(torch.autograd.Function):
    """Heaviside(x) (1 where x >= 0) forward; rectangle surrogate 1/a on |x| < a/2 backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        a = common.RECT_WIDTH
        return g * (x.abs() < a / 2).to(g.dtype) / a


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class VGG(nn.Module):
    def __init__(self, plan, make_lif: Callable[[], nn.Module], timesteps: int, num_classes=common.NUM_CLASSES):
        super().__init__()
        self.T = timesteps
        layers, c, h, first = [], 3, common.IMAGE_SHAPE[0], True
        self.encoder = None
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                h //= 2
                continue
            block = ConvBN(c, item)
            if first:
                self.encoder, first = block, False
                layers.append(make_lif())
            else:
                layers += [block, make_lif()]
            c = item
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * h, num_classes)
        self.feat_hw = (h, c)

    def forward(self, images):  # images [B, 3, H, W] -> logits [T, B, classes]
        x = self.encoder(images)
        x = x.unsqueeze(0).expand(self.T, *x.shape).reshape(-1, *x.shape[1:])
        x = self.body(x)
        return self.fc(x.flatten(1)).reshape(self.T, -1, self.fc.out_features)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, make_lif):
        super().__init__()
        self.conv1, self.lif1 = ConvBN(cin, cout, 3, stride), make_lif()
        self.conv2 = ConvBN(cout, cout)
        self.shortcut = ConvBN(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None
        self.lif2 = make_lif()

    def forward(self, x):
        out = self.conv2(self.lif1(self.conv1(x)))
        return self.lif2(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet19(nn.Module):
    def __init__(self, make_lif, timesteps, num_classes=common.NUM_CLASSES):
        super().__init__()
        cfg = common.RESNET19
        self.T = timesteps
        self.encoder, self.lif0 = ConvBN(3, cfg["stem"]), make_lif()
        blocks, c = [], cfg["stem"]
        for f, n in zip(cfg["stages"], cfg["blocks"]):
            for b in range(n):
                blocks.append(BasicBlock(c, f, 2 if b == 0 else 1, make_lif))
                c = f
        self.blocks = nn.Sequential(*blocks)
        self.fc1, self.lif_fc = nn.Linear(c, cfg["hidden"]), make_lif()
        self.fc2 = nn.Linear(cfg["hidden"], num_classes)

    def forward(self, images):
        x = self.encoder(images)
        x = self.lif0(x.unsqueeze(0).expand(self.T, *x.shape).reshape(-1, *x.shape[1:]))
        x = self.blocks(x).mean(dim=(2, 3))
        return self.fc2(self.lif_fc(self.fc1(x))).reshape(self.T, -1, self.fc2.out_features)


def build(workload: str, make_lif, timesteps: int) -> nn.Module:
    if workload == "resnet19":
        return ResNet19(make_lif, timesteps)
    return VGG(common.vgg_plan(workload), make_lif, timesteps)


def load_jsnn_vgg(model: VGG, weights, bn) -> None:
    """Copies jsnn vgg weights (HWIO kernels, NHWC flatten order) into ``model``."""
    convs = [model.encoder] + [m for m in model.body if isinstance(m, ConvBN)]
    with torch.no_grad():
        for i, block in enumerate(convs):
            k = np.asarray(weights[f"conv{i}"]["kernel"])
            block[0].weight.copy_(torch.from_numpy(k.transpose(3, 2, 0, 1).copy()))
            if bn:
                block[1].weight.copy_(torch.from_numpy(np.asarray(bn[f"conv{i}"]["scale"])))
                block[1].bias.copy_(torch.from_numpy(np.asarray(bn[f"conv{i}"]["bias"])))
        h, c = model.feat_hw
        fc = np.asarray(weights["fc"]["kernel"])  # [(h, w, c), classes]
        fc = fc.reshape(h, h, c, -1).transpose(3, 2, 0, 1).reshape(fc.shape[1], -1)  # [classes, (c, h, w)]
        model.fc.weight.copy_(torch.from_numpy(fc.copy()))
        model.fc.bias.copy_(torch.from_numpy(np.asarray(weights["fc"]["bias"])))


def device_of(case: common.Case) -> torch.device:
    """The GPU where torch finds one and the case allows it (``device`` "auto"), else the CPU."""
    return torch.device("cuda" if case.device != "cpu" and torch.cuda.is_available() else "cpu")


def synchronizer(device: torch.device):
    """What a timed step waits for: CUDA kernels run asynchronously, so the clock stops only after
    ``torch.cuda.synchronize``; CPU torch returns when the work is done."""
    if device.type == "cuda":
        return lambda _: torch.cuda.synchronize(device)
    return lambda _: None


def run(case: common.Case, make_lif) -> dict:
    torch.set_num_threads(case.threads)
    torch.manual_seed(0)
    device = device_of(case)
    images, labels = common.make_batch(case.batch)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    model = build(case.workload, make_lif, case.timesteps).to(device)
    if case.mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=common.LR, momentum=common.MOMENTUM)
        yt = y.repeat(case.timesteps)

        def step():
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt)
            loss.backward()
            opt.step()
            return loss
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                return model(x).mean(0).argmax(-1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    record = common.time_steps(step, synchronizer(device), case)
    record["device_kind"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if device.type == "cuda":  # and what torch computed f32 convolutions and matmuls in (its defaults)
        record["device_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        record["tf32"] = {"conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    return record
