"""A model's variables as separate pytrees, and the one function that applies them.

    weights      every conv / linear kernel (and linear bias)      -> trained by dense / IMP
    masks        {0,1} per maskable kernel, the kernels' structure -> fixed within an IMP round
    scores       edge-popup scores, the kernels' structure          -> trained by edge-popup
    bn           BatchNorm scale / bias ({} when BN is non-affine)
    batch_stats  BatchNorm running mean / var
    gates        per-neuron gates on a LIF layer's spikes, {producer path: {"neurons": [H, W, C] or [F]}}
                 ({} for every method but Shi et al.'s mask learning, jsnn/sparsity/connection_penalty.py): the
                 spikes of the LIF fed by that conv / linear layer leave it multiplied by the gate (jsnn.layers.GATES)

``masks`` and ``scores`` have exactly the tree structure of ``kernels(weights)``:
{layer path: {"kernel": array}}. Every conv and linear kernel is maskable.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import PartitionSpec

from jsnn import batch_split
from jsnn.layers import BATCH_STATS, BN, GATES, MASKS, STATS, WEIGHTS

PyTree = Any


class Variables(NamedTuple):
    """The pytrees a model runs on (a NamedTuple, so itself a pytree)."""

    weights: PyTree
    masks: PyTree
    bn: PyTree
    batch_stats: PyTree
    gates: PyTree = {}  # noqa: RUF012 (never mutated: a NamedTuple field's default, the empty tree)


def init_variables(model: nn.Module, key: jax.Array, input_shape) -> Variables:
    """Initialises ``model`` for images of shape ``input_shape`` = [B, H, W, C], or event frames [B, T, H, W, C]."""
    if len(input_shape) not in (4, 5):
        raise ValueError(f"input_shape must be [B, H, W, C] or [B, T, H, W, C], got {tuple(input_shape)}")
    # lazy_init runs only what creates the variables (the initializers, op by op as model.init
    # does, so the values are model.init's bit for bit), not the forward pass on a dummy batch.
    collections = model.lazy_init({"params": key}, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32),
                                  train=False)
    # lazy_init hands back the constants made on the host (jsnn.layers.filled) as numpy-backed values: on the device
    collections = jax.device_put(collections)
    return Variables(
        weights=collections[WEIGHTS],
        masks=collections[MASKS],
        bn=collections.get(BN, {}),
        batch_stats=collections[BATCH_STATS],
    )


def fold_masks(variables: Variables) -> Variables:
    """The same network for inference with each mask multiplied into its kernel once, the masks left
    as scalars (one number per layer, which the layers read as "applied"): the forward pass then
    holds one copy of the kernels instead of kernels, masks and their product. Outputs are
    unchanged (a kernel times a {0, 1} mask is exact). Not for training (no mask to keep pruned
    weights at zero) nor for counting connections (the masks are gone)."""
    folded = map_with_names(lambda _, k, m: k * m.astype(k.dtype), kernels(variables.weights), variables.masks)
    scalar_masks = map_with_names(lambda _, m: jnp.ones((), m.dtype), variables.masks)
    return variables._replace(weights=with_kernels(variables.weights, folded), masks=scalar_masks)


def kernels(weights: PyTree) -> PyTree:
    """The maskable kernels of ``weights``, in the tree structure of masks and scores."""
    flat = traverse_util.flatten_dict(weights)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[-1] == "kernel"})


# -- named trees: a kernel-structured tree {layer: {"kernel": x}} as {"layer/path": x} and back ------------------


def layer_name(key: tuple) -> str:
    """The layer path of a flattened kernel key: ("stage0_block0", "conv1", "kernel") -> "stage0_block0/conv1"."""
    return "/".join(key[:-1])


def by_name(tree: PyTree) -> dict[str, Any]:
    """A kernel-structured tree (masks, scores, ``kernels(weights)``) as {layer path: leaf}, sorted by path."""
    flat = traverse_util.flatten_dict(tree)
    return {layer_name(k): flat[k] for k in sorted(flat)}


def from_names(named: dict[str, Any], leaf: str = "kernel") -> PyTree:
    """The inverse of ``by_name``: {layer path: x} -> {layer: {..., leaf: x}}."""
    return traverse_util.unflatten_dict({tuple(name.split("/")) + (leaf,): v for name, v in named.items()})


def map_with_names(fn, tree: PyTree, *rest: PyTree) -> PyTree:
    """``fn(layer path, leaf, *leaves of rest)`` over a kernel-structured tree (big_vision's tree_map_with_names)."""
    others = [by_name(r) for r in rest]
    return from_names({name: fn(name, x, *(o[name] for o in others)) for name, x in by_name(tree).items()})


def by_layer(tree: PyTree) -> dict[str, dict[str, Any]]:
    """Any layer-structured tree (BN scale/bias, running statistics) as {layer path: {leaf name: leaf}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in sorted(traverse_util.flatten_dict(tree).items()):
        out.setdefault(layer_name(key), {})[key[-1]] = value
    return out


def named_kernels(weights: PyTree) -> dict[str, jax.Array]:
    """{"stage0_block0/conv1": kernel, ...} in a stable (sorted) order."""
    return by_name(kernels(weights))


def with_kernels(weights: PyTree, new_kernels: PyTree) -> PyTree:
    """``weights`` with its kernels replaced by ``new_kernels`` (biases kept)."""
    flat = traverse_util.flatten_dict(weights)
    flat.update(traverse_util.flatten_dict(new_kernels))
    return traverse_util.unflatten_dict(flat)


def check_kernel_tree(tree: PyTree, weights: PyTree, what: str = "masks") -> None:
    """Raises ValueError naming the first layer where ``tree`` does not match the kernels."""
    want = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(kernels(weights)).items()}
    got = {"/".join(k): getattr(v, "shape", None) for k, v in traverse_util.flatten_dict(tree).items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"{what} do not match the model's kernels: missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    for name, shape in want.items():
        if tuple(got[name]) != tuple(shape):
            raise ValueError(f"{what} entry {name} has shape {tuple(got[name])}, kernel has {tuple(shape)}")


def apply_model(model: nn.Module, variables: Variables, images: jax.Array, train: bool,
                collect_stats: bool = False):
    """Runs the model; returns ``(logits [T, B, classes], new_batch_stats, stats)``.

    In training mode BN uses batch statistics and the running averages are
    updated (returned); in evaluation mode ``new_batch_stats`` is the input.
    ``stats`` (firing statistics, see layers.py) is {} unless ``collect_stats``.
    """
    collections = {WEIGHTS: variables.weights, MASKS: variables.masks, BATCH_STATS: variables.batch_stats}
    if variables.bn:
        collections[BN] = variables.bn
    if variables.gates:
        collections[GATES] = variables.gates
    mutable = ([BATCH_STATS] if train else []) + ([STATS] if collect_stats else [])
    where = batch_split.requested()
    if where is None or collect_stats:  # the statistics passes sum over the batch: they stay unsplit
        logits, updates = model.apply(collections, images, train=train, mutable=mutable)
    else:
        logits, updates = _apply_split(model, collections, images, train, mutable, *where)
    return logits, updates.get(BATCH_STATS, variables.batch_stats), updates.get(STATS, {})


def _apply_split(model: nn.Module, collections: dict, images: jax.Array, train: bool, mutable: list, mesh, axis: str):
    """``model.apply`` on each device's part of the batch (``jsnn.batch_split``): each device computes with its own
    copy of the variables (``per_device_copies``: their gradients summed in device order), images split on the
    batch axis, logits [T, B, classes] split on B; the batch statistics, combined over the devices inside
    BatchNorm, are the same on every device and come back replicated."""

    def body(copies, images):
        with batch_split.inside_body(axis):
            return model.apply(jax.tree.map(lambda a: a[0], copies), images, train=train, mutable=mutable)

    copies = batch_split.per_device_copies(collections, mesh, axis)
    return jax.shard_map(body, mesh=mesh, in_specs=(PartitionSpec(axis), PartitionSpec(axis)),
                         out_specs=(PartitionSpec(None, axis), PartitionSpec()), check_vma=False)(copies, images)
