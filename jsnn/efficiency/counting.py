"""Counting what a ticket costs to run: synaptic operations, energy, activation and connection
sparsity, and memory footprint, per layer and per image, counted exactly.

``measure(model, variables, images)`` runs the network in evaluation mode over every
image (one jitted pass per batch that reuses the model's own forward) and counts what
depends on the input there; what the structure fixes (dense operations, BN and bias
operations, neurons, pooling) it reads from the model's description of its layers
(``jsnn.models.description``), checked against the shapes the pass sees. It counts:

* **Synaptic operations**, exactly, not from mean rates. Each conv / linear layer's
  input is captured as the model computes it (``jsnn.models.observe``); the
  count is that layer's conv / matmul of the binarised input (nonzero -> 1) with the
  binary kept-weight mask (kernel * mask nonzero -> 1), summed over outputs, all
  timesteps, positions and images: one operation per (nonzero input, kept weight)
  pair the layer actually touches (zero padding touches nothing). Per call of a layer
  (one timestep of one batch), an input whose values all lie in {-1, 0, 1} counts as
  accumulates (ACs, spikes); any other input as multiply-accumulates (MACs): the encoding
  conv, which sees the real-valued image, and a linear layer after a global average pool
  (Res-SNN-19's fc1). This is NeuroBench's ``SynapticOperations`` rule. Under direct
  encoding the encoding conv runs once per image, so its MACs are counted once, not T
  times. On event frames the first conv runs at every step on that step's frame: ACs at
  a step whose frames are all 0/1 (binarised), MACs where they hold event counts > 1.
* **Dense counts**: every weight at every output position, as often as the layer runs
  (T times; the encoding conv once), zero padding excluded = NeuroBench's "Dense"; the
  same network as an ANN (one pass, every weight, all MACs); and the "unpruned" count:
  the ticket's own spikes through every weight (what the mask alone saves at this activity).
* **Gated neurons** (``Variables.gates``, Shi et al.'s per-neuron masks): the model multiplies a LIF's spikes
  by its gate, so the next layer's input, captured as the model computes it, holds no spike of a gated-off
  neuron and its synaptic operations are gone from the count; the neuron table counts the spikes the layer
  emits (after the gate). Its neuron and membrane updates still count every neuron (it integrates in the model,
  as in Shi et al.; hardware would drop it).
* **Neurons**: per LIF layer the spikes, firing rate and activation sparsity (zero
  fraction of its outputs over every neuron, timestep and image); neuron updates
  (every neuron, every timestep) and NeuroBench's ``MembraneUpdates`` (every neuron at
  the first step, then each neuron-step whose stored potential, after reset and leak,
  changed). The spikes are recomputed from the layer's membrane potentials with the
  model's own spike function, so they are the model's spikes bit for bit.
* **Other operations**, not synaptic and not in the energy: BatchNorm (one
  multiply-add per normalised value; eval-mode BN folds into a scale and a shift),
  linear biases, pooling (a max pool: one comparison fewer than the window's values inside the
  map per output, 3 for a 2x2 pool; an average pool: one accumulate per value summed), and the
  spike-element-wise joins of SEW-ResNet (one add per value: ``residual_adds_per_image``). The
  next layer reads such a join's spike counts (0, 1, 2, ...) and, by the rule above, counts MACs
  at every call where a count exceeds 1.
* **Energy** = ACs * e_ac + MACs * e_mac (``EnergyModel``; default Horowitz 2014,
  45 nm, 32-bit float: 0.9 pJ per add, 3.7 + 0.9 = 4.6 pJ per multiply-add), for the
  ticket, for the unpruned network at the same activity, and for the dense ANN.
* **Connection sparsity**: zero fraction of the effective kernel (weights * masks).
* **Footprint**: bytes of the dense f32 parameters (kernels, biases, BN scale/bias,
  BN running mean/var); and the ticket stored sparsely: kept kernel values (f32) plus
  a bitmask, or plus CSR indices (each kernel as a [fan_out, fan_in] matrix: int16
  column indices when fan_in < 2**16, else int32; int32 row pointers), the rest dense.
  ``footprint_bytes`` is the smaller of the two sparse forms.

Counts are integers summed on the host (int64); per-image values are totals / images.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jsnn import data as jdata
from jsnn.models import build_model
from jsnn.models.description import Layer, describe
from jsnn.models.observe import observe
from jsnn.neuron import lif_reset
from jsnn.objective import preprocess
from jsnn.precision import compiler_options
from jsnn.variables import Variables

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm: 32-bit float add 0.9 pJ,
# multiply 3.7 pJ; a MAC is one of each. The figures SNN papers use for ACs and MACs.
E_AC_J = 0.9e-12
E_MAC_J = 4.6e-12
ENERGY_SOURCE = "Horowitz 2014 (ISSCC), 45 nm, 32-bit float: AC = add 0.9 pJ, MAC = multiply 3.7 + add 0.9 pJ"
DIRECT_ENCODING_NOTE = ("direct encoding: the encoding conv sees the real-valued image once per image; "
                        "its MACs are counted once, not once per timestep")
FRAMES_NOTE = ("event frames: the first conv sees frame t at step t and is counted at every step, by NeuroBench's "
               "rule per step: ACs where that step's input is all 0/1 (binarised frames), MACs where it holds "
               "event counts")
_INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in joules."""

    e_ac: float = E_AC_J
    e_mac: float = E_MAC_J

    def __post_init__(self):
        for name in ("e_ac", "e_mac"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"energy per operation {name} must be a finite number >= 0 (joules), got {value!r}")

    def energy(self, acs: float, macs: float) -> float:
        return acs * self.e_ac + macs * self.e_mac


