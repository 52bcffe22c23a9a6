"""What a model is, as data: its layers in the order it computes them (``model.layers(image_shape)``).

Each architecture writes its structure once, in the method next to its flax ``__call__``, from
the same fields (plan, stage widths, width multiplier); the tools that need the structure read
this list instead of re-deriving it: NIR export (``jsnn.interop.nir_export``), the static parts
of the cost count (``jsnn.efficiency.counting``: operations per layer, pooling) and the
benchmarks' dense twin (``benchmarks/jsnn_impl.py``). ``tests/test_layer_description.py`` checks
every description against the module's own variables and the shapes its forward pass computes.

Shapes are per example and channel-last, as jsnn computes: (H, W, C) for maps, (features,) after
a flatten. On event frames (``image_shape`` (T, H, W, C)) the input's shape is one frame's, (H, W, C),
and the input and the first conv are marked ``frames``: that conv runs at every timestep, where
on a static image the ``encoding`` conv runs once and its output repeats. A layer with several
inputs receives their sum (a residual join), as NIR's rule for a node with several incoming edges;
an ``add`` layer is such a sum standing alone (SEW-ResNet's spike-element-wise join), its output
read by the next layers as it is (spike counts 0, 1, 2, ..., no neuron in between).
"""
from __future__ import annotations

import dataclasses
import math

