"""IMP written the way an snnTorch user would: eager PyTorch, plain loops; on digits or on MNIST.

    python benchmarks/peers/snntorch_imp.py [--rounds 3]                                   # digits
    python benchmarks/peers/snntorch_imp.py --dataset mnist --data-dir DIR --rounds 3 --epochs 1

The peer of ``python train/imp.py --dataset digits --rounds 3`` (jsnn's digits presets, jsnn/config.py):
the network ``digits_cnn`` (jsnn/models/vgg.py DIGITS_PLAN: conv3x3 32 -> BN -> LIF, conv 64 -> BN -> LIF,
max pool, conv 128 -> BN -> LIF, max pool, linear 10; convs without bias), direct encoding (the first conv's
output repeated over T = 4), the LIF of jsnn.neuron (beta 0.25, V_th 1, hard reset to 0, reset detached,
atan surrogate alpha 2), the loss the mean over timesteps of each timestep's cross-entropy, SGD momentum 0.9,
weight decay 5e-4, lr 0.1 with a cosine schedule over each round's 8 epochs of batch 64 (the last partial
batch dropped), the same train/test split of scikit-learn's digits (1437 / 360, stratified, random_state 0),
normalised by the training set's mean and std. IMP: global magnitude pruning of 25 % of the remaining conv and
linear weights per round, the survivors, BN and its statistics rewound to epoch 2 of round 0, a fresh optimizer.

``--dataset mnist``: the peer of ``python train/imp.py --dataset mnist --data-dir DIR --rounds R --epochs E``:
jsnn's MNIST network ``dvs_small`` (DVS_SMALL_PLAN: conv 16 -> BN -> LIF, max pool, conv 32, max pool, conv 64,
max pool (7 -> 3, the odd row dropped), linear 10), the official IDX files read with NumPy (60,000 / 10,000),
normalised by the training set's mean and std, batch 128, rewound to the initialisation (jsnn's MNIST preset,
rewind epoch 0), the test set evaluated in batches of 1,000.
Prints each round's test accuracy and sparsity; writes nothing.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import math
import os
import struct
import time

import numpy as np
import snntorch
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from snntorch import surrogate
from torch import nn

# (channels, a 2x2 max pool after the layer's LIF) per conv; the classifier's input features
PLANS = {"digits": (((32, False), (64, True), (128, True)), 128 * 2 * 2),  # 8x8 -> 8 -> 4 -> 2
         "mnist": (((16, True), (32, True), (64, True)), 64 * 3 * 3)}  # 28x28 -> 14 -> 7 -> 3


class SNN(nn.Module):
    def __init__(self, timesteps: int, dataset: str = "digits"):
        super().__init__()
        self.T = timesteps
        plan, features = PLANS[dataset]
        widths = [1] + [c for c, _ in plan]
        self.pooled = [p for _, p in plan]
        self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
                                    for c_in, c_out in zip(widths[:-1], widths[1:])])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for c in widths[1:]])
        self.lifs = nn.ModuleList([snntorch.Leaky(beta=0.25, threshold=1.0, spike_grad=surrogate.atan(alpha=2.0),
                                                  reset_mechanism="zero") for _ in plan])
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(features, 10)

    def forward(self, x):
        # direct encoding: conv0 + BN see the image once, its currents feed LIF0 at every step; the later
        # layers run on the T steps folded into the batch, so their BN statistics span T * B maps
        current0 = self.bns[0](self.convs[0](x))
        mems = [lif.reset_mem() for lif in self.lifs]
        spikes0 = []
        for _ in range(self.T):
            s, mems[0] = self.lifs[0](current0, mems[0])
            spikes0.append(s)
        h = torch.cat(spikes0)  # [T*B, ...]
        if self.pooled[0]:
            h = self.pool(h)
        for i in (1, 2):
            current = self.bns[i](self.convs[i](h))
            currents = current.reshape(self.T, -1, *current.shape[1:])
            out = []
            for t in range(self.T):
                s, mems[i] = self.lifs[i](currents[t], mems[i])
                out.append(s)
            h = torch.cat(out)
            if self.pooled[i]:
                h = self.pool(h)
        logits = self.fc(h.flatten(1))
        return logits.reshape(self.T, -1, 10)


def prunable(model):
    return [m.weight for m in (*model.convs, model.fc)]


def evaluate(model, masks, x, y, batch=1000):
    model.eval()
    with torch.no_grad():
        correct = sum((model(x[i:i + batch]).mean(0).argmax(1) == y[i:i + batch]).sum().item()
                      for i in range(0, len(x), batch))
    model.train()
    return correct / len(x)


def train_round(model, masks, x, y, epochs, batch, lr, seed, keep_epoch=None):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = len(x) // batch
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / total)))
    gen = torch.Generator().manual_seed(seed)
    kept = copy.deepcopy(model.state_dict()) if keep_epoch == 0 else None
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for k in range(steps_per_epoch):
            idx = order[k * batch:(k + 1) * batch]
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y[idx].repeat(model.T))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # pruned weights stay zero
                for w, m in zip(prunable(model), masks):
                    w.mul_(m)
        if epoch + 1 == keep_epoch:
            kept = copy.deepcopy(model.state_dict())
    return kept


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(folder: str, name: str) -> np.ndarray:
    """One IDX file (big-endian header: magic with the number of dimensions in its last byte, then the sizes)."""
    path = os.path.join(folder, name)
    opener = open
    if not os.path.exists(path):
        path, opener = path + ".gz", gzip.open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=sorted(PLANS))
    p.add_argument("--data-dir", help="mnist: the folder holding the four IDX files (.gz or not)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="per round (digits 8, mnist 1)")
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=None, help="digits 64, mnist 128")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--prune-rate", type=float, default=0.25)
    p.add_argument("--rewind-epoch", type=int, default=None, help="digits 2, mnist 0 (the initialisation)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    digits = args.dataset == "digits"
    epochs = args.epochs or (8 if digits else 1)
    batch = args.batch_size or (64 if digits else 128)
    rewind_epoch = args.rewind_epoch if args.rewind_epoch is not None else (2 if digits else 0)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)

    if digits:
        bunch = load_digits()
        images = bunch.images.astype(np.float32)[:, None]  # [N, 1, 8, 8]
        tr_x, te_x, tr_y, te_y = train_test_split(images, bunch.target, test_size=0.2, stratify=bunch.target,
                                                  random_state=0)
    else:
        if not args.data_dir:
            raise SystemExit("--dataset mnist needs --data-dir (python benchmarks/mnist_files.py DIR writes the files)")
        tr_x, tr_y, te_x, te_y = (read_idx(args.data_dir, name) for name in IDX_FILES)
        tr_x, te_x = tr_x.astype(np.float32)[:, None], te_x.astype(np.float32)[:, None]
    mean, std = tr_x.mean(), tr_x.std()
    tr_x, te_x = torch.tensor((tr_x - mean) / std), torch.tensor((te_x - mean) / std)
    tr_y, te_y = torch.tensor(tr_y.astype(np.int64)), torch.tensor(te_y.astype(np.int64))

    model = SNN(args.timesteps, args.dataset)
    masks = [torch.ones_like(w) for w in prunable(model)]
    rewind = None
    for r in range(args.rounds):
        if r > 0:  # prune 25 % of the remaining weights by global magnitude, rewind the rest
            alive = torch.cat([w.detach().abs()[m.bool()] for w, m in zip(prunable(model), masks)])
            n_prune = int(round(args.prune_rate * alive.numel()))
            cut = alive.kthvalue(n_prune).values
            masks = [m * (w.detach().abs() > cut).float() for w, m in zip(prunable(model), masks)]
            model.load_state_dict(rewind)
            with torch.no_grad():
                for w, m in zip(prunable(model), masks):
                    w.mul_(m)
        kept = train_round(model, masks, tr_x, tr_y, epochs, batch, args.lr, args.seed + r,
                           keep_epoch=rewind_epoch if r == 0 else None)
        if r == 0:
            rewind = kept
        sparsity = 1 - sum(m.sum().item() for m in masks) / sum(m.numel() for m in masks)
        print(f"round {r}: test accuracy {evaluate(model, masks, te_x, te_y):.4f}, sparsity {sparsity:.3f}, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