# ----------------------------------------------------------------------------- counting pass

def _paths(tree) -> dict[str, Any]:
    """{"stage0_block0/conv1": kernel, ...} from a {path...: {"kernel": array}} tree."""
    return {"/".join(k[:-1]): v for k, v in traverse_util.flatten_dict(tree).items() if k[-1] == "kernel"}


@jax.jit  # one program for every layer, not three eager ones per kernel shape
def kept_mask(variables: Variables) -> dict[str, jax.Array]:
    """Binary kept-weight mask of every kernel: (weights * masks) != 0, as f32 {0, 1}."""
    w, m = _paths(variables.weights), _paths(variables.masks)
    return {p: ((w[p] * m[p].astype(w[p].dtype)) != 0).astype(jnp.float32) for p in w}


def _conv_count(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """Cross-correlation as ``jsnn.conv.conv2d`` computes it, of {0,1} operands, in f32
    (each output is a count <= k*k*C_in, exact)."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _taps(size: int, k: int, stride: int, pad: int, out: int) -> int:
    """Kernel taps, summed over the ``out`` output positions of one axis, that land inside the
    input (zero padding is not an operation: NeuroBench's dense count)."""
    return sum(1 for o in range(out) for t in range(k) if 0 <= o * stride + t - pad < size)


def _static_facts(layers: tuple[Layer, ...], timesteps: int) -> dict:
    """What the model's description fixes, per image (python values): for each conv / linear layer
    its dense operations and BN / bias operations per run and how often it runs; for each LIF layer
    its neurons; and the pooling operations."""
    facts = {"layers": {}, "neurons": {}, "pool_ops": 0, "add_ops": 0, "frames": bool(layers[0].frames)}
    for layer in layers:
        if layer.kind == "conv":
            (h, w, cin), (ho, wo, cout) = layer.in_shape, layer.out_shape
            k, s, pad = layer.kernel_size, layer.stride, layer.padding
            dense = _taps(h, k, s, pad, ho) * _taps(w, k, s, pad, wo) * cin * cout
            fact = {"kind": "conv", "shape": f"{k}x{k}x{cin}->{cout}, stride {s}, out {ho}x{wo}",
                    "extra_kind": "bn_ops", "extra_per_run": ho * wo * cout}
        elif layer.kind == "linear":
            cin, cout = layer.in_shape[-1], layer.out_shape[-1]
            dense = cin * cout
            fact = {"kind": "linear", "shape": f"{cin}->{cout}",
                    "extra_kind": "bias_adds", "extra_per_run": cout if layer.bias else 0}
        elif layer.kind == "lif":  # reported after the layer feeding it, as its firing statistics are kept
            facts["neurons"][layer.inputs[0]] = {"shape": layer.out_shape, "neurons": layer.size,
                                                 "timesteps": timesteps}
            continue
        elif layer.kind == "max_pool":  # comparisons: (window values inside the map) - 1 per output, every timestep
            (h, w, c), (ho, wo, _) = layer.in_shape, layer.out_shape
            k, s, pad = layer.window, layer.stride, layer.padding
            facts["pool_ops"] += (_taps(h, k, s, pad, ho) * _taps(w, k, s, pad, wo) - ho * wo) * c * timesteps
            continue
        elif layer.kind == "avg_pool":  # one accumulate per value summed, every timestep
            window = layer.window
            facts["pool_ops"] += (math.prod(layer.in_shape) if window == 0 else layer.size * window**2) * timesteps
            continue
        elif layer.kind == "add":  # a residual join: (inputs - 1) adds per value, every timestep
            facts["add_ops"] += (len(layer.inputs) - 1) * layer.size * timesteps
            continue
        else:  # the input and a flatten: no operations
            continue
        if dense > _INT32_MAX:
            raise ValueError(f"layer {layer.name} has {dense} dense operations per image and timestep; "
                             "more than the int32 per-row counters hold")
        # the encoding conv runs once per image (direct encoding), every other layer once per timestep (a conv
        # on event frames too: frame t at step t)
        facts["layers"][layer.name] = {**fact, "runs": 1 if layer.encoding else timesteps, "dense_per_run": dense}
    return facts


def _counting_pass(model: nn.Module, layers: tuple[Layer, ...], variables: Variables, images: jax.Array,
                   valid: jax.Array):
    """Runs ``model`` once (eval mode) and returns its logits and per-layer counts, each
    [rows per image, B] int32 with padded images zeroed."""
    batch = images.shape[0]
    kept = kept_mask(variables)
    lif = model.lif
    valid = valid.astype(jnp.int32)
    described = {layer.name: layer for layer in layers}
    logits, seen = observe(model, variables, images)

    def rows(v):  # [rows * B] (time-major blocks) -> [rows, B], padding images zeroed
        return v.reshape(-1, batch) * valid[None, :]

    connections = {}
    for path, call in seen.connections.items():
        layer, x = described[path], call.inputs
        _check_call(layer, call)
        kb = kept[path]
        xb = (x != 0).astype(jnp.float32)
        binary = _binary_calls(x, batch)
        if layer.kind == "conv":
            k, s, pad, cout = layer.kernel_size, layer.stride, layer.padding, layer.out_shape[-1]
            pairs = _conv_pairs(xb, kb, s, pad)
            # every weight kept: each nonzero input feeds C_out weights at every window that holds it
            covering = _fan_out(jnp.ones((k, k, 1, 1), jnp.float32), xb.shape[1:3] + (1,), s, pad)
            unpruned = _weighted_count(xb.sum(-1, keepdims=True), covering) * cout
        else:
            pairs = jnp.matmul(xb, kb, precision=jax.lax.Precision.HIGHEST).astype(jnp.int32).sum(-1)
            unpruned = xb.sum(-1).astype(jnp.int32) * layer.out_shape[-1]
        connections[path] = {"pairs": rows(pairs), "unpruned": rows(unpruned), "binary": binary,
                             "touched": jnp.any(rows(xb.reshape(xb.shape[0], -1).sum(-1)) > 0, axis=1)}

    neurons = {}
    gates = {"/".join(k[:-1]): g for k, g in traverse_util.flatten_dict(variables.gates).items()}
    for path, call in seen.neurons.items():
        t_steps = call.potentials.shape[0]
        u, s = call.potentials.reshape(t_steps, batch, -1), call.spikes.reshape(t_steps, batch, -1)
        h = lif_reset(u, s, lif.decay, lif.threshold, lif.reset_value, lif.reset)  # the potential each step keeps
        n = u.shape[-1]
        changed = jnp.concatenate([jnp.full((1, batch), n, jnp.int32), _count_true(h[1:] != h[:-1])])
        if path in gates:  # the spikes the layer emits: a gated-off neuron's never leave it
            s = s * (gates[path].reshape(-1) != 0)
        neurons[path] = {"spikes": _count_true(s != 0) * valid[None, :],
                         "membrane_updates": changed * valid[None, :]}
    return logits, connections, neurons


def _count_true(flags: jax.Array) -> jax.Array:
    """How many of each row's flags are set [..., N] -> [...], int32: as a product with a ones vector, which XLA's
    CPU backend computes in one pass (a sum over the last axis it split into a windowed reduction over a stored
    int32 copy); exact in f32 while a row is shorter than 2^24."""
    if flags.shape[-1] >= 2 ** 24:
        return flags.astype(jnp.int32).sum(-1)
    ones = jnp.ones(flags.shape[-1], jnp.float32)
    return jnp.matmul(flags.astype(jnp.float32), ones, precision=jax.lax.Precision.HIGHEST).astype(jnp.int32)


def _check_call(layer: Layer, call) -> None:
    x = call.inputs
    if tuple(x.shape[1:]) != layer.in_shape or tuple(call.outputs.shape[1:]) != layer.out_shape:
        raise ValueError(f"layer {layer.name} ran on {x.shape[1:]} -> {call.outputs.shape[1:]}, its description "
                         f"says {layer.in_shape} -> {layer.out_shape}")


def _binary_calls(x: jax.Array, batch: int) -> jax.Array:
    """NeuroBench decides per call of a layer (one timestep of one batch) whether its input is spikes: [rows]."""
    return jnp.all(((x == 0) | (x == 1) | (x == -1)).reshape(-1, batch, x[0].size), axis=(1, 2))


def _fan_out(kernel_counts: jax.Array, in_shape: tuple, stride: int, pad: int) -> jax.Array:
    """[H, W, C_in] int32: for each input value, the (output position, kept weight) pairs it feeds in a
    convolution whose kept weights per tap and input channel are ``kernel_counts`` [k, k, C_in, 1] (the kept
    mask summed over its output channels). It is the gradient of the sum of ``_conv_count`` over every output
    with respect to its input, which does not depend on the input: the sum over the output positions whose
    window holds the value (so zero padding and a stride's skipped rows feed nothing) of the kept weights at
    the tap it meets. Each value is at most k*k*C_out, an exact integer in f32."""
    x0 = jnp.zeros((1,) + tuple(in_shape), jnp.float32)
    out, pull = jax.vjp(lambda x: _conv_count(x, kernel_counts, stride, pad), x0)
    return pull(jnp.ones_like(out))[0][0].astype(jnp.int32)


def _weighted_count(xb: jax.Array, fan_out: jax.Array) -> jax.Array:
    """Each example's sum of its nonzero inputs' fan-out [N], int32: a convolution's count, without one."""
    return jnp.sum(xb.astype(jnp.int32) * fan_out[None], axis=(1, 2, 3))


def _conv_pairs(xb: jax.Array, kb: jax.Array, stride: int, pad: int) -> jax.Array:
    """(nonzero input, kept weight) pairs of each example's conv call [N], int32: each nonzero input of the
    binarised input ``xb`` weighted by how many kept weights of the mask ``kb`` leave it towards an output
    position (``_fan_out``), summed; the per-output-channel count of the convolution, summed, exactly."""
    return _weighted_count(xb, _fan_out(kb.sum(-1, keepdims=True), xb.shape[1:], stride, pad))


def _synops_pass(model: nn.Module, layers: tuple[Layer, ...], variables: Variables, images: jax.Array,
                 valid: jax.Array):
    """The logits and the pairs ``_counting_pass`` counts, and nothing else: per conv / linear layer its (nonzero
    input, kept weight) pairs per call and image [rows, B] and which calls see spikes [rows]. The model runs as
    ``apply_model`` does (no firing statistics, no membrane potentials kept); a conv's pairs as
    ``_conv_pairs`` counts them."""
    batch = images.shape[0]
    kept = kept_mask(variables)
    valid = valid.astype(jnp.int32)
    described = {layer.name: layer for layer in layers}
    logits, seen = observe(model, variables, images, neurons=False)
    counts = {}
    for path, call in seen.connections.items():
        layer, x = described[path], call.inputs
        _check_call(layer, call)
        xb = (x != 0).astype(jnp.float32)
        kb = kept[path]
        if layer.kind == "conv":
            pairs = _conv_pairs(xb, kb, layer.stride, layer.padding)
        else:
            pairs = jnp.matmul(xb, kb, precision=jax.lax.Precision.HIGHEST).astype(jnp.int32).sum(-1)
        counts[path] = {"pairs": pairs.reshape(-1, batch) * valid[None, :], "binary": _binary_calls(x, batch)}
    return logits, counts


def synops_pass(model: nn.Module, variables: Variables, images: jax.Array, valid: jax.Array):
    """``(logits [T, B, classes], counts)`` of one batch of the model's input ``images`` [B, ...] (``valid`` [B]:
    1 for a real image, 0 for padding), for a caller's own jitted step: the evaluation step runs it in place of
    the model's forward when an epoch's log wants its SynOps (``jsnn.trainer``), so accuracy and SynOps come
    from one pass. ``accumulates(counts)`` (on the host) is the batch's SynOps. The counts are
    ``measure_synops``' only when ``model`` computes at f32 (``counted_as_run``)."""
    return _synops_pass(model, tuple(describe(model, images.shape[1:])), variables, images, valid)


def accumulates(counts: dict) -> int:
    """The synaptic operations (accumulates) of ``synops_pass``' counts of one batch, summed exactly (int64)."""
    return sum(int(np.sum(np.asarray(c["pairs"])[np.asarray(c["binary"], bool)], dtype=np.int64))
               for c in counts.values())


def counted_as_run(model: nn.Module) -> bool:
    """Whether the counts of ``model``'s own forward are the cost report's: they are taken at f32
    (``_counting_model``), so a model computing in bf16 is counted by a pass of its own."""
    return _counting_model(model) is model


@functools.lru_cache(maxsize=8)
def _synops_counter(model: nn.Module, layers: tuple[Layer, ...]):
    return jax.jit(lambda variables, images, valid: _synops_pass(model, layers, variables, images, valid)[1],
                   compiler_options=compiler_options())  # counted at f32 (_counting_model)


def measure_synops(model: nn.Module, variables: Variables, images, *, batch_size: int = 128,
                   normalize: tuple | None = None) -> float:
    """SynOps per image (``measure``'s ``synops_per_image``, the same number) without the rest of the report: the
    accumulates of every layer over ``images``, counted by a pass that keeps only what they need (the model's
    forward and one single-channel count per layer), for a number wanted often, as each epoch's in the training
    log. ``images`` and ``normalize`` as ``measure`` takes them."""
    images = _checked_images(images, batch_size)
    model = _counting_model(model)
    run = _synops_counter(model, tuple(describe(model, images.shape[1:])))
    acs = sum(accumulates(counts) for _, _, counts in _batch_outputs(run, variables, images, batch_size, normalize))
    return acs / len(images)


@functools.lru_cache(maxsize=8)
def _counter(model: nn.Module, layers: tuple[Layer, ...]):
    """The jitted counting pass for ``model`` (compiled once per model and batch shape)."""

    def run(variables, images, valid):
        logits, connections, neurons = _counting_pass(model, layers, variables, images, valid)
        return jnp.argmax(logits.mean(0), -1), connections, neurons

    return jax.jit(run, compiler_options=compiler_options())  # counted at f32 (_counting_model)


def footprint(variables: Variables) -> dict:
    """Bytes of the dense f32 parameters and of the ticket stored sparsely (see module doc)."""
    leaves = [np.asarray(v) for tree in (variables.weights, variables.bn, variables.batch_stats)
              for v in jax.tree.leaves(tree)]
    dense = 4 * sum(v.size for v in leaves)
    w, m = _paths(variables.weights), _paths(variables.masks)
    rest, bitmask, csr, per_layer = dense, 0, 0, {}
    for path in sorted(w):
        kernel = np.asarray(w[path]) * np.asarray(m[path])
        total, kept = int(kernel.size), int(np.count_nonzero(kernel))
        fan_out = int(kernel.shape[-1])
        fan_in = total // fan_out
        index_bytes = 2 if fan_in < 2**16 else 4
        layer = {"dense_bytes": 4 * total,
                 "bitmask_bytes": 4 * kept + -(-total // 8),
                 "csr_bytes": 4 * kept + index_bytes * kept + 4 * (fan_out + 1)}
        per_layer[path] = layer
        rest -= layer["dense_bytes"]
        bitmask += layer["bitmask_bytes"]
        csr += layer["csr_bytes"]
    sparse = {"bitmask": rest + bitmask, "csr": rest + csr}
    best = min(sparse, key=sparse.get)
    return {"dense_f32_bytes": dense, "bitmask_bytes": sparse["bitmask"], "csr_bytes": sparse["csr"],
            "footprint_bytes": sparse[best], "format": best, "layers": per_layer}


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _checked_images(images, batch_size: int):
    """``images`` as the counting passes read them: an array-like with a shape (a streamed split's images) as it
    is, read batch by batch, anything else as an array; a non-empty [N, H, W, C] or [N, T, H, W, C], else a
    ValueError, as for a batch size below 1."""
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    if images.ndim not in (4, 5) or len(images) == 0:
        raise ValueError("images must be a non-empty batch [N, H, W, C], or event frames [N, T, H, W, C], "
                         f"got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return images


def _counting_model(model: nn.Module) -> nn.Module:
    """``model`` at f32: the counts are taken in f32, whatever precision the run trained in."""
    return model.clone(precision="f32") if getattr(model, "precision", "f32") != "f32" else model


def _batch_outputs(run, variables: Variables, images, batch_size: int, normalize: tuple | None):
    """(start, stop, host values of ``run(variables, x, valid)``) for each batch of ``images``, at most
    ``batch_size`` of them: one shape for jit, the last batch padded with zero images that ``valid`` marks
    (counted nowhere); raw pixels normalised as the evaluation step does when ``normalize = (mean, std)``."""
    n = len(images)
    batch_size = min(batch_size, n)
    variables = jax.device_put(variables)
    for start, stop in _batches(n, batch_size):
        x = images[start:stop]
        valid = np.zeros(batch_size, np.int32)
        valid[: stop - start] = 1
        if len(x) < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - len(x),) + x.shape[1:], x.dtype)])
        x = preprocess(x, *normalize) if normalize is not None else jnp.asarray(x, jnp.float32)
        yield start, stop, jax.device_get(run(variables, x, valid))


