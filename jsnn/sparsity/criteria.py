"""Pruning criteria as plug-ins: each declares the inputs it needs, and the IMP loop gathers exactly those.

A criterion maps the weights and its declared inputs to scores with the
kernels' structure; a higher score means more important, pruning removes the
lowest. Adding one is one function and one ``@register_criterion``:

    @register_criterion("mine", needs=("gradients",))
    def mine(weights, gradients, **_):
        return jax.tree.map(lambda w, g: jnp.abs(w * g), kernels(weights), gradients)

    magnitude   |w|                                                    needs nothing
    sf          p = E|dU| * N(V_th; mu, sigma^2)  (paper Eq. 12)       bn_variables, stats, threshold, epsilon
                E|dU|[k,i,j] = r_i * |w[k,i,j] * gamma_j / sqrt(var_j + eps)|   (Eq. 13)
    snip        |w * dL/dw| summed over calibration batches            gradients
                (Lee et al. 2019's connection sensitivity, as Molchanov et al.'s first-order Taylor score)
    random      i.i.d. uniform scores: random pruning                  key

The inputs (``INPUTS``, also a registry) are gathered from a ``Calibration``
(trainer, trained state, training rule, calibration batches, seed): ``bn_variables``
(BN scale/bias and running statistics), ``stats`` (firing statistics,
stats.py), ``gradients`` (stats.collect_gradients), ``key`` (a PRNG key that
differs per round), ``threshold`` (V_th) and ``epsilon`` (BN's).

``sf`` needs firing statistics; kernels without them (the encoding layer,
whose input is the image, and the linear layers, with no BN/LIF after them)
keep the magnitude criterion, as SF-IMP-1 prescribes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import traverse_util

from jsnn.sparsity.stats import collect_gradients, collect_statistics
from jsnn.variables import kernels, layer_name

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Criterion:
    name: str
    score: Callable  # (weights, **inputs) -> scores, the kernels' tree structure
    needs: tuple[str, ...] = ()  # names in INPUTS, gathered before scoring
    distribution: str = "global"  # the sparsity distribution IMP uses with it unless told otherwise
    labels: tuple[str, str] | None = None  # plot labels without / with DNS (None: "IMP (name)")

    def label(self, dns: bool = False) -> str:
        if self.labels:
            return self.labels[int(dns)]
        return f"IMP ({self.name}{', DNS' if dns else ''})"


CRITERIA: dict[str, Criterion] = {}
INPUTS: dict[str, Callable] = {}


def register_criterion(name: str, needs: tuple[str, ...] = (), distribution: str = "global",
                       labels: tuple[str, str] | None = None):
    """Registers ``fn(weights, **inputs) -> scores`` under ``name``; ``needs`` names its inputs."""
    def wrap(fn):
        unknown = [n for n in needs if n not in INPUTS]
        if unknown:
            raise ValueError(f"criterion {name!r} needs unknown inputs {unknown}; known: {sorted(INPUTS)}")
        CRITERIA[name] = Criterion(name, fn, tuple(needs), distribution, labels)
        return fn

    return wrap


def register_input(name: str):
    """Registers ``gather(calibration) -> value`` as the input ``name`` criteria may declare."""
    def wrap(fn):
        INPUTS[name] = fn
        return fn

    return wrap


def criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(CRITERIA)}")
    return CRITERIA[name]


@dataclasses.dataclass
class Calibration:
    """What a criterion's inputs are gathered from: a trained state and a few training batches."""

    trainer: Any
    state: Any
    rule: Any
    batches: int  # calibration batches for statistics and gradients
    seed: int  # the run's seed: data order of the calibration batches
    round_index: int = 0  # the trained round: folded into the ``key`` input so every round draws afresh


@register_input("bn_variables")
def _bn_variables(c: Calibration) -> dict:
    return {"bn": c.state.bn, "batch_stats": c.state.batch_stats}


@register_input("stats")
def _stats(c: Calibration) -> dict:
    return collect_statistics(c.trainer, c.state, c.rule, c.batches, c.seed)


@register_input("gradients")
def _gradients(c: Calibration) -> PyTree:
    return collect_gradients(c.trainer, c.state, c.rule, c.batches, c.seed)


