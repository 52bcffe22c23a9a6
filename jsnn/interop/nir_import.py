"""Run a NIR graph in jsnn: ``from_nir(graph) -> (NIRNetwork, Variables)``.

The network is a flax module like jsnn's own models: images NHWC [B, H, W, C]
(normalised; repeated at every step) or event frames [B, T, H, W, C] (frame t at step t)
-> outputs [T, B, n], one per timestep, through
``jsnn.variables.apply_model``. Conv and affine kernels sit in the ``weights``
collection in jsnn's layouts (conv HWIO, linear [in, out]) with a ``masks``
entry of the same shape ((kernel != 0) on import), so jsnn's pruning code reads them
like any model's kernels. Stateless nodes run once on all timesteps folded into the
batch axis; only the neurons scan over time (as in ``jsnn.layers``).

The subset read is the one ``to_nir`` writes plus what other tools commonly write:
Input, Output, Conv2d, Affine, Linear, Flatten, SumPool2d, AvgPool2d (no padding), LIF, and Scale (an
elementwise product: ``to_nir``'s per-neuron gates).
Several edges into one node are summed. A LIF at step dt (``metadata["dt"]``, else
``dt`` given, else NIR_DT) becomes jsnn's discrete neuron (``lif_from_nir``): per-neuron
decay, threshold, reset value and leak current. ``threshold_rule`` picks when a
neuron fires: "jsnn" at U >= theta (jsnn's own LIF), "nir" at U > theta (NIR's
definition and both importers').
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jsnn.conv import conv2d
from jsnn.interop.nir_export import NIR_DT, ExportError, lif_from_nir
from jsnn.layers import MASKS, WEIGHTS, fold_time, unfold_time
from jsnn.neuron import lif_step
from jsnn.surrogate import make_spike_fn
from jsnn.variables import Variables

SUPPORTED = ("Input", "Output", "Conv2d", "Affine", "Linear", "Flatten", "SumPool2d", "AvgPool2d", "LIF", "Scale")


class _Frozen:
    """A numpy array as a hashable, comparable module attribute (by value)."""

    def __init__(self, array):
        self.array = np.asarray(array)
        self._key = (self.array.shape, self.array.dtype.str, self.array.tobytes())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Frozen) and self._key == other._key


def _pair(v):
    v = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(v[0]), int(v[-1]))


def graph_metadata(graph) -> dict:
    """The graph's metadata as a dict, HDF5 byte strings decoded."""
    meta = dict(getattr(graph, "metadata", None) or {})
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in meta.items()}


def _topological(nodes, edges) -> list[str]:
    preds = {n: [s for s, d in edges if d == n] for n in nodes}
    order, done, visiting = [], set(), set()

    def visit(n):
        if n in done:
            return
        if n in visiting:
            raise ExportError(f"the NIR graph has a cycle through {n}: recurrent graphs are not supported")
        visiting.add(n)
        for p in preds[n]:
            visit(p)
        visiting.discard(n)
        done.add(n)
        order.append(n)

    for n in nodes:
        visit(n)
    return order


class NIRNetwork(nn.Module):
    """A NIR graph as a jsnn model: images [B, H, W, C] -> outputs [T, B, n].

    ``spec``: ((name, kind, attrs), ...) in topological order; ``edges``: (source, target).
    Call with ``record=True`` to also get every LIF node's spikes, NIR layout [T, B, C, H, W].
    """

    spec: tuple
    edges: tuple
    timesteps: int
    threshold_rule: str = "jsnn"
    surrogate: str = "atan"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, record: bool = False):
        del train  # no BN, no dropout: the same in both modes
        if self.threshold_rule not in ("jsnn", "nir"):
            raise ValueError("threshold_rule must be 'jsnn' (U >= theta) or 'nir' (U > theta), "
                             f"got {self.threshold_rule!r}")
        T = self.timesteps
        spike = make_spike_fn(self.surrogate)
        values: dict[str, Any] = {}
        spikes = {}
        out = None
        for name, kind, attrs in self.spec:
            attrs = dict(attrs)
            sources = [s for s, d in self.edges if d == name]
            x = None
            for s in sources:
                x = values[s] if x is None else x + values[s]
            if kind != "Input" and not sources:
                raise ExportError(f"NIR node {name} has no incoming edge")
            if kind == "Input":
                want = attrs["shape"]
                want = (want[1], want[2], want[0]) if len(want) == 3 else want  # NIR's (C, H, W): NHWC here
                frames = images.ndim == len(want) + 2  # event frames [B, T, ...]: frame t at step t
                per_step = images.shape[2:] if frames else images.shape[1:]
                if (want and tuple(per_step) != tuple(want)) or (frames and images.shape[1] != T):
                    raise ValueError(f"the NIR graph's input is {want} per example and step (channel-last), "
                                     f"over {T} steps; got input of shape {tuple(images.shape)}")
                # event frames time-major, or direct encoding: the image at every timestep; folded [T*B, H, W, C]
                y = fold_time(jnp.swapaxes(images, 0, 1) if frames else jnp.broadcast_to(images, (T,) + images.shape))
            elif kind == "Output":
                out = x
                continue
            elif kind == "Conv2d":
                y = _conv(self, name, x, attrs)
            elif kind in ("Affine", "Linear"):
                y = _dense(self, name, x, attrs, kind == "Affine")
            elif kind == "Flatten":
                y = _flatten(x, attrs["start_dim"], attrs["end_dim"])
            elif kind in ("SumPool2d", "AvgPool2d"):
                y = _pool(x, attrs, average=kind == "AvgPool2d")
            elif kind == "Scale":  # NIR's (C, H, W) factors on channel-last maps
                scale = jnp.asarray(attrs["scale"].array, x.dtype)
                y = x * (jnp.moveaxis(scale, 0, -1) if scale.ndim == 3 and x.ndim == 4 else scale)
            elif kind == "LIF":
                y = _lif(x, T, attrs, spike, self.threshold_rule)
                if record:
                    spikes[name] = _nir_layout(unfold_time(y, T))
            else:  # from_nir admits only SUPPORTED
                raise ExportError(f"NIR node {name} of type {kind} is not supported")
            values[name] = y
        if out is None:
            raise ExportError("the NIR graph has no Output node")
        out = unfold_time(out, T)
        return (out, spikes) if record else out


