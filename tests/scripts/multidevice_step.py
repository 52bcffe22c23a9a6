"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: one train step on 8 devices
vs 1 device with the same global batch; prints the largest difference of every variable."""
import dataclasses
import json
import sys

import jax
import numpy as np

from jsnn import xla_flags
from jsnn.config import TrainConfig
from jsnn.data import load_dataset
from jsnn.models import build_model
from jsnn.parallel import data_mesh, put_batch
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables

xla_flags.configure()  # as the programs run (before jax.device_count starts the backend)
assert jax.device_count() == 8, jax.devices()
config = TrainConfig(dataset="digits", epochs=1, timesteps=2, batch_size=16).resolve("dense")
ds = load_dataset("digits")
model = build_model(config, ds.num_classes)
rule = MaskedTraining()
images, labels = ds.train_images[:16], ds.train_labels[:16]
out = {}
for n in (1, 8):
    trainer = Trainer(config, model, ds, mesh=data_mesh(jax.devices()[:n]))
    variables = init_variables(model, jax.random.key(0), (1, 8, 8, 1))
    state = trainer.new_state(variables, {}, rule, seed=0)
    train_step = trainer.jitted_steps(rule)[0]
    for _ in range(2):  # two steps, so momentum and running BN statistics matter too
        state, metrics = train_step(state, *put_batch(trainer.mesh, images, labels), trainer.stop_flags())
    out[n] = jax.tree.map(np.asarray, {"weights": state.weights, "bn": state.bn, "batch_stats": state.batch_stats,
                                       "loss": metrics["loss"]})
diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), out[1], out[8]))
try:
    Trainer(dataclasses.replace(config, batch_size=12), model, ds, mesh=data_mesh(jax.devices()))
    error = None
except ValueError as e:
    error = str(e)
print(json.dumps({"max_diff": max(diffs), "n_leaves": len(diffs), "indivisible_error": error}))
sys.exit(0)
