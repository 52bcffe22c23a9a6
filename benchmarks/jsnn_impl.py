"""jsnn's network in a hand-written train and inference step ("jsnn_bare", the one benchmarks/check.py ties to the
peers), and the dense bound (the same network as a ReLU ANN). The programs' own steps are in trainer_impl.py."""
from __future__ import annotations

from typing import Sequence

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


class DenseVGG(nn.Module):
    """SpikingVGG with ReLU in place of LIF: conv -> BN -> ReLU on T*B folded images
    (the encoding conv sees the B images once and is repeated over T, as in the SNN)."""

    plan: Sequence
    num_classes: int
    timesteps: int

    @nn.compact
    def __call__(self, images, train: bool = False):
        x, n = None, 0
        for item in self.plan:
            if item == "M":
                x = max_pool_2x2(x)
                continue
            layer = ConvBN(item, bn=BNConfig(), input_is_spikes=x is not None, name=f"conv{n}")
            n += 1
            if x is None:
                y = layer(images, train)
                x = fold_time(jnp.broadcast_to(y, (self.timesteps,) + y.shape))
            else:
                x = layer(x, train)
            x = jax.nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        logits = MaskedDense(self.num_classes, name="fc")(x)
        return logits.reshape((self.timesteps, -1, self.num_classes))


class DenseResNet(nn.Module):
    """Res-SNN-19 with ReLU in place of LIF."""

    num_classes: int
    timesteps: int

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = common.RESNET19
        y = ConvBN(cfg["stem"], input_is_spikes=False, name="stem")(images, train)
        x = jax.nn.relu(fold_time(jnp.broadcast_to(y, (self.timesteps,) + y.shape)))
        for s, (f, blocks) in enumerate(zip(cfg["stages"], cfg["blocks"])):
            for b in range(blocks):
                stride = 2 if b == 0 else 1
                h = jax.nn.relu(ConvBN(f, stride=stride, name=f"s{s}b{b}c1")(x, train))
                out = ConvBN(f, name=f"s{s}b{b}c2")(h, train)
                if stride != 1 or x.shape[-1] != f:
                    out = out + ConvBN(f, 1, stride, name=f"s{s}b{b}sc")(x, train)
                else:
                    out = out + x
                x = jax.nn.relu(out)
        x = jnp.mean(x, axis=(1, 2))
        x = jax.nn.relu(MaskedDense(cfg["hidden"], name="fc1")(x))
        logits = MaskedDense(self.num_classes, name="fc2")(x)
        return logits.reshape((self.timesteps, -1, self.num_classes))


def build_model(case: common.Case, dense: bool):
    if dense:
        if case.workload == "resnet19":
            return DenseResNet(common.NUM_CLASSES, case.timesteps)
        return DenseVGG(common.vgg_plan(case.workload), common.NUM_CLASSES, case.timesteps)
    return get_model(common.WORKLOADS[case.workload], common.NUM_CLASSES, timesteps=case.timesteps, lif=LIF, bn=BNConfig())


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