def _nir_layout(x):
    """[T, B, H, W, C] -> [T, B, C, H, W]; other ranks unchanged."""
    return jnp.moveaxis(x, -1, 2) if x.ndim == 5 else x


class _NodeParams(nn.Module):
    """One node's kernel (and bias) with its mask: weights/<node>/kernel, masks/<node>/kernel."""

    kernel_shape: tuple
    use_bias: bool

    @nn.compact
    def __call__(self):
        kernel = self.variable(WEIGHTS, "kernel", jnp.zeros, self.kernel_shape, jnp.float32).value
        mask = self.variable(MASKS, "kernel", jnp.ones, self.kernel_shape, jnp.float32).value
        bias = (self.variable(WEIGHTS, "bias", jnp.zeros, (self.kernel_shape[-1],), jnp.float32).value
                if self.use_bias else None)
        return kernel * mask, bias


def _params(module, name, kernel_shape, use_bias):
    del module  # the parent is the module whose compact method is running
    return _NodeParams(tuple(kernel_shape), use_bias, name=name)()


def _conv(module, name, x, attrs):
    kh, kw, cin, cout = attrs["kernel_shape"]
    kernel, bias = _params(module, name, (kh, kw, cin, cout), True)
    stride, pad = attrs["stride"], attrs["padding"]
    if stride[0] == stride[1] and pad[0] == pad[1] and attrs["dilation"] == (1, 1) and attrs["groups"] == 1:
        y = conv2d(x, kernel.astype(x.dtype), stride[0], pad[0])  # the conv jsnn's own layers call
    else:
        y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), stride, [(p, p) for p in pad],
                                         rhs_dilation=attrs["dilation"], feature_group_count=attrs["groups"],
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(y.dtype)


def _dense(module, name, x, attrs, use_bias):
    kernel, bias = _params(module, name, attrs["kernel_shape"], use_bias)
    y = x @ kernel.astype(x.dtype)
    return y if bias is None else y + bias.astype(y.dtype)


def _flatten(x, start_dim, end_dim):
    """NIR's batch-free Flatten over (C, H, W) on folded NHWC input [N, H, W, C]."""
    if x.ndim == 4:
        x = jnp.moveaxis(x, -1, 1)  # channel-first, as NIR orders the flattened features
    dims = x.shape[1:]
    start = start_dim % len(dims)
    end = end_dim % len(dims)
    shape = dims[:start] + (int(np.prod(dims[start:end + 1])),) + dims[end + 1:]
    y = x.reshape((x.shape[0],) + shape)
    if y.ndim == 4:  # still a map: back to channel-last
        y = jnp.moveaxis(y, 1, -1)
    return y


def _pool(x, attrs, average):
    kernel, stride, pad = attrs["kernel_size"], attrs["stride"], attrs["padding"]
    if pad != (0, 0):
        raise ExportError("pooling with padding is not supported (the importers drop it, see NIRTorch #44)")
    y = jax.lax.reduce_window(x, jnp.zeros((), x.dtype), jax.lax.add, (1,) + kernel + (1,), (1,) + stride + (1,),
                              "VALID")
    return y / (kernel[0] * kernel[1]) if average else y


