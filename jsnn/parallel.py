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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


# A manual multi-process launch (one process per host or per accelerator), documented in docs/reliability.md:
#   JAX_COORDINATOR_ADDRESS=host:port  JAX_NUM_PROCESSES=N  JAX_PROCESS_ID=i
MANUAL_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
DISTRIBUTED_MODES = ("auto", "on", "off")


# The environment variables by which ``jax.distributed.initialize()`` detects each cluster it can
# join without arguments (jax/_src/clusters: each cluster's ``is_env_present``), read here through
# the public environment rather than JAX's private registry.
CLUSTERS = {
    "SlurmCluster": ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"),
    "OmpiCluster": ("OMPI_MCA_orte_hnp_uri",),
    "K8sCluster": ("KUBERNETES_SERVICE_HOST",),  # JAX also needs the kubernetes package there
    "GkeTpuCluster": ("TPU_WORKER_HOSTNAMES",),
}


def _cluster_detected(environ=os.environ) -> str | None:
    """The cluster JAX's auto-detection would use (SLURM, Open MPI, Kubernetes, Cloud TPU), if any."""
    for name, variables in CLUSTERS.items():
        if all(v in environ for v in variables):
            return name
    return None


def initialize_distributed(mode: str = "auto", environ=os.environ) -> str | None:
    """Joins the processes of a multi-process run into one JAX runtime; call before any JAX
    computation (the programs do it first thing: afterwards the backend has started and
    ``jax.distributed.initialize`` refuses).

    ``auto``: a manual launch (``MANUAL_VARIABLES``) or a cluster JAX detects; ``on``: always
    (JAX detects the cluster or fails saying why); ``off``: one process. CPU collectives go
    through gloo, so a multi-process run works, and is tested, on one machine. Returns how the
    run was joined, or None for a single process.
    """
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"--distributed must be one of {DISTRIBUTED_MODES}, got {mode!r}")
    if mode == "off":
        return None
    manual = {k: environ.get(k) for k in MANUAL_VARIABLES}
    given = [k for k, v in manual.items() if v]
    if given and len(given) != len(MANUAL_VARIABLES):
        missing = ", ".join(k for k in MANUAL_VARIABLES if k not in given)
        raise ValueError(f"a manual multi-process launch needs all of {', '.join(MANUAL_VARIABLES)}; "
                         f"{missing} not set")
    cluster = None if given else _cluster_detected(environ)
    if not given and cluster is None and mode == "auto":
        return None
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if given:
            try:
                num, pid = int(manual["JAX_NUM_PROCESSES"]), int(manual["JAX_PROCESS_ID"])
            except ValueError:
                raise ValueError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                                 f"{manual['JAX_NUM_PROCESSES']!r} and {manual['JAX_PROCESS_ID']!r}") from None
            jax.distributed.initialize(manual["JAX_COORDINATOR_ADDRESS"], num_processes=num, process_id=pid)
            return "manual"
        jax.distributed.initialize()  # SLURM, Open MPI, Kubernetes, Cloud TPU: JAX reads the cluster
        return cluster or "auto-detected"
    except RuntimeError as e:
        raise ValueError(f"could not join the multi-process run ({str(e).splitlines()[0][:300]}); "
                         "check the coordinator address and that every process was started") from None


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
