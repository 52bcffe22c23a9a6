"""A jsnn network (a ticket: weights × masks, BN, LIF) as a NIR graph (``nir`` 1.0).

``to_nir(model, variables, image_shape)`` walks the model's own description of its layers
(``model.layers(image_shape)``, ``jsnn.models.description``) and writes, in NIR's batch-free
channel-first layout (C, H, W):

- **Input**: the normalised image, presented unchanged at every timestep (direct
  encoding); ``metadata`` holds the pixel ``input_mean``/``input_std`` to normalise with.
  On event frames (``image_shape`` (T, H, W, C)) the Input is one frame, (C, H, W), and
  frame t is presented at step t (``metadata["encoding"]`` says which).
- **Conv2d / Affine** per conv / linear layer: the effective kernel weights × mask
  (a pruned weight is exactly 0), eval-mode BN folded in (``fold_bn``):
  ``y = a * conv(x, W) + c`` with ``a = gamma / sqrt(var + eps)``, ``c = beta - mean * a``
  becomes ``conv(x, a * W) + c``.
- **LIF** per spiking layer (``lif_to_nir``). NIR's LIF is continuous-time,
  ``tau dv/dt = (v_leak - v) + r I``, spike when ``v > v_threshold``, then ``v = v_reset``.
  Both importers step it with forward Euler at a time step dt:
  ``v[t] = v[t-1] + (dt / tau) (v_leak - v[t-1] + r I[t])``. jsnn's neuron (U = beta H + X, hard reset to 0) is
  ``U[t] = H[t-1] + X[t]``, spike when ``U >= theta``, ``H = V_reset`` after a spike,
  else ``beta U``. With

      tau = dt / (1 - beta),  r = 1,  v_leak = 0,
      v_threshold = (1 - beta) theta,  v_reset = (1 - beta) V_reset / beta

  the Euler step is ``v[t] = beta v[t-1] + (1 - beta) I[t]``, so ``v = (1 - beta) U`` at
  every step: the same spikes (jsnn fires at ``U = theta`` exactly, NIR only above it),
  and a reset to v_reset decays to ``(1 - beta) V_reset`` by the next step, as jsnn's
  ``H = V_reset``. dt is ``NIR_DT`` = 1e-4, the step snnTorch 1.0.0 hard-codes in its
  import; give Norse ``dt=NIR_DT``. How the importers read this (verified in
  tests/test_nir.py): snnTorch rebuilds ``beta = 1 - dt/tau`` and, as ``r dt / tau``
  = 1 - beta is not 1, divides the threshold by it, back to theta; it ignores v_reset
  (always 0). Norse steps ``v`` itself with ``dt/tau = 1 - beta`` and ignores ``r``
  (1 here) and v_reset. Neither can express V_reset != 0 or a soft reset (NIR's LIF
  has only the reset to v_reset): ``to_nir`` refuses a soft-reset network.
- **Scale** after a LIF whose spikes are gated per neuron (``Variables.gates``: Shi et al.'s neuron masks,
  jsnn/sparsity/connection_penalty.py): NIR's elementwise product by the gate in (C, H, W), an exact diagonal weight.
  Not the gated neurons' outgoing weights zeroed instead: a conv's weight is shared by every position, so a gate on one
  position of a map has no place in the next conv's kernel (it would be exact only for a linear layer reading the map
  directly, and never through a max pool). snnTorch 1.0's import has no mapping for ``nir.Scale``;
  ``torch_sims.snntorch_module`` maps it to the elementwise product.
- **Max pool 2×2** over binary spikes is an OR, exactly a 2×2 **SumPool2d**
  (counts 0..4) followed by ``or_neuron``: a LIF with no memory (tau = dt, so
  beta = 0) and v_threshold 0.5, which fires iff the count is >= 1 under either
  threshold rule (> and >=).
  A padded or overlapping max pool (SEW-ResNet's 3×3 stride 2 stem pool) counts its window
  with a **Conv2d** of ones on the channel diagonal (zero padding adds nothing), as snnTorch
  drops a SumPool2d's padding (nirtorch's TODO); the same ``or_neuron`` follows.
- **Average pool** (Res-SNN-19's global pool, VGGSNN's 2×2 pools): a **SumPool2d**, its
  1 / window² folded into the next conv or affine layer's weight (Norse has no AvgPool2d;
  snnTorch and Norse both read SumPool2d).
- **Flatten** (``start_dim=0``) of (C, H, W); jsnn flattens NHWC in (H, W, C) order, so
  the classifier's weight columns are permuted to NIR's (C, H, W) order.
- **Affine** classifier to the **Output**: logits per timestep; the prediction is the
  argmax of their mean over time (``metadata["readout"]``).
- Residual blocks (Res-SNN-19): a node with several incoming edges sums them (NIR's
  rule). SEW-ResNet's spike-element-wise ADD has no node: every reader of a join takes an
  edge from each spike map it sums (the block's conv2 LIF, and the identity: the previous
  join's inputs, or the downsample's LIF). snnTorch runs such graphs; Norse 1.1's executor orders nodes depth-first and
  would compute a block's join before its conv shortcut, so ``norse_module`` refuses
  them (torch_sims.py).
"""
from __future__ import annotations

