"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: one train step on 8 devices
vs 1 device with the same global batch; prints the largest difference of every variable, and an
evaluation with its SynOps (``Trainer.evaluate(synops=True)``) on 8 devices and on 1."""
import dataclasses
import json
import sys

import jax

from jsnn import xla_flags
from jsnn.parallel import data_mesh
from jsnn.trainer import Trainer

xla_flags.configure()  # as the programs run (before jax.device_count starts the backend)
assert jax.device_count() == 8, jax.devices()
from mesh_steps import differences, digits, evaluation, two_steps  # noqa: E402  (after XLA is configured)

config, ds, model = digits(timesteps=2)
diffs = differences(two_steps(config, ds, model, 1), two_steps(config, ds, model, 8))
try:
    Trainer(dataclasses.replace(config, batch_size=12), model, ds, mesh=data_mesh(jax.devices()))
    error = None
except ValueError as e:
    error = str(e)
print(json.dumps({"max_diff": max(diffs), "n_leaves": len(diffs), "indivisible_error": error,
                  "evaluation": {n: evaluation(config, ds, model, n) for n in (1, 8)}}))
sys.exit(0)