KINDS = (
    "input",     # the image, or one event frame per timestep (``frames``)
    "conv",      # masked conv (no bias) + BatchNorm: one ``ConvBN``, its variables at ``name``
    "linear",    # masked linear (+ bias): one ``MaskedDense``, its variables at ``name``
    "lif",       # a LIF neuron per input value, scanned over the T timesteps
    "max_pool",  # max over ``window`` x ``window`` regions at ``stride`` (``window`` unless given), ``padding`` on
                 # every side (never the max: its inputs are spikes >= 0), edges that fit no window dropped
    "avg_pool",  # ``window`` 0: mean over the whole map -> (1, 1, C); else mean over window x window regions,
                 # stride ``window``, edges that fit no window dropped (PyTorch's AvgPool2d(window))
    "flatten",   # (H, W, C) -> (H * W * C,) in row-major (H, W, C) order
    "add",       # the element-wise sum of its inputs' spikes (SEW-ResNet's ADD connect function): no neuron
)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of a model's description (plain, hashable data)."""

    name: str  # conv / linear: the variable path ("stage0_block0/conv1"); otherwise a name unique in the model
    kind: str  # one of KINDS
    inputs: tuple[str, ...]  # the layers it reads (summed when several); () for the input
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel_size: int = 0  # conv
    stride: int = 1  # conv, max_pool
    padding: int = 0  # conv, max_pool: on every side
    window: int = 0  # max_pool, avg_pool (0: global)
    bias: bool = False  # linear
    encoding: bool = False  # conv on the image: it runs once per image, its output repeats over the timesteps
    # the input and the conv reading it, on event frames [T, H, W, C]: that conv runs at every timestep on
    # that step's frame (counts or binarised events), like a layer on spikes; its input is no repeated image
    frames: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name}: unknown kind {self.kind!r}; one of {KINDS}")

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        """Shape of the kernel at ``weights/<name>/kernel``: HWIO for a conv, [in, out] for a linear."""
        if self.kind == "conv":
            return (self.kernel_size, self.kernel_size, self.in_shape[-1], self.out_shape[-1])
        if self.kind == "linear":
            return (self.in_shape[-1], self.out_shape[-1])
        raise ValueError(f"layer {self.name} ({self.kind}) has no kernel")

    @property
    def size(self) -> int:
        """Values per example in the layer's output (neurons, for a LIF)."""
        return math.prod(self.out_shape)


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output positions along one axis of a cross-correlation (``jsnn.conv.conv2d``)."""
    return (size + 2 * padding - kernel_size) // stride + 1


class Describer:
    """Builds a description layer by layer, computing each output shape from its input's.
    Every method returns the new layer's name, to feed the next one."""

    def __init__(self, image_shape, timesteps: int | None = None):
        shape = tuple(int(d) for d in image_shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"image_shape must be (H, W, C), or (T, H, W, C) for event frames, "
                             f"got {tuple(image_shape)}")
        self.frames = len(shape) == 4
        if self.frames:
            check_frame_count(shape[0], timesteps)
            shape = shape[1:]
        self.layers: list[Layer] = [Layer("input", "input", (), shape, shape, frames=self.frames)]
        self._shapes = {"input": shape}

    def _add(self, name, kind, inputs, out_shape, **facts) -> str:
        if name in self._shapes:
            raise ValueError(f"duplicate layer name {name}")
        shapes = {self._shapes[i] for i in inputs}
        if len(shapes) != 1:
            raise ValueError(f"layer {name} sums inputs of different shapes: {sorted(shapes)}")
        out_shape = tuple(int(d) for d in out_shape)
        self.layers.append(Layer(name, kind, tuple(inputs), shapes.pop(), out_shape, **facts))
        self._shapes[name] = out_shape
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def conv(self, name, source, features, kernel_size=3, stride=1) -> str:
        """A ``ConvBN`` (padding kernel_size // 2, as ConvBN pads). A conv on the input is the encoding
        conv (a static image) or runs on every frame (event frames)."""
        h, w, _ = self.shape(source)
        pad = kernel_size // 2
        out = (conv_output_size(h, kernel_size, stride, pad), conv_output_size(w, kernel_size, stride, pad), features)
        on_input = source == "input"
        return self._add(name, "conv", (source,), out, kernel_size=kernel_size, stride=stride, padding=pad,
                         encoding=on_input and not self.frames, frames=on_input and self.frames)

    def linear(self, name, source, features, bias=True) -> str:
        return self._add(name, "linear", (source,), (features,), bias=bias)

    def lif(self, name, *sources) -> str:
        return self._add(name, "lif", sources, self.shape(sources[0]))

    def max_pool(self, name, source, window=2, stride=None, padding=0) -> str:
        h, w, c = self.shape(source)
        stride = window if stride is None else stride
        out = (conv_output_size(h, window, stride, padding), conv_output_size(w, window, stride, padding), c)
        return self._add(name, "max_pool", (source,), out, window=window, stride=stride, padding=padding)

    def avg_pool(self, name, source, window=0) -> str:
        """The mean over the whole map (``window`` 0), or over each window x window region (stride window)."""
        h, w, c = self.shape(source)
        out = (1, 1, c) if window == 0 else (h // window, w // window, c)
        return self._add(name, "avg_pool", (source,), out, window=window, stride=window or 1)

    def add(self, name, *sources) -> str:
        """The element-wise sum of ``sources`` (same shape): a residual join with no neuron after it."""
        return self._add(name, "add", sources, self.shape(sources[0]))

    def flatten(self, name, source) -> str:
        return self._add(name, "flatten", (source,), (math.prod(self.shape(source)),))


def check_frame_count(frames: int, timesteps: int | None) -> None:
    """Event frames feed one frame per timestep: their count must be the model's T."""
    if timesteps is not None and frames != timesteps:
        raise ValueError(f"the input has {frames} event frames per example but the model runs {timesteps} "
                         "timesteps; one frame feeds each step: make them equal (--timesteps sets both)")


def readers(layers) -> dict[str, list[Layer]]:
    """{layer name: the layers reading its output, in description order}."""
    out: dict[str, list[Layer]] = {}
    for layer in layers:
        for source in layer.inputs:
            out.setdefault(source, []).append(layer)
    return out


def describe(model, image_shape) -> list[Layer]:
    """``model.layers(image_shape)``, or a ValueError naming a model that cannot describe itself."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"a {type(model).__name__} does not describe its layers (jsnn's SpikingVGG and "
                         "SpikingResNet do: vgg16, vgg_small, digits_cnn, resnet19)")
    return layers(image_shape)


__all__ = ["KINDS", "Layer", "Describer", "check_frame_count", "conv_output_size", "describe", "readers"]