import numpy as np
from flax import traverse_util

from jsnn.models.description import Layer, describe

NIR_DT = 1e-4  # the LIF time step: snnTorch 1.0.0's import_nir hard-codes dt = 1e-4
OR_THRESHOLD = 0.5  # any value in (0, 1): a count of binary spikes crosses it iff it is >= 1
DIRECT_ENCODING = "direct: the normalised image (pixel - input_mean) / input_std at every timestep"
FRAMES_ENCODING = ("frames: event frame t of the example, normalised (x - input_mean) / input_std, at timestep t "
                   "(the Input is one frame)")


class ExportError(ValueError):
    """A network or setting NIR (or its importers) cannot express; the message says which."""


def lif_to_nir(shape, decay: float, threshold: float, reset_value: float = 0.0, reset: str = "hard",
               dt: float = NIR_DT):
    """jsnn's discrete LIF (decay beta, threshold theta, hard reset to V_reset) as a ``nir.LIF``
    over neurons of ``shape`` (C, H, W) or (features,), at time step ``dt`` (module docstring)."""
    import nir

    if reset != "hard":
        raise ExportError(
            f"a LIF with {reset!r} reset cannot be exported: NIR 1.0's LIF only resets to v_reset "
            "(snnTorch and Norse import it as a reset to 0); export networks trained with reset='hard', "
            "or pass soft_reset_as_hard (--soft-reset-as-hard) to export it as a hard reset and measure the difference")
    if not 0.0 <= decay < 1.0:
        raise ExportError(f"LIF decay {decay} has no NIR LIF time constant (tau = dt/(1 - decay) needs "
                          "decay < 1; decay 1 is an IF neuron, which snnTorch 1.0.0 imports wrongly)")
    if reset_value != 0.0 and decay == 0.0:
        raise ExportError("a reset value != 0 with decay 0 is not expressible: NIR's reset potential "
                          "decays by the next step, jsnn's does not")
    one = np.ones(tuple(int(s) for s in shape), np.float64)
    w = 1.0 - decay
    return nir.LIF(
        tau=one * (dt / w),
        r=one.copy(),
        v_leak=np.zeros_like(one),
        v_threshold=one * (w * threshold),
        v_reset=one * (w * reset_value / decay if reset_value else 0.0),
    )