@register_input("key")
def _key(c: Calibration) -> jax.Array:
    return jax.random.fold_in(jax.random.key(c.seed), c.round_index)


@register_input("threshold")
def _threshold(c: Calibration) -> float:
    return float(c.trainer.config.lif.threshold)


@register_input("epsilon")
def _epsilon(c: Calibration) -> float:
    return float(c.trainer.model.bn.epsilon)


def gather_inputs(name: str, calibration: Calibration) -> dict:
    """Exactly the inputs criterion ``name`` declared."""
    return {need: INPUTS[need](calibration) for need in criterion(name).needs}


def scores(name: str, weights: PyTree, inputs: dict) -> PyTree:
    return criterion(name).score(weights, **inputs)


_abs_tree = jax.jit(lambda tree: jax.tree.map(jnp.abs, tree))


@register_criterion("magnitude")
def magnitude(weights: PyTree, bn_variables: dict | None = None, stats: dict | None = None, **_) -> PyTree:
    del bn_variables, stats
    return _abs_tree(kernels(weights))


def gaussian_density(x, mean, std):
    """N(x; mean, std^2)."""
    return jnp.exp(-0.5 * jnp.square((x - mean) / std)) / (math.sqrt(2.0 * math.pi) * std)


def sf_kernel_scores(kernel, input_rate, bn_scale, running_var, potential_mean, potential_std, *,
                     threshold: float, epsilon: float):
    """Eq. 12-13 for one kernel [..., C_in, C_out]; statistics broadcast over its last two axes."""
    perturbation = input_rate[:, None] * jnp.abs(kernel * (bn_scale / jnp.sqrt(running_var + epsilon)))
    # a channel whose U never varies has no density to speak of; keep it finite
    std = jnp.maximum(potential_std, 1e-6)
    return perturbation * gaussian_density(threshold, potential_mean, std)


def sf_eligible(stats: dict, path: str) -> bool:
    s = stats.get(path, {})
    return "input_rate" in s and "potential_mean" in s


@register_criterion("sf", needs=("bn_variables", "stats", "threshold", "epsilon"), distribution="matched",
                   labels=("SF-IMP-1", "SF-IMP-2"))
def sf(weights: PyTree, bn_variables: dict, stats: dict, *, threshold: float = 1.0, epsilon: float = 1e-5,
       **_) -> PyTree:
    """The SF criterion; ``bn_variables`` = {"bn": scale/bias tree, "batch_stats": mean/var tree}."""
    bn = traverse_util.flatten_dict(bn_variables.get("bn") or {})
    running = traverse_util.flatten_dict(bn_variables["batch_stats"])
    out = {}
    for key, kernel in traverse_util.flatten_dict(kernels(weights)).items():
        prefix, path = key[:-1], layer_name(key)
        if not sf_eligible(stats, path) or prefix + ("var",) not in running:
            out[key] = jnp.abs(kernel)
            continue
        s = stats[path]
        scale = bn.get(prefix + ("scale",), jnp.ones(kernel.shape[-1]))
        out[key] = _sf_jit(kernel, jnp.asarray(s["input_rate"], jnp.float32), scale, running[prefix + ("var",)],
                           jnp.asarray(s["potential_mean"], jnp.float32), jnp.asarray(s["potential_std"], jnp.float32),
                           threshold=threshold, epsilon=epsilon)
    return traverse_util.unflatten_dict(out)


_sf_jit = jax.jit(sf_kernel_scores, static_argnames=("threshold", "epsilon"))


@register_criterion("snip", needs=("gradients",))
def snip(weights: PyTree, gradients: PyTree, **_) -> PyTree:
    """|w * dL/dw|: the first-order estimate of the loss change when w is removed (SNIP's sensitivity)."""
    return _snip_jit(kernels(weights), gradients)


_snip_jit = jax.jit(lambda w, g: jax.tree.map(lambda a, b: jnp.abs(a * b), w, g))


@register_criterion("random", needs=("key",))
def random(weights: PyTree, key: jax.Array, **_) -> PyTree:
    """i.i.d. U[0, 1) scores: pruning by it removes a uniformly random subset of the live weights."""
    leaves, treedef = jax.tree.flatten(kernels(weights))
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.uniform(k, w.shape, jnp.float32) for k, w in zip(keys, leaves)])