def _lif(x, T, attrs, spike, rule):
    """The discrete neuron (``lif_from_nir``) over folded currents [T*B, ...]."""
    p = {k: jnp.asarray(attrs[k].array, jnp.float32) for k in ("decay", "threshold", "reset_value", "leak_current")}
    if x.ndim == 4:  # NIR's (C, H, W) parameters on channel-last maps
        p = {k: jnp.moveaxis(v, 0, -1) if v.ndim == 3 else v for k, v in p.items()}
    currents = unfold_time(x, T)
    leak = p["leak_current"]
    if attrs["has_leak"]:
        currents = currents + leak

    threshold = p["threshold"]
    if rule == "jsnn":
        def fire(u):
            return spike(u - threshold)
    else:
        def fire(u):
            return 1.0 - spike(threshold - u)

    def step(h, xt):
        h, s, _ = lif_step(h, xt, fire, p["decay"], threshold, p["reset_value"])  # NIR's LIF: a hard reset
        return h, s

    _, s = jax.lax.scan(step, jnp.zeros(currents.shape[1:], currents.dtype), currents, unroll=T)
    return fold_time(s)


def _spec_of(name, node, dt):
    import nir

    kind = type(node).__name__
    if kind not in SUPPORTED:
        raise ExportError(f"NIR node {name} is a {kind}; jsnn reads {', '.join(SUPPORTED)}")
    attrs, params = {}, {}
    if isinstance(node, nir.Input):
        shape = node.input_type.get("input")
        attrs = {"shape": () if shape is None else tuple(int(v) for v in np.atleast_1d(shape))}
    elif isinstance(node, nir.Conv2d):
        if isinstance(node.padding, str):
            raise ExportError(f"NIR Conv2d {name}: padding {node.padding!r} is not supported; use explicit padding")
        w = np.asarray(node.weight)
        attrs = {"kernel_shape": tuple(int(s) for s in (w.shape[2], w.shape[3], w.shape[1], w.shape[0])),
                 "stride": _pair(node.stride), "padding": _pair(node.padding), "dilation": _pair(node.dilation),
                 "groups": int(np.asarray(node.groups))}
        if attrs["groups"] != 1:
            raise ExportError(f"NIR Conv2d {name}: groups != 1 is not supported")
        params = {"kernel": w.transpose(2, 3, 1, 0),
                  "bias": np.zeros(w.shape[0]) if node.bias is None else np.asarray(node.bias)}
    elif isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise ExportError(f"NIR {kind} {name}: weight of shape {w.shape}; expected [out, in]")
        attrs = {"kernel_shape": (int(w.shape[1]), int(w.shape[0]))}
        params = {"kernel": w.T}
        if isinstance(node, nir.Affine):
            params["bias"] = np.zeros(w.shape[0]) if node.bias is None else np.asarray(node.bias)
    elif isinstance(node, nir.Flatten):
        attrs = {"start_dim": int(node.start_dim), "end_dim": int(node.end_dim)}
    elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        attrs = {"kernel_size": _pair(node.kernel_size), "stride": _pair(node.stride),
                 "padding": _pair(node.padding)}
    elif isinstance(node, nir.Scale):
        attrs = {"scale": _Frozen(np.asarray(node.scale, np.float32))}
    elif isinstance(node, nir.LIF):
        p = lif_from_nir(node, dt)
        attrs = {k: _Frozen(v.astype(np.float32)) for k, v in p.items()}
        attrs["has_leak"] = bool(np.any(p["leak_current"] != 0))
    return (name, kind, tuple(sorted(attrs.items()))), params


def from_nir(graph, dt: float | None = None, timesteps: int | None = None, threshold_rule: str = "jsnn"):
    """A NIR graph as ``(NIRNetwork, Variables)`` for ``jsnn.variables.apply_model``.

    ``dt``: the LIF time step (default: the graph's ``metadata["dt"]``, else NIR_DT);
    ``timesteps``: T (default: ``metadata["timesteps"]``). Raises ExportError for a node
    type or setting outside the subset (the message names it).
    """
    meta = graph_metadata(graph)
    dt = float(meta.get("dt", NIR_DT)) if dt is None else float(dt)
    if timesteps is None:
        if "timesteps" not in meta:
            raise ExportError("the NIR graph does not say how many timesteps to run (metadata 'timesteps'); "
                              "pass timesteps=")
        timesteps = int(meta["timesteps"])
    nodes = dict(graph.nodes)
    edges = [(str(s), str(d)) for s, d in graph.edges]
    for s, d in edges:
        if s not in nodes or d not in nodes:
            raise ExportError(f"NIR edge {s} -> {d} names a node the graph does not have")
    for kind in ("Input", "Output"):
        if sum(type(n).__name__ == kind for n in nodes.values()) != 1:
            raise ExportError(f"jsnn runs NIR graphs with exactly one {kind} node")
    spec, weights, masks = [], {}, {}
    for name in _topological(nodes, edges):
        entry, params = _spec_of(name, nodes[name], dt)
        spec.append(entry)
        if params:
            weights[name] = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
            masks[name] = {"kernel": (weights[name]["kernel"] != 0).astype(jnp.float32)}
    model = NIRNetwork(tuple(spec), tuple(edges), timesteps, threshold_rule)
    return model, Variables(weights=weights, masks=masks, bn={}, batch_stats={})