def measure(model: nn.Module, variables: Variables, images, labels=None, *, batch_size: int = 128,
            energy: EnergyModel = EnergyModel(), normalize: tuple | None = None) -> dict:
    """The cost report of ``model`` with ``variables`` over ``images`` [N, H, W, C] or event frames
    [N, T, H, W, C] (eval mode).

    ``images`` are the model's input, or raw pixels when ``normalize = (mean, std)`` is
    given (the evaluation step's preprocessing). ``labels`` [N] add the test accuracy.
    Returns a JSON-ready dict: totals, per-image values, ``layers`` and ``neurons`` tables.
    """
    images = _checked_images(images, batch_size)
    n = len(images)
    if labels is not None and len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    start_time = time.perf_counter()
    model = _counting_model(model)
    layers = tuple(describe(model, images.shape[1:]))
    static = _static_facts(layers, int(model.timesteps))
    run = _counter(model, layers)
    conn: dict[str, dict] = {}
    lif: dict[str, dict] = {}
    correct = 0
    for start, stop, (predicted, connections, neurons) in _batch_outputs(run, variables, images, batch_size,
                                                                         normalize):
        if labels is not None:
            correct += int(np.sum(predicted[: stop - start] == np.asarray(labels[start:stop])))
        for path, c in connections.items():
            acc = conn.setdefault(path, {"acs": 0, "macs": 0, "unpruned_acs": 0, "unpruned_macs": 0,
                                         "binary_calls": 0, "real_calls": 0})
            binary = np.asarray(c["binary"], bool)  # per call: each timestep's (or the image's) batch
            for kind, rows in (("acs", binary), ("macs", ~binary)):
                acc[kind] += int(np.sum(c["pairs"][rows], dtype=np.int64))
                acc["unpruned_" + kind] += int(np.sum(c["unpruned"][rows], dtype=np.int64))
            touched = np.asarray(c["touched"], bool)  # an all-zero input costs nothing either way
            acc["binary_calls"] += int(np.sum(binary & touched))
            acc["real_calls"] += int(np.sum(~binary & touched))
        for path, c in neurons.items():
            acc = lif.setdefault(path, {"spikes": 0, "membrane_updates": 0})
            for k in acc:
                acc[k] += int(np.sum(c[k], dtype=np.int64))
    report = _summarize(model, variables, static, conn, lif, n, energy)
    if labels is not None:
        report["test_accuracy"] = correct / n
    report["seconds"] = time.perf_counter() - start_time
    return report


