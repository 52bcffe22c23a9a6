"""jsnn's network in a hand-written train and inference step ("jsnn_bare", the one benchmarks/check.py ties to the
peers), and the dense bound (the same network as a ReLU ANN, built from the model's own description of its layers).
The programs' own steps are in trainer_impl.py."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from jsnn import xla_flags
from jsnn.layers import BNConfig, ConvBN, MaskedDense, fold_time
from jsnn.models import get_model
from jsnn.neuron import LIFConfig
from jsnn.pooling import max_pool_2x2
from jsnn.surrogate import Surrogate
from jsnn.variables import apply_model, init_variables

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)

LIF = LIFConfig(decay=common.DECAY, threshold=common.V_TH, reset_value=common.V_RESET, reset="hard",
                detach_reset=True, surrogate=Surrogate("rectangle", common.RECT_WIDTH))


class DenseTwin(nn.Module):
    """A jsnn model's layers, read from its description (``model.layers``), with ReLU in place of
    each LIF: conv -> BN -> ReLU on T*B folded images, the encoding conv on the B images once and
    its output repeated over T, as in the SNN."""

    layers: tuple  # jsnn.models.description.Layer, in the order the model computes them
    num_classes: int
    timesteps: int

    @nn.compact
    def __call__(self, images, train: bool = False):
        values = {}
        for layer in self.layers:
            x = None
            for source in layer.inputs:  # several inputs are summed (a residual join)
                x = values[source] if x is None else x + values[source]
            name = layer.name.replace("/", "_")
            if layer.kind == "input":
                y = images
            elif layer.kind == "conv":
                y = ConvBN(layer.out_shape[-1], layer.kernel_size, layer.stride, bn=BNConfig(),
                           input_is_spikes=not layer.encoding, name=name)(x, train)
                if layer.encoding:
                    y = fold_time(jnp.broadcast_to(y, (self.timesteps,) + y.shape))
            elif layer.kind == "lif":
                y = jax.nn.relu(x)
            elif layer.kind == "max_pool" and layer.window == 2:
                y = max_pool_2x2(x)
            elif layer.kind == "avg_pool":
                y = jnp.mean(x, axis=(1, 2), keepdims=True)
            elif layer.kind == "flatten":
                y = x.reshape((x.shape[0], -1))
            elif layer.kind == "linear":
                y = MaskedDense(layer.out_shape[-1], use_bias=layer.bias, name=name)(x)
            else:
                raise NotImplementedError(f"the dense twin has no {layer.kind} layer ({layer})")
            values[layer.name] = y
        logits = values[self.layers[-1].name]
        return logits.reshape((self.timesteps, -1, self.num_classes))


def build_model(case: common.Case, dense: bool):
    """The benchmarks' network for ``case``: jsnn's SNN, or (``dense``) its ReLU twin."""
    model = get_model(common.WORKLOADS[case.workload], common.NUM_CLASSES, timesteps=case.timesteps, lif=LIF,
                      bn=BNConfig())
    if dense:
        return DenseTwin(tuple(model.layers(common.IMAGE_SHAPE)), common.NUM_CLASSES, case.timesteps)
    return model


def loss_fn(logits, labels):
    """Mean over t (and batch) of cross-entropy; logits [T, B, C]."""
    labels = jnp.broadcast_to(labels, logits.shape[:2])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def make_steps(model, variables):
    tx = optax.sgd(common.LR, momentum=common.MOMENTUM)

    def train_step(variables, opt_state, images, labels):
        def objective(params):
            weights, bn = params
            logits, new_stats, _ = apply_model(model, variables._replace(weights=weights, bn=bn), images, train=True)
            return loss_fn(logits, labels), new_stats

        params = (variables.weights, variables.bn)
        (loss, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        weights, bn = optax.apply_updates(params, updates)
        return variables._replace(weights=weights, bn=bn, batch_stats=new_stats), opt_state, loss

    def infer_step(variables, images):
        logits, _, _ = apply_model(model, variables, images, train=False)
        return jnp.argmax(jnp.mean(logits, axis=0), axis=-1)

    opt_state = tx.init((variables.weights, variables.bn))
    return jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(infer_step), opt_state


def run(case: common.Case, dense: bool = False) -> dict:
    images, labels = common.make_batch(case.batch)
    model = build_model(case, dense)
    variables = init_variables(model, jax.random.PRNGKey(0), images.shape)
    train_step, infer_step, opt_state = make_steps(model, variables)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if case.mode == "train":
        state = {"v": variables, "o": opt_state}

        def step():
            state["v"], state["o"], loss = train_step(state["v"], state["o"], images, labels)
            return loss
    else:
        common.as_loaded_ticket()

        def step():
            return infer_step(variables, images)
    return common.time_steps(step, jax.block_until_ready, case)
