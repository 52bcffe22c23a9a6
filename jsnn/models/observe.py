"""Watching a model's layers while it runs: the one way jsnn's tools see a layer's values
(the cost count, the spike-for-spike NIR comparison, the weight-removal experiments).

    logits, seen = observe(model, variables, images)
    seen.connections["conv1"].inputs      # what conv1 received, exactly as the model computed it
    seen.neurons["conv1"].spikes          # the LIF layer conv1 feeds: spikes [T, B, ...]

It runs the model's own forward pass (``apply_model``) under ``flax.linen.intercept_methods``,
so the values are the model's bit for bit, and under ``jax.jit`` it traces into the caller's
computation. Two calls are watched:

* every conv / linear layer's ``__call__`` (``ConvBN``, ``MaskedDense``): its input and output;
* ``record_potential``, by which the model hands each LIF layer's membrane potentials U to the
  layer(s) feeding it (the firing statistics' hook, active while the ``stats`` collection is
  mutable: watching neurons runs the model with ``collect_stats``). The spikes are
  spike(U - threshold) with the model's own spike function: its spikes, bit for bit.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from jsnn import batch_split
from jsnn.layers import ConvBN, MaskedDense, unfold_time
from jsnn.surrogate import make_spike_fn
from jsnn.variables import Variables, apply_model


@dataclasses.dataclass(frozen=True)
class ConnectionCall:
    """One conv / linear layer's call."""

    path: str  # its variable path, as in the model's description
    module: nn.Module  # the ConvBN / MaskedDense
    inputs: jax.Array  # folded [T*B, ...]; the encoding conv's: the images [B, H, W, C]
    outputs: jax.Array  # conv + BN currents, or the linear layer's output


@dataclasses.dataclass(frozen=True)
class NeuronCall:
    """One LIF layer's run over the timesteps."""

    path: str  # the layer feeding it (the first, for a residual join): the key of its firing statistics
    potentials: jax.Array  # U [T, B, ...], before reset (Eq. 2)
    spikes: jax.Array  # S [T, B, ...]


@dataclasses.dataclass
class Observed:
    """What one run showed, each dict in the order the model ran the layers."""

    connections: dict[str, ConnectionCall] = dataclasses.field(default_factory=dict)
    neurons: dict[str, NeuronCall] = dataclasses.field(default_factory=dict)


def observe(model: nn.Module, variables: Variables, images: jax.Array, train: bool = False,
            neurons: bool = True) -> tuple[jax.Array, Observed]:
    """Runs ``model`` on ``images`` and returns ``(logits [T, B, classes], Observed)``.

    ``neurons=False`` leaves the LIF layers unwatched and runs the model exactly as
    ``apply_model(model, variables, images, train)`` does (no statistics collected)."""
    seen = Observed()
    spike = make_spike_fn(model.lif.surrogate.name, model.lif.surrogate.param) if neurons else None
    potentials_seen: list = []

    def watch(next_fun, args, kwargs, context):
        if isinstance(context.module, ConvBN) and context.method_name == "__call__":
            kwargs = {**kwargs, "defer_bn": False}  # its output as the array (BatchNorm's map applied)
        out = next_fun(*args, **kwargs)
        module = context.module
        if not isinstance(module, (ConvBN, MaskedDense)):
            return out
        path = "/".join(module.scope.path)
        if context.method_name == "__call__":
            seen.connections[path] = ConnectionCall(path, module, args[0], out)
        elif context.method_name == "record_potential" and neurons:
            u = args[0]
            if any(u is p for p in potentials_seen):  # a residual LIF is fed by conv2 and the shortcut
                return out
            potentials_seen.append(u)
            u = unfold_time(u, model.timesteps)
            seen.neurons[path] = NeuronCall(path, u, spike(u - model.lif.threshold))
        return out

    with nn.intercept_methods(watch), batch_split.unsplit():  # the layers' arrays leave the model
        logits, _, _ = apply_model(model, variables, images, train=train, collect_stats=neurons)
    return logits, seen


__all__ = ["ConnectionCall", "NeuronCall", "Observed", "observe"]
