"""Data parallelism with pmap semantics, written the current way: a mesh with a
``data`` axis, batches sharded on it, variables replicated, one jitted step.

Every device runs the same step on its shard of the global batch; because the
loss, BN statistics and metrics are means over the whole (sharded) batch axis,
XLA inserts the all-reduces that pmap code writes by hand (``pmean`` of
gradients and BN statistics, ``psum`` of firing statistics). The result equals
one device running the global batch.
"""
from __future__ import annotations

import importlib.util
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
# the public environment rather than JAX's private registry. Kubernetes is stricter than JAX's own
# check: KUBERNETES_SERVICE_HOST is set in every pod, also a lone single-GPU one, where joining stops
# with "coordinator_address should be defined"; a multi-pod job is an indexed Job (JobSet included),
# whose pods carry JOB_COMPLETION_INDEX, and JAX reads it only with the kubernetes package installed.
CLUSTERS = {
    "SlurmCluster": ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"),
    "OmpiCluster": ("OMPI_MCA_orte_hnp_uri",),
    "K8sCluster": ("KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX"),
    "GkeTpuCluster": ("TPU_WORKER_HOSTNAMES",),
}


def _kubernetes_installed() -> bool:
    return importlib.util.find_spec("kubernetes") is not None


def _cluster_detected(environ=os.environ) -> str | None:
    """The cluster JAX's auto-detection would use (SLURM, Open MPI, Kubernetes, Cloud TPU), if any."""
    for name, variables in CLUSTERS.items():
        if all(v in environ for v in variables):
            if name == "K8sCluster" and not _kubernetes_installed():
                continue  # JAX would not join it either (it warns), and stop for want of a coordinator
            return name
    return None


def _tasks_on_this_node(environ) -> int | None:
    """SLURM's task count on this node, from SLURM_STEP_TASKS_PER_NODE ("4(x2),1": 4 on nodes 0-1, 1 on
    node 2) at SLURM_NODEID, else SLURM_NTASKS_PER_NODE; None when SLURM says neither."""
    spec, node = environ.get("SLURM_STEP_TASKS_PER_NODE"), int(environ.get("SLURM_NODEID", "0"))
    if spec:
        counts = []
        for part in spec.split(","):
            count, _, times = part.partition("(x")
            counts += [int(count)] * int(times.rstrip(")") or 1)
        return counts[node] if node < len(counts) else None
    per_node = environ.get("SLURM_NTASKS_PER_NODE")
    return int(per_node) if per_node else None


def _gpus_visible(environ) -> int | None:
    """How many GPUs this process sees before JAX starts: CUDA_VISIBLE_DEVICES (set per task by SLURM's
    GPU binding), else the step's GPUs on this node (SLURM_GPUS_ON_NODE); None when neither is set."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    on_node = environ.get("SLURM_GPUS_ON_NODE")
    return int(on_node) if on_node else None


def slurm_local_device_ids(environ=os.environ) -> list[int] | None:
    """The local devices a SLURM task computes on, as ``jax.distributed.initialize(local_device_ids=)`` takes them.

    Left to itself JAX gives task i of a node device i (SLURM_LOCALID), which is right only when every
    task sees all the node's GPUs. With ``--gpus-per-task=k`` SLURM binds each task to its own k GPUs
    (CUDA_VISIBLE_DEVICES lists only them, numbered 0 … k-1 inside the task): local rank 1 would ask
    for a device it cannot see. With one task on a node it computes on every GPU the node gives it.
    None (JAX's choice) where SLURM says nothing about GPUs, or JAX_LOCAL_DEVICE_IDS is set.
    """
    if environ.get("JAX_LOCAL_DEVICE_IDS"):
        return None
    visible = _gpus_visible(environ)
    if visible is None or visible == 0:
        return None  # no GPUs (CPU or TPU hosts): JAX's default, which only CUDA/ROCm read
    local = int(environ.get("SLURM_LOCALID", "0"))
    per_task = environ.get("SLURM_GPUS_PER_TASK")
    if per_task and per_task.isdigit():
        k = int(per_task)
        if visible <= k:  # bound to its own GPUs
            return list(range(visible))
        return list(range(local * k, (local + 1) * k))  # bound to none: its own k of the node's
    tasks = _tasks_on_this_node(environ)
    if tasks == 1:
        return list(range(visible))
    if tasks is not None and visible < tasks:
        return list(range(visible))  # each task bound to fewer GPUs than there are tasks: its own ones
    return None  # one GPU per task, every task seeing all of them: JAX's [SLURM_LOCALID]


def initialize_distributed(mode: str = "auto", environ=os.environ) -> str | None:
    """Joins the processes of a multi-process run into one JAX runtime; call before any JAX
    computation (the programs do it first thing: afterwards the backend has started and
    ``jax.distributed.initialize`` refuses).

    ``auto``: a manual launch (``MANUAL_VARIABLES``) or a cluster JAX detects (a SLURM step of one
    task is one process: it computes on all its GPUs, unjoined); ``on``: always (JAX detects the
    cluster or fails saying why); ``off``: one process. CPU collectives go through gloo, so a
    multi-process run works, and is tested, on one machine. Returns how the run was joined, or None
    for a single process.
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
    if mode == "auto" and cluster == "SlurmCluster" and environ.get("SLURM_NTASKS") == "1":
        cluster = None  # `srun -n1 --gpus=4`: one process; joined, JAX would give it GPU 0 only
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
        # SLURM, Open MPI, Kubernetes, Cloud TPU: JAX reads the cluster; on SLURM, with the devices each task sees
        local = slurm_local_device_ids(environ) if cluster == "SlurmCluster" else None
        jax.distributed.initialize(**({} if local is None else {"local_device_ids": local}))
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
