"""Run a NIR graph in snnTorch 1.0 or Norse 1.1 (PyTorch, CPU), recording every neuron's spikes.

    net = snntorch_module(graph)            # snntorch.import_nir.import_from_nir
    net = norse_module(graph)               # norse.torch.from_nir(graph, dt=metadata dt)
    outputs, spikes = run_torch(net, images_nchw, timesteps)

Each importer's own reading of the graph is used unchanged, with one addition: snnTorch has no mapping for
``nir.Scale`` (a per-neuron gate), which runs here as the elementwise product; and one repair: both turn
NIR's batch-free ``Flatten(start_dim=0)`` into ``torch.nn.Flatten(0, -1)``, which would
flatten the batch axis too; the returned module's Flatten layers are shifted by one
axis so that a batch of images runs at once (the same as running them one by one).
Neither reads the graph's ``metadata["dt"]``: snnTorch assumes dt = 1e-4 (NIR_DT) and
Norse is told the graph's dt here.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np

from jsnn.interop.nir_export import NIR_DT, ExportError
from jsnn.interop.nir_import import graph_metadata


def _keep_batch_axis(module):
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.Flatten) and m.start_dim >= 0:
            m.start_dim += 1
            if m.end_dim >= 0:
                m.end_dim += 1
    return module


def _scale_module(node):
    """``nir.Scale`` as the elementwise product over a batch (snnTorch 1.0 and nirtorch 2.6 map no Scale)."""
    import torch

    class Scale(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.register_buffer("scale", torch.tensor(np.asarray(scale, np.float32)))

        def forward(self, x):
            return x * self.scale

    return Scale(node.scale)


@contextlib.contextmanager
def _scale_mapped():
    """nirtorch's default node map with ``nir.Scale`` added while an import runs (snnTorch's import passes its
    own map for its neurons and layers and takes the rest from nirtorch's defaults)."""
    import nir
    from nirtorch import nir_interpreter

    added = nir.Scale not in nir_interpreter.DEFAULT_MAP
    if added:
        nir_interpreter.DEFAULT_MAP[nir.Scale] = _scale_module
    try:
        yield
    finally:
        if added:
            nir_interpreter.DEFAULT_MAP.pop(nir.Scale, None)


def snntorch_module(graph):
    """snnTorch's import of ``graph`` (a torch.fx GraphModule of Leaky neurons, init_hidden); a ``nir.Scale``
    node (a per-neuron gate, nir_export.py) runs as the elementwise product."""
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()), _scale_mapped():  # it prints every LIF's parameter arrays
        net = import_from_nir(copy.deepcopy(graph))  # and rewrites the graph it is given
    return _keep_batch_axis(net).eval()


def norse_module(graph, dt: float | None = None):
    """Norse's import of ``graph`` at the graph's dt (``metadata["dt"]``, else NIR_DT)."""
    import norse.torch

    dt = float(graph_metadata(graph).get("dt", NIR_DT)) if dt is None else dt
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # Norse warns on every LIF whose r is not 1 (snnTorch's own exports)
    try:
        net = norse.torch.from_nir(copy.deepcopy(graph), dt=dt)
    finally:
        root.setLevel(level)
    _check_execution_order(net, graph)
    return _keep_batch_axis(net).eval()


def _check_execution_order(net, graph):
    """Norse 1.1 runs the graph with nirtorch's older executor, which orders the nodes by a
    depth-first walk from the input (children in edge order). Where a node has inputs on two
    paths (a residual block's conv shortcut) it can come before one of them, which is then
    read from the previous timestep: refuse such graphs rather than run them wrong."""
    from nirtorch.utils import sanitize_name

    position = {node.name: i for i, node in enumerate(net.execution_order)}
    for source, target in graph.edges:
        s, t = sanitize_name(source), sanitize_name(target)
        if s in position and t in position and position[s] > position[t]:
            raise ExportError(
                f"Norse 1.1 cannot run this graph: its executor (nirtorch.load, depth-first) computes {target} "
                f"before its input {source}, so {target} would read {source} from the previous timestep. "
                "Residual blocks with a conv shortcut (Res-SNN-19) run in snnTorch and jsnn; "
                "plain stacks (SNN-VGG, digits_cnn) run in all three")


def _neuron_names(net):
    """{module name: module} of every spiking neuron the importer built."""
    import snntorch
    from norse.torch.module.lif_box import LIFBoxCell

    return {name: m for name, m in net.named_modules() if isinstance(m, (snntorch.Leaky, LIFBoxCell))}


def run_torch(net, images_nchw: np.ndarray, timesteps: int, batch_size: int = 128):
    """Runs ``net`` for ``timesteps`` steps on ``images_nchw`` [N, C, H, W] presented at every
    step (direct encoding), or on event frames [N, T, C, H, W], frame t at step t; fresh state
    per batch.

    Returns ``(outputs [T, N, n], {neuron module name: spikes [T, N, ...]})`` as numpy.
    """
    import torch

    frames = np.ndim(images_nchw) == 5
    if frames and np.shape(images_nchw)[1] != timesteps:
        raise ValueError(f"{np.shape(images_nchw)[1]} event frames per example for {timesteps} timesteps")
    neurons = _neuron_names(net)
    is_snntorch = type(net).__name__ == "GraphModule"
    outs, recs = [], {name: [] for name in neurons}
    for start in range(0, len(images_nchw), batch_size):
        x = torch.tensor(np.asarray(images_nchw[start:start + batch_size], np.float32))
        step_spikes = {name: [] for name in neurons}
        hooks = [m.register_forward_hook(_recorder(step_spikes[name])) for name, m in neurons.items()]
        try:
            batch_out = []
            with torch.no_grad():
                if is_snntorch:
                    from snntorch import utils

                    utils.reset(net)
                    for m in neurons.values():  # fresh membrane, sized by the first step
                        m.mem = torch.zeros(1)
                    for t in range(timesteps):
                        out = net(x[:, t] if frames else x)
                        out = out[0] if isinstance(out, tuple) else out
                        batch_out.append(out.numpy().copy())
                else:
                    state = None
                    for t in range(timesteps):
                        out, state = net(x[:, t] if frames else x, state)
                        batch_out.append(out.numpy().copy())
        finally:
            for h in hooks:
                h.remove()
        outs.append(np.stack(batch_out))
        for name in neurons:
            recs[name].append(np.stack(step_spikes[name]))
    return np.concatenate(outs, axis=1), {name: np.concatenate(v, axis=1) for name, v in recs.items()}


def _recorder(into: list):
    def hook(module, inputs, output):
        z = output[0] if isinstance(output, tuple) else output
        into.append(z.detach().numpy().copy())

    return hook