def lif_from_nir(node, dt: float = NIR_DT) -> dict[str, np.ndarray]:
    """The discrete LIF a ``nir.LIF`` is at step ``dt``, per neuron, in jsnn's units
    (U = v / (r dt / tau)): ``decay`` beta, ``threshold`` theta, ``reset_value`` (H after a
    spike) and ``leak_current`` (a constant input from v_leak, 0 for jsnn's own graphs)."""
    k = dt / np.asarray(node.tau, np.float64)  # dt / tau
    if np.any(k <= 0) or np.any(k > 1):
        raise ExportError(f"LIF with dt/tau outside (0, 1] at dt = {dt}: Euler is unstable there; "
                          "give the time step the graph was made for")
    scale = np.asarray(node.r, np.float64) * k  # v = scale * U
    decay = 1.0 - k
    v_reset = np.zeros_like(k) if node.v_reset is None else np.asarray(node.v_reset, np.float64)
    return {
        "decay": decay,
        "threshold": np.asarray(node.v_threshold, np.float64) / scale,
        "reset_value": decay * v_reset / scale,
        "leak_current": k * np.asarray(node.v_leak, np.float64) / scale,
    }


def or_neuron(shape, dt: float = NIR_DT):
    """A memoryless threshold neuron: fires iff its input (a count of spikes) is >= 1."""
    return lif_to_nir(shape, decay=0.0, threshold=OR_THRESHOLD, dt=dt)


def fold_bn(kernel, mean, var, epsilon: float, scale=None, bias=None):
    """Eval-mode BN after a conv / linear kernel (output channels on the last axis) as
    ``(kernel * a, c)``: ``a = scale / sqrt(var + eps)``, ``c = bias - mean * a``.
    A zero (pruned) weight stays exactly zero."""
    kernel = np.asarray(kernel, np.float64)
    inv = 1.0 / np.sqrt(np.asarray(var, np.float64) + epsilon)
    a = inv if scale is None else inv * np.asarray(scale, np.float64)
    c = -np.asarray(mean, np.float64) * a
    if bias is not None:
        c = c + np.asarray(bias, np.float64)
    return (kernel * a).astype(np.float32), c.astype(np.float32)


def _oihw(kernel_hwio):
    return np.ascontiguousarray(np.asarray(kernel_hwio).transpose(3, 2, 0, 1))


def _chw(shape):
    """A description's channel-last shape in NIR's channel-first order: (H, W, C) -> (C, H, W)."""
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)


class _Builder:
    """Collects NIR nodes and edges in the order the network computes them."""

    def __init__(self, model, variables, dt, soft_reset_as_hard=False):
        self.model, self.dt, self.soft_reset_as_hard = model, dt, soft_reset_as_hard
        self.weights = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(variables.weights).items()}
        self.masks = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(variables.masks).items()}
        self.bn = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(variables.bn).items()}
        self.stats = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(variables.batch_stats).items()}
        # per-neuron gates on the spikes of the LIF a layer feeds: {layer path: gate (H, W, C) or (F,)}
        self.gates = {"/".join(k[:-1]): np.asarray(v) for k, v in
                      traverse_util.flatten_dict(getattr(variables, "gates", {}) or {}).items()}
        self.nodes, self.edges, self.lif_layers = {}, [], []

    def add(self, name, node, *sources):
        if name in self.nodes:
            raise ExportError(f"duplicate NIR node name {name}")
        self.nodes[name] = node
        self.edges.extend((s, name) for s in sources)
        return name

    def kernel(self, path):
        w = self.weights[f"{path}/kernel"]
        m = self.masks.get(f"{path}/kernel")
        return w if m is None else w * m.astype(w.dtype)

    def conv_bn(self, layer: Layer, sources, in_scale=1.0):
        """The conv ``layer`` (weights × mask) with its BN folded, as a nir.Conv2d; ``in_scale``: a factor its
        input still needs (an average pool's 1 / window^2), folded into the kernel."""
        import nir

        path = layer.name
        bn = self.model.bn
        kernel, bias = fold_bn(self.kernel(path).astype(np.float64) * in_scale, self.stats[f"{path}/mean"],
                               self.stats[f"{path}/var"], bn.epsilon, self.bn.get(f"{path}/scale"),
                               self.bn.get(f"{path}/bias"))
        h, w, _ = layer.in_shape
        s, pad = layer.stride, layer.padding
        node = nir.Conv2d(input_shape=(h, w), weight=_oihw(kernel), stride=(s, s), padding=(pad, pad),
                          dilation=(1, 1), groups=1, bias=bias)
        return self.add(_node_name(path), node, *sources)

    def lif(self, layer: Layer, sources):
        """The LIF node, and after it the Scale node of its per-neuron gate if it has one (what reads it)."""
        import nir

        lif = self.model.lif
        reset = "hard" if self.soft_reset_as_hard else lif.reset
        node = lif_to_nir(_chw(layer.out_shape), lif.decay, lif.threshold, lif.reset_value, reset, self.dt)
        name = self.add(_node_name(layer.name), node, *sources)
        self.lif_layers.append(name)
        gate = self.gates.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        if gate is None:
            return name
        if gate.shape != tuple(layer.out_shape):
            raise ExportError(f"the gate of {layer.name} has shape {gate.shape}, its neurons {tuple(layer.out_shape)}")
        scale = np.transpose(gate, (2, 0, 1)) if gate.ndim == 3 else gate  # NIR's (C, H, W)
        return self.add(f"{name}_gate", nir.Scale(scale=np.ascontiguousarray(scale, np.float32)), name)

    def affine(self, path, sources, in_scale=1.0, hwc=None):
        """The linear layer ``path`` (weights × mask, bias) as nir.Affine; ``hwc``: the (H, W, C)
        its input was flattened from in jsnn, whose rows are reordered to NIR's (C, H, W)."""
        import nir

        kernel = self.kernel(path).astype(np.float64) * in_scale
        if hwc is not None:
            h, w, c = hwc
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
        bias = self.weights.get(f"{path}/bias", np.zeros(kernel.shape[1]))
        node = nir.Affine(weight=np.ascontiguousarray(kernel.T).astype(np.float32),
                          bias=np.asarray(bias, np.float32))
        return self.add(_node_name(path), node, *sources)


