"""jsnn.parallel detects the clusters JAX's ``jax.distributed.initialize()`` joins by itself, from the
environment. The library reads no private JAX module; this test does, to notice when JAX changes."""
import pytest
from jax._src import clusters

from jsnn.parallel import CLUSTERS, _cluster_detected

SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "2", "SLURM_PROCID": "0",
         "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    (SLURM, "SlurmCluster"),
    ({k: v for k, v in SLURM.items() if k != "SLURM_PROCID"}, None),  # srun outside a step
    ({"OMPI_MCA_orte_hnp_uri": "x"}, "OmpiCluster"),
])
def test_detection_agrees_with_jax(monkeypatch, environ, expected):
    for name in {v for variables in CLUSTERS.values() for v in variables}:
        monkeypatch.delenv(name, raising=False)
    for k, v in environ.items():
        monkeypatch.setenv(k, v)
    assert _cluster_detected(environ) == expected
    for cls in (clusters.SlurmCluster, clusters.OmpiCluster):
        assert cls.is_env_present() == (cls.__name__ == expected), cls.__name__


# -- what --distributed auto does in each environment (jax.distributed.initialize faked: no runtime is joined)

@pytest.fixture
def joined(monkeypatch):
    """The keyword arguments of each ``jax.distributed.initialize`` call initialize_distributed makes."""
    from jsnn import parallel
    calls = []
    monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(parallel.jax.config, "update", lambda *a: None)  # gloo: nothing to join here
    return calls


def test_a_lone_kubernetes_pod_is_one_process(joined, monkeypatch):
    from jsnn import parallel
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}  # in every pod, a lone single-GPU one too
    assert parallel.initialize_distributed("auto", pod) is None and joined == []
    indexed_job = {**pod, "JOB_COMPLETION_INDEX": "0"}
    monkeypatch.setattr(parallel, "_kubernetes_installed", lambda: False)  # JAX would not join it either
    assert parallel.initialize_distributed("auto", indexed_job) is None and joined == []
    monkeypatch.setattr(parallel, "_kubernetes_installed", lambda: True)
    assert parallel.initialize_distributed("auto", indexed_job) == "K8sCluster" and joined == [{}]


def slurm_task(local: int, tasks: int, **more) -> dict:
    return {**SLURM, "SLURM_NTASKS": str(tasks), "SLURM_PROCID": str(local), "SLURM_LOCALID": str(local),
            "SLURM_STEP_TASKS_PER_NODE": str(tasks), "SLURM_NODEID": "0", **more}


def test_slurm_gpus_per_task_computes_on_the_tasks_own_gpu(joined, monkeypatch):
    from jsnn import parallel
    # --ntasks-per-node=2 --gpus-per-task=1: SLURM binds task 1 to GPU 1, which it sees as its device 0
    task = slurm_task(1, 2, SLURM_GPUS_PER_TASK="1", CUDA_VISIBLE_DEVICES="1")
    for k, v in task.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("JAX_LOCAL_DEVICE_IDS", raising=False)
    jax_alone = clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, None)
    assert jax_alone[3] == [1]  # JAX alone: device 1 of a task that sees one device
    assert parallel.initialize_distributed("auto", task) == "SlurmCluster"
    assert joined == [{"local_device_ids": [0]}]
    # --gpus-per-task=2 with no binding (each task sees the node's 4): task 1 takes 2 and 3
    assert parallel.slurm_local_device_ids(slurm_task(1, 2, SLURM_GPUS_PER_TASK="2",
                                                      CUDA_VISIBLE_DEVICES="0,1,2,3")) == [2, 3]


def test_slurm_one_task_uses_every_gpu(joined):
    from jsnn import parallel
    # srun -n1 --gpus=4: one process, not joined (JAX would give it SLURM_LOCALID 0's device only)
    assert parallel.initialize_distributed("auto", slurm_task(0, 1, CUDA_VISIBLE_DEVICES="0,1,2,3")) is None
    assert joined == []
    # -N2 --ntasks-per-node=1 --gpus-per-node=4: each node's one process joined with its 4 GPUs
    node1 = {**slurm_task(0, 1, SLURM_GPUS_ON_NODE="4"), "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
             "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_NODEID": "1"}
    assert parallel.initialize_distributed("auto", node1) == "SlurmCluster"
    assert joined == [{"local_device_ids": [0, 1, 2, 3]}]


def test_slurm_tasks_sharing_the_nodes_gpus_keep_jaxs_choice(joined):
    from jsnn import parallel
    shared = slurm_task(2, 4, CUDA_VISIBLE_DEVICES="0,1,2,3")  # --gpus-per-node=4, no per-task binding
    assert parallel.slurm_local_device_ids(shared) is None  # JAX's own: device SLURM_LOCALID = 2
    assert parallel.slurm_local_device_ids(slurm_task(1, 2)) is None  # no GPUs (a CPU cluster)
    assert parallel.slurm_local_device_ids({**slurm_task(1, 2, CUDA_VISIBLE_DEVICES="1", SLURM_GPUS_PER_TASK="1"),
                                            "JAX_LOCAL_DEVICE_IDS": "0"}) is None  # the user's choice
    assert parallel._tasks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "4(x2),1", "SLURM_NODEID": "2"}) == 1
    assert parallel._tasks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "4(x2),1", "SLURM_NODEID": "1"}) == 4
