"""Data parallelism with pmap semantics, written the current way: a mesh with a
``data`` axis, batches sharded on it, variables replicated, one jitted step.

Every device runs the same step on its shard of the global batch; because the
loss, BN statistics and metrics are means over the whole (sharded) batch axis,
XLA inserts the all-reduces that pmap code writes by hand (``pmean`` of
gradients and BN statistics, ``psum`` of firing statistics). The result equals
one device running the global batch.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Joins a multi-host run when launched as one (JAX's coordinator variables set)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and jax.process_count() == 1:
        jax.distributed.initialize()


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"global batch {batch_size} does not divide over {n} devices; "
            f"choose a multiple of {n} (e.g. --batch-size {max(n, batch_size // n * n)})"
        )


def put_batch(mesh: Mesh, *arrays: np.ndarray):
    """Host arrays (this process's slice of the global batch) -> global arrays sharded on ``data``."""
    sharding = batch_sharded(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, a) for a in arrays)


def put_replicated(mesh: Mesh, tree):
    """Copies ``tree`` onto every device; never aliases the caller's buffers, which the
    train step donates (so the caller's arrays stay usable)."""
    return jax.device_put(tree, replicated(mesh), may_alias=False)