def _node_name(layer_name: str) -> str:
    return layer_name.replace("/", "_")


def _export_layers(b: _Builder, layers: list[Layer]) -> str:
    """Adds the NIR nodes of a model's description (``jsnn.models.description``) in its order;
    returns the node that computes the output."""
    import nir

    node_of = {}  # a layer's name -> the NIR nodes whose sum is its output (several for an ``add`` join)
    scale_of = {}  # a layer's name -> the factor its output still needs (an average pool's 1 / window^2)
    flattened_from = {}  # a flatten's name -> the (H, W, C) it flattened
    kinds = {layer.name: layer.kind for layer in layers}
    for layer in layers:
        sources = [n for i in layer.inputs for n in node_of[i]]
        scale = scale_of.get(layer.inputs[0], 1.0) if layer.inputs else 1.0
        if any(scale_of.get(i, 1.0) != scale for i in layer.inputs) or (
                scale != 1.0 and layer.kind not in ("conv", "linear", "flatten")):
            raise ExportError(f"layer {layer.name}: an average pool's output reaches a {layer.kind!r} layer; "
                              "NIR export folds its 1 / window^2 into the next conv or linear layer only")
        name = _node_name(layer.name)
        if layer.kind == "input":
            node = b.add("input", nir.Input(input_type={"input": np.array(_chw(layer.out_shape))}))
        elif layer.kind == "conv":
            node = b.conv_bn(layer, sources, in_scale=scale)
        elif layer.kind == "lif":
            node = b.lif(layer, sources)
        elif layer.kind == "max_pool":
            if kinds[layer.inputs[0]] not in ("lif", "max_pool"):
                raise ExportError(f"layer {layer.name}: a max pool exports as an OR of binary spikes; its input "
                                  f"{layer.inputs[0]} is a {kinds[layer.inputs[0]]!r} layer, not spikes")
            k, st, pad = layer.window, layer.stride, layer.padding
            if st == k and pad == 0:
                pool = b.add(name, nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([st, st]),
                                                 padding=np.array([0, 0])), *sources)
            else:  # snnTorch's SumPool2d drops padding (nirtorch): the window count as a channel-diagonal conv
                c = layer.in_shape[-1]
                ones = np.zeros((c, c, k, k), np.float32)
                ones[np.arange(c), np.arange(c)] = 1.0
                pool = b.add(name, nir.Conv2d(input_shape=layer.in_shape[:2], weight=ones, stride=(st, st),
                                              padding=(pad, pad), dilation=(1, 1), groups=1,
                                              bias=np.zeros(c, np.float32)), *sources)
            node = b.add(f"{name}_or", or_neuron(_chw(layer.out_shape), b.dt), pool)
        elif layer.kind == "avg_pool":
            h, w, _ = layer.in_shape
            k = (h, w) if layer.window == 0 else (layer.window, layer.window)
            node = b.add(name, nir.SumPool2d(kernel_size=np.array(k), stride=np.array(k),
                                             padding=np.array([0, 0])), *sources)
            scale_of[layer.name] = 1.0 / (k[0] * k[1])  # folded into the next conv / affine (Norse has no AvgPool2d)
        elif layer.kind == "add":  # NIR sums a node's incoming edges: the join's readers take every input's edge
            node_of[layer.name] = sources
            continue
        elif layer.kind == "flatten":
            node = b.add(name, nir.Flatten(input_type={"input": np.array(_chw(layer.in_shape))}, start_dim=0,
                                           end_dim=-1), *sources)
            if scale != 1.0:
                scale_of[layer.name] = scale
            if len(layer.in_shape) == 3:
                flattened_from[layer.name] = layer.in_shape
        elif layer.kind == "linear":
            node = b.affine(layer.name, sources, in_scale=scale, hwc=flattened_from.get(layer.inputs[0]))
        else:
            raise ExportError(f"layer {layer.name}: NIR export has no mapping for a {layer.kind!r} layer")
        node_of[layer.name] = [node]
    return node_of[layers[-1].name]


