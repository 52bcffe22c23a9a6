"""spyx (JAX, flax nnx): spyx's surrogate activation ``spyx.axn.custom`` (Heaviside forward, rectangle
backward) in a LIF scanned over time, flax nnx Conv / BatchNorm / Linear layers, optax SGD.

spyx's own ``spyx.nn.LIF`` is a different neuron (subtractive reset, spike taken from the
previous potential), so the shared LIF is written here in spyx's style (state in, spikes out,
``jax.lax.scan`` over time) around spyx's activation. VGG workloads only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import spyx
from flax import nnx

from benchmarks import common

LIBRARY = "spyx"

SPIKE = spyx.axn.custom(
    bwd=lambda x: (jnp.abs(x) < common.RECT_WIDTH / 2).astype(x.dtype) / common.RECT_WIDTH,
    fwd=lambda x: (x >= 0).astype(x.dtype),
)


def lif(x, timesteps):
    """Folded currents [T*B, ...] -> spikes [T*B, ...], hard reset, detached reset."""
    xs = x.reshape((timesteps, -1) + x.shape[1:])

    def step(h, xt):
        u = h + xt
        s = SPIKE(u - common.V_TH)
        sd = jax.lax.stop_gradient(s)
        return common.V_RESET * sd + common.DECAY * u * (1.0 - sd), s

    _, out = jax.lax.scan(step, jnp.zeros_like(xs[0]), xs)
    return out.reshape(x.shape)


class VGG(nnx.Module):
    def __init__(self, plan, timesteps, rngs: nnx.Rngs, num_classes=common.NUM_CLASSES):
        self.T, self.plan = timesteps, tuple(plan)
        convs, bns, c, h = [], [], 3, common.IMAGE_SHAPE[0]
        for item in plan:
            if item == "M":
                h //= 2
                continue
            convs.append(nnx.Conv(c, item, (3, 3), padding=1, use_bias=False, rngs=rngs))
            bns.append(nnx.BatchNorm(item, momentum=0.9, epsilon=1e-5, use_fast_variance=False, rngs=rngs))
            c = item
        self.convs, self.bns = nnx.List(convs), nnx.List(bns)
        self.fc = nnx.Linear(c * h * h, num_classes, rngs=rngs)

    def __call__(self, images):
        x, n = None, 0
        for item in self.plan:
            if item == "M":
                x = nnx.max_pool(x, (2, 2), (2, 2))
                continue
            if x is None:
                y = self.bns[0](self.convs[0](images))
                x = jnp.broadcast_to(y, (self.T,) + y.shape).reshape((-1,) + y.shape[1:])
            else:
                x = self.bns[n](self.convs[n](x))
            x = lif(x, self.T)
            n += 1
        return self.fc(x.reshape((x.shape[0], -1))).reshape((self.T, -1, self.fc.out_features))


def make_model(workload, timesteps):
    if workload == "resnet19":
        raise NotImplementedError("the spyx peer implements the VGG workloads only")
    return VGG(common.vgg_plan(workload), timesteps, nnx.Rngs(0))


def run(case):
    model = make_model(case.workload, case.timesteps)
    images, labels = common.make_batch(case.batch)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if case.mode == "train":
        model.train()
        opt = nnx.Optimizer(model, optax.sgd(common.LR, momentum=common.MOMENTUM), wrt=nnx.Param)

        @nnx.jit
        def train_step(model, opt, images, labels):
            def loss_fn(model):
                logits = model(images)
                lab = jnp.broadcast_to(labels, logits.shape[:2])
                return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, lab))

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            opt.update(model, grads)
            return loss

        def step():
            return train_step(model, opt, images, labels)
    else:
        model.eval()

        @nnx.jit
        def infer_step(model, images):
            return jnp.argmax(jnp.mean(model(images), axis=0), axis=-1)

        def step():
            return infer_step(model, images)
    return common.time_steps(step, jax.block_until_ready, case)
