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