def measure_synops_dataset(model: nn.Module, variables: Variables, dataset, *, batch_size: int = 128) -> float:
    """``measure_synops`` over a jsnn ``ArrayDataset``'s test images: ``measure_dataset``'s ``synops_per_image``."""
    return measure_synops(model, variables, dataset.test_images, batch_size=batch_size,
                          normalize=(dataset.mean, dataset.std))


def measure_dataset(model: nn.Module, variables: Variables, dataset, *, batch_size: int = 128,
                    energy: EnergyModel = EnergyModel()) -> dict:
    """``measure`` over a jsnn ``ArrayDataset``'s test images, preprocessed as the evaluation step does."""
    return measure(model, variables, dataset.test_images, dataset.test_labels, batch_size=batch_size,
                   energy=energy, normalize=(dataset.mean, dataset.std))


def _summarize(model, variables, static, conn, lif, n, energy: EnergyModel) -> dict:
    kept = {p: (int(np.count_nonzero(np.asarray(k))), int(k.size)) for p, k in kept_mask(variables).items()}
    layers = []
    totals = dict.fromkeys(("acs", "macs", "dense", "ann", "unpruned_acs", "unpruned_macs", "bn_ops", "bias_adds"), 0)
    for path, facts in static["layers"].items():
        c = conn[path]
        dense = facts["dense_per_run"] * facts["runs"] * n
        extra = facts["extra_per_run"] * facts["runs"] * n
        k, total = kept[path]
        inputs = ("spikes" if c["real_calls"] == 0 else "real" if c["binary_calls"] == 0 else "mixed")
        layers.append({
            "layer": path, "kind": facts["kind"], "shape": facts["shape"], "input": inputs,
            "runs_per_image": facts["runs"], "weights": total, "kept_weights": k,
            "connection_sparsity": 1.0 - k / total,
            "acs_per_image": c["acs"] / n, "macs_per_image": c["macs"] / n,
            "dense_ops_per_image": dense / n, "unpruned_ops_per_image": (c["unpruned_acs"] + c["unpruned_macs"]) / n,
            facts["extra_kind"] + "_per_image": extra / n,
            "energy_per_image_j": energy.energy(c["acs"], c["macs"]) / n,
            "acs": c["acs"], "macs": c["macs"], "dense_ops": dense,
        })
        totals["acs"] += c["acs"]
        totals["macs"] += c["macs"]
        totals["dense"] += dense
        totals["ann"] += facts["dense_per_run"] * n
        totals["unpruned_acs"] += c["unpruned_acs"]
        totals["unpruned_macs"] += c["unpruned_macs"]
        totals[facts["extra_kind"]] += extra
    neurons, spikes_total, slots_total, updates_total, membrane_total = [], 0, 0, 0, 0
    for path, facts in static["neurons"].items():
        c = lif[path]
        slots = facts["neurons"] * facts["timesteps"] * n
        neurons.append({
            "lif_after": path, "shape": "x".join(map(str, facts["shape"])), "neurons": facts["neurons"],
            "spikes_per_image": c["spikes"] / n, "firing_rate": c["spikes"] / slots,
            "activation_sparsity": 1.0 - c["spikes"] / slots,
            "neuron_updates_per_image": slots / n, "membrane_updates_per_image": c["membrane_updates"] / n,
            "spikes": c["spikes"],
        })
        spikes_total += c["spikes"]
        slots_total += slots
        updates_total += slots
        membrane_total += c["membrane_updates"]
    kept_total = sum(k for k, _ in kept.values())
    weights_total = sum(t for _, t in kept.values())
    e = energy.energy(totals["acs"], totals["macs"]) / n
    e_unpruned = energy.energy(totals["unpruned_acs"], totals["unpruned_macs"]) / n
    e_ann = energy.energy(0, totals["ann"]) / n
    fp = footprint(variables)
    return {
        "images": n, "timesteps": int(model.timesteps),
        "encoding": FRAMES_NOTE if static["frames"] else DIRECT_ENCODING_NOTE,
        "energy_model": {"e_ac_j": energy.e_ac, "e_mac_j": energy.e_mac,
                         "source": ENERGY_SOURCE if energy == EnergyModel() else "given"},
        "synops_per_image": totals["acs"] / n, "macs_per_image": totals["macs"] / n,
        "dense_macs_per_image": totals["dense"] / n, "ann_macs_per_image": totals["ann"] / n,
        "unpruned_synops_per_image": totals["unpruned_acs"] / n,
        "unpruned_macs_per_image": totals["unpruned_macs"] / n,
        "energy_per_image_j": e, "unpruned_energy_per_image_j": e_unpruned, "ann_energy_per_image_j": e_ann,
        "saving_vs_unpruned": e_unpruned / e if e else None, "saving_vs_ann": e_ann / e if e else None,
        "activation_sparsity": 1.0 - spikes_total / slots_total if slots_total else None,
        "firing_rate": spikes_total / slots_total if slots_total else None,
        "connection_sparsity": 1.0 - kept_total / weights_total, "kept_weights": kept_total,
        "total_weights": weights_total,
        "footprint_bytes": fp["footprint_bytes"], "dense_footprint_bytes": fp["dense_f32_bytes"],
        "footprint": {k: v for k, v in fp.items() if k != "layers"},
        "neuron_updates_per_image": updates_total / n, "membrane_updates_per_image": membrane_total / n,
        "bn_ops_per_image": totals["bn_ops"] / n, "bias_adds_per_image": totals["bias_adds"] / n,
        "pool_ops_per_image": static["pool_ops"], "residual_adds_per_image": static["add_ops"],
        "totals": {"synops": totals["acs"], "macs": totals["macs"], "dense_macs": totals["dense"],
                   "ann_macs": totals["ann"], "spikes": spikes_total, "membrane_updates": membrane_total},
        "layers": layers, "neurons": neurons,
    }


def ticket_entry(config, num_classes: int, variables: Variables, dataset=None,
                 energy: EnergyModel = EnergyModel()) -> dict:
    """The "efficiency" entry of a finished level / round: ``measure_dataset`` on the test
    set of ``config.dataset`` (loaded when ``dataset`` is None), at the run's batch size.
    Its "seconds" is the whole cost of the entry, loading and compilation included."""
    start = time.perf_counter()
    if dataset is None:
        dataset = jdata.load_dataset(config.dataset, config.data_dir, frames=config.frame_settings())
    model = build_model(config, num_classes)
    report = measure_dataset(model, jax.device_get(variables), dataset, batch_size=config.batch_size, energy=energy)
    report["seconds"] = time.perf_counter() - start  # everything: data, model, compilation, counting
    return report
