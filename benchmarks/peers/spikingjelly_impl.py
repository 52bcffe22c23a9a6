"""SpikingJelly: multi-step LIFNode (tau = 4/3, decay_input=False -> H = 0.25 V + X), hard reset to 0,
detach_reset, PiecewiseLeakyReLU(w=0.5, c=0) = the rectangle surrogate of width 1.

On a GPU, SpikingJelly's own fused kernels rather than its Python loop over T (``neuron_kernel``):
SpikingJelly 0.0.0.0.x takes ``backend="cupy"`` where CuPy is installed; 2.x picks its Triton/CUDA
kernels from the tensor's device, but only for the surrogates it has kernels for, which leave out the
rectangle, so there it runs the triangle of the same support (PiecewiseQuadratic, alpha = 2 / width):
the same work per step, another gradient shape. The CPU runs are as before (the rectangle, Python loop).
"""
from __future__ import annotations

import importlib.util
import inspect

from spikingjelly.activation_based import neuron, surrogate
from torch import nn

from benchmarks import common
from benchmarks.peers.torch_common import build, device_of
from benchmarks.peers.torch_common import run as _run

LIBRARY = "spikingjelly"


def neuron_kernel(on_gpu: bool) -> str:
    """"torch" (the Python loop over T), "cupy" (0.0.0.0.x) or "fused" (2.x, its kernels by device)."""
    if not on_gpu:
        return "torch"
    if "backend" in inspect.signature(neuron.LIFNode.__init__).parameters:
        return "cupy" if importlib.util.find_spec("cupy") is not None else "torch"
    return "fused"


class LIF(nn.Module):
    def __init__(self, timesteps: int, kernel: str = "torch"):
        super().__init__()
        self.T = timesteps
        rectangle = surrogate.PiecewiseLeakyReLU(w=common.RECT_WIDTH / 2, c=0.0)
        extra = {"backend": "cupy"} if kernel == "cupy" else {}
        self.node = neuron.LIFNode(
            tau=1.0 / (1.0 - common.DECAY), decay_input=False, v_threshold=common.V_TH, v_reset=common.V_RESET,
            surrogate_function=(surrogate.PiecewiseQuadratic(alpha=2.0 / common.RECT_WIDTH) if kernel == "fused"
                                else rectangle),
            detach_reset=True, step_mode="m", **extra,
        )

    def forward(self, x):
        self.node.reset()
        return self.node(x.reshape(self.T, -1, *x.shape[1:])).reshape(x.shape)


def make_model(workload, timesteps):
    return build(workload, lambda: LIF(timesteps), timesteps)


def run(case):
    kernel = neuron_kernel(device_of(case).type == "cuda")
    return {**_run(case, lambda: LIF(case.timesteps, kernel)), "neuron_kernel": kernel}
