"""Plain PyTorch: a hand-written multi-step LIF loop (the reference for the equality check)."""
from __future__ import annotations

import torch
from torch import nn

from benchmarks import common
from benchmarks.peers.torch_common import Rectangle, build
from benchmarks.peers.torch_common import run as _run

LIBRARY = "torch"


class LIF(nn.Module):
    """Folded currents [T*B, ...] -> spikes.

    U = H + X, S = step(U - V_th), H = V_reset*S + beta*U*(1 - S) (S detached).
    """

    def __init__(self, timesteps: int):
        super().__init__()
        self.T = timesteps

    def forward(self, x):
        xs = x.reshape(self.T, -1, *x.shape[1:])
        h, out = torch.zeros_like(xs[0]), []
        for t in range(self.T):
            u = h + xs[t]
            s = Rectangle.apply(u - common.V_TH)
            sd = s.detach()
            h = common.V_RESET * sd + common.DECAY * u * (1.0 - sd)
            out.append(s)
        return torch.stack(out).reshape(x.shape)


def make_model(workload, timesteps):
    return build(workload, lambda: LIF(timesteps), timesteps)


def run(case):
    return _run(case, lambda: LIF(case.timesteps))
