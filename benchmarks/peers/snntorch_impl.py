"""snnTorch: ``Leaky`` (beta 0.25, reset_mechanism="zero"; its default reset_delay=True resets
U[t] = beta * (1 - S[t-1]) * U[t-1] + X[t] with S[t-1] detached: the shared LIF), stepped over T,
with the rectangle surrogate as ``spike_grad``."""
from __future__ import annotations

import snntorch
import torch
from torch import nn

from benchmarks import common
from benchmarks.peers.torch_common import Rectangle, build
from benchmarks.peers.torch_common import run as _run

LIBRARY = "snntorch"


class LIF(nn.Module):
    def __init__(self, timesteps: int):
        super().__init__()
        self.T = timesteps
        self.leaky = snntorch.Leaky(beta=common.DECAY, threshold=common.V_TH, spike_grad=Rectangle.apply,
                                    reset_mechanism="zero")

    def forward(self, x):
        xs = x.reshape(self.T, -1, *x.shape[1:])
        mem = self.leaky.reset_mem()
        out = []
        for t in range(self.T):
            spk, mem = self.leaky(xs[t], mem)
            out.append(spk)
        return torch.stack(out).reshape(x.shape)


def make_model(workload, timesteps):
    return build(workload, lambda: LIF(timesteps), timesteps)


def run(case):
    return _run(case, lambda: LIF(case.timesteps))
