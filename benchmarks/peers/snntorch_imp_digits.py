"""IMP on digits written the way an snnTorch user would: eager PyTorch, plain loops.

    python benchmarks/peers/snntorch_imp_digits.py [--rounds 3]

The peer of ``python train/imp.py --dataset digits --rounds 3`` (jsnn's digits presets, jsnn/config.py):
the network ``digits_cnn`` (jsnn/models/vgg.py DIGITS_PLAN: conv3x3 32 -> BN -> LIF, conv 64 -> BN -> LIF,
max pool, conv 128 -> BN -> LIF, max pool, linear 10; convs without bias), direct encoding (the first conv's
output repeated over T = 4), the LIF of jsnn.neuron (beta 0.25, V_th 1, hard reset to 0, reset detached,
atan surrogate alpha 2), the loss the mean over timesteps of each timestep's cross-entropy, SGD momentum 0.9,
weight decay 5e-4, lr 0.1 with a cosine schedule over each round's 8 epochs of batch 64 (the last partial
batch dropped), the same train/test split of scikit-learn's digits (1437 / 360, stratified, random_state 0),
normalised by the training set's mean and std. IMP: global magnitude pruning of 25 % of the remaining conv and
linear weights per round, the survivors, BN and its statistics rewound to epoch 2 of round 0, a fresh optimizer.
Prints each round's test accuracy and sparsity; writes nothing.
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np
import snntorch
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from snntorch import surrogate
from torch import nn


class DigitsSNN(nn.Module):
    def __init__(self, timesteps: int):
        super().__init__()
        self.T = timesteps
        self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
                                    for c_in, c_out in ((1, 32), (32, 64), (64, 128))])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for c in (32, 64, 128)])
        self.lifs = nn.ModuleList([snntorch.Leaky(beta=0.25, threshold=1.0, spike_grad=surrogate.atan(alpha=2.0),
                                                  reset_mechanism="zero") for _ in range(3)])
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(128 * 2 * 2, 10)

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
        for i in (1, 2):
            current = self.bns[i](self.convs[i](h))
            currents = current.reshape(self.T, -1, *current.shape[1:])
            out = []
            for t in range(self.T):
                s, mems[i] = self.lifs[i](currents[t], mems[i])
                out.append(s)
            h = self.pool(torch.cat(out))
        logits = self.fc(h.flatten(1))
        return logits.reshape(self.T, -1, 10)


def prunable(model):
    return [m.weight for m in (*model.convs, model.fc)]


def evaluate(model, masks, x, y):
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train()
    return (logits.mean(0).argmax(1) == y).float().mean().item()


def train_round(model, masks, x, y, epochs, batch, lr, seed, keep_epoch=None):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = len(x) // batch
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / total)))
    gen = torch.Generator().manual_seed(seed)
    kept = None
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--prune-rate", type=float, default=0.25)
    p.add_argument("--rewind-epoch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # [N, 1, 8, 8]
    tr_x, te_x, tr_y, te_y = train_test_split(images, bunch.target, test_size=0.2, stratify=bunch.target,
                                              random_state=0)
    mean, std = tr_x.mean(), tr_x.std()
    tr_x, te_x = torch.tensor((tr_x - mean) / std), torch.tensor((te_x - mean) / std)
    tr_y, te_y = torch.tensor(tr_y), torch.tensor(te_y)

    model = DigitsSNN(args.timesteps)
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
        kept = train_round(model, masks, tr_x, tr_y, args.epochs, args.batch_size, args.lr, args.seed + r,
                           keep_epoch=args.rewind_epoch if r == 0 else None)
        if r == 0:
            rewind = kept
        sparsity = 1 - sum(m.sum().item() for m in masks) / sum(m.numel() for m in masks)
        print(f"round {r}: test accuracy {evaluate(model, masks, te_x, te_y):.4f}, sparsity {sparsity:.3f}, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
