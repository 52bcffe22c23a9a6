"""Firing statistics for the SF criterion (paper Sec. 6).

Per maskable kernel at path P whose input is spikes and whose output feeds a
LIF layer: the firing rate of every input channel (mean spike over
timesteps, batch and positions) and the mean and standard deviation of every
output channel's membrane potential U (over timesteps, batch and positions).

Collected with the network in evaluation mode on training batches, without
augmentation. Each batch returns sums (the jitted pass sums over the whole
sharded batch, i.e. across devices); the host adds them up in float64, so the
statistics over N batches are exact sums, not averages of averages.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jsnn import data as jdata
from jsnn import parallel
from jsnn.objective import preprocess, spike_loss
from jsnn.precision import compiler_options
from jsnn.variables import apply_model, kernels

PyTree = Any
SUM_KEYS = ("input_sum", "input_count", "potential_sum", "potential_sq_sum", "potential_count")


def make_stats_step(model, rule, dataset):
    def stats_step(state, images):
        x = preprocess(images, dataset.mean, dataset.std)
        _, _, stats = apply_model(model, state.forward_variables(rule), x, train=False, collect_stats=True)
        return stats

    return stats_step


def finalize(sums: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Sums -> {path: {input_rate, potential_mean, potential_std}} (only what was recorded)."""
    out = {}
    for path, s in sums.items():
        entry = {}
        if "input_sum" in s:
            entry["input_rate"] = s["input_sum"] / s["input_count"]
        if "potential_sum" in s:
            mean = s["potential_sum"] / s["potential_count"]
            var = np.maximum(s["potential_sq_sum"] / s["potential_count"] - mean ** 2, 0.0)
            entry["potential_mean"], entry["potential_std"] = mean, np.sqrt(var)
        out[path] = entry
    return out


def _by_path(tree: PyTree) -> dict[str, dict[str, np.ndarray]]:
    """Flax's nested stats collection -> {"stage0_block0/conv1": {"input_sum": ...}}."""
    flat = {}

    def walk(node, prefix):
        if any(k in SUM_KEYS for k in node):
            flat["/".join(prefix)] = {k: np.asarray(v, np.float64) for k, v in node.items()}
        for k, v in node.items():
            if isinstance(v, dict) or hasattr(v, "items"):
                walk(v, prefix + (k,))

    walk(tree, ())
    return flat


def collect_statistics(trainer, state, rule, num_batches: int, seed: int = 0) -> dict:
    """Firing statistics over ``num_batches`` training batches (all of them if fewer exist)."""
    # one compilation per trainer and rule, not per pruning round
    step = trainer.compiled(("statistics", rule), lambda: jax.jit(
        make_stats_step(trainer.model, rule, trainer.dataset),
        in_shardings=(parallel.replicated(trainer.mesh), parallel.batch_sharded(trainer.mesh)),
        out_shardings=parallel.replicated(trainer.mesh), compiler_options=compiler_options(trainer.config.precision)))
    d = trainer.dataset
    totals: dict[str, dict[str, np.ndarray]] = {}
    batches = jdata.train_batches(d.train_images, d.train_labels, trainer.config.batch_size, seed, epoch=0)
    for i, (images, _) in enumerate(batches):
        if i >= num_batches:
            break
        (x,) = parallel.put_batch(trainer.mesh, *jdata.shard_for_process(images))
        for path, sums in _by_path(jax.device_get(step(state, x))).items():
            into = totals.setdefault(path, {})
            for k, v in sums.items():
                into[k] = into.get(k, 0.0) + v
    return finalize(totals)


def make_gradient_step(model, rule, dataset):
    """dL/dw of the training loss for one batch, per maskable kernel (evaluation-mode BN, no augmentation)."""
    def gradient_step(state, images, labels):
        x = preprocess(images, dataset.mean, dataset.std)

        def loss(weights):
            variables = rule.forward_variables(weights, state.masks, state.scores, state.bn, state.batch_stats)
            logits, _, _ = apply_model(model, variables, x, train=False)
            return spike_loss(logits, labels)

        return kernels(jax.grad(loss)(state.weights))

    return gradient_step


def collect_gradients(trainer, state, rule, num_batches: int, seed: int = 0) -> PyTree:
    """Mean over ``num_batches`` training batches of dL/dw per kernel (the kernels' tree structure).

    Each batch's loss is the mean over its examples, so the result is the gradient of the loss over
    all those examples; a pruned weight's gradient is 0 outside DNS layers (the mask is in the forward).
    """
    batch = parallel.batch_sharded(trainer.mesh)
    step = trainer.compiled(("gradients", rule), lambda: jax.jit(
        make_gradient_step(trainer.model, rule, trainer.dataset),
        in_shardings=(parallel.replicated(trainer.mesh), batch, batch),
        out_shardings=parallel.replicated(trainer.mesh), compiler_options=compiler_options(trainer.config.precision)))
    d = trainer.dataset
    total, n = None, 0
    for i, (images, labels) in enumerate(jdata.train_batches(d.train_images, d.train_labels,
                                                              trainer.config.batch_size, seed, epoch=0)):
        if i >= num_batches:
            break
        g = jax.device_get(step(state, *parallel.put_batch(trainer.mesh, *jdata.shard_for_process(images, labels))))
        g = jax.tree.map(lambda a: np.asarray(a, np.float64), g)
        total = g if total is None else jax.tree.map(np.add, total, g)
        n += 1
    return jax.tree.map(lambda a: (a / n).astype(np.float32), total)


def recalibrate_batch_stats(trainer, state, rule, num_batches: int | None = None, seed: int = 0) -> PyTree:
    """BN running statistics recomputed for the state's forward pass: the plain average, over
    ``num_batches`` training batches (all by default, no augmentation), of each batch's BN mean and
    unbiased variance in training mode (PyTorch's cumulative recalibration). The running averages the
    network carries are the ones of other weights or masks (edge-popup's random-mask floor)."""
    model = trainer.model.clone(bn=dataclasses.replace(trainer.model.bn, momentum=1.0))  # running = this batch's

    def batch_stats_step(state, images):
        x = preprocess(images, trainer.dataset.mean, trainer.dataset.std)
        _, new_stats, _ = apply_model(model, state.forward_variables(rule), x, train=True)
        return new_stats

    step = trainer.compiled(("recalibrate", rule), lambda: jax.jit(
        batch_stats_step, in_shardings=(parallel.replicated(trainer.mesh), parallel.batch_sharded(trainer.mesh)),
        out_shardings=parallel.replicated(trainer.mesh), compiler_options=compiler_options(trainer.config.precision)))
    d = trainer.dataset
    total, n = None, 0
    for i, (images, _) in enumerate(jdata.train_batches(d.train_images, d.train_labels, trainer.config.batch_size,
                                                        seed, epoch=0)):
        if num_batches is not None and i >= num_batches:
            break
        (x,) = parallel.put_batch(trainer.mesh, *jdata.shard_for_process(images))
        s = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.device_get(step(state, x)))
        total = s if total is None else jax.tree.map(np.add, total, s)
        n += 1
    return jax.tree.map(lambda a: (a / n).astype(np.float32), total)