def to_nir(model, variables, image_shape, input_mean=None, input_std=None, dt: float = NIR_DT,
           soft_reset_as_hard: bool = False):
    """``model`` (a jsnn SpikingVGG or SpikingResNet) on ``variables`` as a ``nir.NIRGraph``.

    Args:
      model: the flax module (``Ticket.model``, ``jsnn.models.build_model``).
      variables: ``jsnn.variables.Variables``; masks are the ones the forward pass applies.
      image_shape: (H, W, C) of one image, or (T, H, W, C) of one example's event frames.
      input_mean, input_std: per-channel pixel statistics the image is normalised with
        (``ArrayDataset.mean/std``), recorded in the graph's metadata.
      dt: the time step the LIF parameters are written for.
      soft_reset_as_hard: export a soft-reset network with NIR's reset to v_reset anyway (a
        different neuron: measure what agreement is left with ``check.check_export``).

    Raises ExportError for a network NIR or its importers cannot express.
    """
    import nir

    if not hasattr(model, "layers"):
        raise ExportError(f"cannot export a {type(model).__name__}: NIR export covers jsnn's SpikingVGG "
                          "(vgg16, vgg_small, digits_cnn) and SpikingResNet (resnet19)")
    b = _Builder(model, variables, dt, soft_reset_as_hard)
    layers = describe(model, image_shape)
    last = _export_layers(b, layers)
    b.add("output", nir.Output(output_type={"output": np.array([model.num_classes])}), *last)
    metadata = {
        "producer": "jsnn",
        "dt": float(dt),
        "timesteps": int(model.timesteps),
        "encoding": FRAMES_ENCODING if layers[0].frames else DIRECT_ENCODING,
        "readout": "output per timestep (logits); prediction = argmax of their mean over timesteps",
        "lif_layers": ",".join(b.lif_layers),
        "jsnn_threshold_rule": "jsnn spikes at U >= threshold; NIR's LIF at v > v_threshold",
        "jsnn_reset": model.lif.reset + (" (exported as NIR's reset to v_reset: not the same neuron)"
                                         if model.lif.reset != "hard" else ""),
    }
    if input_mean is not None:
        metadata["input_mean"] = np.asarray(input_mean, np.float64)
        metadata["input_std"] = np.asarray(input_std, np.float64)
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=metadata)
