"""The model run on each device's own part of the batch (``shard_map``), for data parallelism that splits
every layer's work.

Under ``jax.jit`` with the batch sharded over a mesh, XLA's partitioner keeps the split only where it can
follow it: the layers fold T into the batch axis time-major ([T, B] -> [T*B]), a merged axis whose minor
factor B cannot stay split, so it gathers the batch and every layer after the first computes the whole
batch on every device (``benchmarks/data_parallel_split.py``). Inside ``split`` the trainer's steps run
the model under ``shard_map`` instead: each device computes its images through every layer with its own
copy of the variables (``per_device_copies``), BatchNorm averages its batch statistics over the devices
(``device_mean``, so they are the global batch's), and only those statistics and the gradients cross
devices, gathered and reduced in device order.

The split is set by the caller while a step is traced (``split(mesh)``, a context) and read where the
model is applied (``jsnn.variables.apply_model``), by BatchNorm and by the LIF kernel (``axis()``: inside
the body a device's part is an ordinary array). A mesh of one device sets nothing: one
device computes as it always did, bit for bit.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_MESH: contextvars.ContextVar[tuple[Mesh, str] | None] = contextvars.ContextVar("jsnn_split_mesh", default=None)
_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar("jsnn_split_axis", default=None)


@contextlib.contextmanager
def _setting(*pairs):
    """Each (context variable, value) set within, and reset after."""
    tokens = [(var, var.set(value)) for var, value in pairs]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def split(mesh: Mesh | None, axis: str = "data"):
    """While tracing inside it, ``apply_model`` runs the model per device over ``mesh``'s ``axis`` (a
    mesh of one device, or None: no split)."""
    return _setting((_MESH, (mesh, axis) if mesh is not None and mesh.devices.size > 1 else None))


def unsplit():
    """No split within (code that intercepts the model's layers reads their arrays outside the model)."""
    return split(None)


def requested():
    """(mesh, axis) when the model should run split, else None."""
    return _MESH.get()


def inside_body(axis: str):
    """Marks the per-device body: BatchNorm reduces over ``axis``; no nested split."""
    return _setting((_AXIS, axis), (_MESH, None))


def axis() -> str | None:
    """The mesh axis the batch is split over, inside a per-device body; None outside one."""
    return _AXIS.get()


def _sum_in_device_order(g: jax.Array, n: int) -> jax.Array:
    if g.dtype == jax.dtypes.float0:  # an integer or boolean leaf's (empty) cotangent
        return np.zeros(g.shape[1:], jax.dtypes.float0)
    return functools.reduce(operator.add, [g[i] for i in range(n)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def per_device_copies(tree, mesh: Mesh, axis: str):
    """``tree`` stacked into one copy per device of ``mesh``'s ``axis`` (a leading axis of that size, to be
    split over it): each device's part of the batch computes with its own copy, and its gradients come back
    as that copy's. The VJP gathers every device's gradient and sums them in device order, where an
    all-reduce (what ``shard_map`` makes of a replicated input's gradient) sums in its collective library's
    order: one process with N devices and N processes of one device then train to the same values."""
    n = mesh.shape[axis]
    return jax.tree.map(lambda a: jnp.broadcast_to(a[None], (n, *a.shape)), tree)


def _copies_fwd(tree, mesh, axis):
    return per_device_copies(tree, mesh, axis), None


def _copies_bwd(mesh, axis, _, g):
    g = jax.lax.with_sharding_constraint(g, NamedSharding(mesh, PartitionSpec()))  # every device's, gathered
    return (jax.tree.map(lambda x: _sum_in_device_order(x, mesh.shape[axis]), g),)


per_device_copies.defvjp(_copies_fwd, _copies_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def device_mean(local: jax.Array, axis: str) -> jax.Array:
    """Inside a per-device body: the mean over the devices of ``axis`` of each one's ``local`` value (for equal
    parts of the batch, the global batch's statistic). Forward and backward gather the devices' values and
    reduce them in device order, where an all-reduce (and the reduce-scatter JAX makes of a gather's VJP)
    would reduce in its collective library's order."""
    return jnp.mean(jax.lax.all_gather(local, axis), axis=0)


def _device_mean_fwd(local, axis):
    return device_mean(local, axis), None


def _device_mean_bwd(axis, _, g):
    # every device's mean is every device's value over n: its gradient is the devices' gradients' mean
    return (jnp.mean(jax.lax.all_gather(g, axis), axis=0),)


device_mean.defvjp(_device_mean_fwd, _device_mean_bwd)
