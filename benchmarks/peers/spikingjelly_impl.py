"""SpikingJelly: multi-step LIFNode (tau = 4/3, decay_input=False -> H = 0.25 V + X), hard reset to 0,
detach_reset, PiecewiseLeakyReLU(w=0.5, c=0) = the rectangle surrogate of width 1."""
from __future__ import annotations

from spikingjelly.activation_based import neuron, surrogate
from torch import nn

from benchmarks import common
from benchmarks.peers.torch_common import build
from benchmarks.peers.torch_common import run as _run

LIBRARY = "spikingjelly"


class LIF(nn.Module):
    def __init__(self, timesteps: int):
        super().__init__()
        self.T = timesteps
        self.node = neuron.LIFNode(
            tau=1.0 / (1.0 - common.DECAY), decay_input=False, v_threshold=common.V_TH, v_reset=common.V_RESET,
            surrogate_function=surrogate.PiecewiseLeakyReLU(w=common.RECT_WIDTH / 2, c=0.0),
            detach_reset=True, step_mode="m",
        )

    def forward(self, x):
        self.node.reset()
        return self.node(x.reshape(self.T, -1, *x.shape[1:])).reshape(x.shape)


def make_model(workload, timesteps):
    return build(workload, lambda: LIF(timesteps), timesteps)


def run(case):
    return _run(case, lambda: LIF(case.timesteps))
