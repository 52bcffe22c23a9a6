"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=2: the programs' train step at T = 16, whose LIF
layers run through the C++ kernel (JSNN_LIF_IMPL=auto), on 2 devices against 1 device and against the scan;
prints the largest differences, how often the kernel is called and the batch each call sees."""
import json
import os
import re
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
assert jax.device_count() == 2, jax.devices()
config = TrainConfig(dataset="digits", epochs=1, timesteps=16, batch_size=16).resolve("dense")
ds = load_dataset("digits")
model = build_model(config, ds.num_classes)
rule = MaskedTraining()
images, labels = ds.train_images[:16], ds.train_labels[:16]
out, hlo = {}, {}
for impl, n in (("auto", 1), ("auto", 2), ("scan", 2)):
    os.environ["JSNN_LIF_IMPL"] = impl
    trainer = Trainer(config, model, ds, mesh=data_mesh(jax.devices()[:n]))
    state = trainer.new_state(init_variables(model, jax.random.key(0), (1, 8, 8, 1)), {}, rule, seed=0)
    train_step = trainer.jitted_steps(rule)[0]
    batch = (*put_batch(trainer.mesh, images, labels), trainer.stop_flags())
    hlo[(impl, n)] = train_step.lower(state, *batch).compile().as_text()
    for _ in range(2):  # two steps, so momentum and running BN statistics matter too
        state, metrics = train_step(state, *batch)
    out[(impl, n)] = jax.tree.map(np.asarray, {"weights": state.weights, "bn": state.bn,
                                               "batch_stats": state.batch_stats, "loss": metrics["loss"]})


def largest_difference(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), out[a], out[b])))


def kernel_batches(text):
    """The batch axis (1, after T) of every kernel call's result in a compiled step: each device's own part
    where the partitioner splits the call, the whole batch where it gathers the currents first."""
    calls = [line for line in text.splitlines() if "custom-call(" in line and 'custom_call_target="jsnn_lif' in line]
    return sorted({int(re.search(r"f32\[\d+,(\d+)", line).group(1)) for line in calls})


print(json.dumps({"two_devices_vs_one": largest_difference(("auto", 2), ("auto", 1)),
                  "kernel_vs_scan": largest_difference(("auto", 2), ("scan", 2)),
                  "kernel_batches": {f"{i}/{n}": kernel_batches(h) for (i, n), h in hlo.items()}}))
sys.exit(0)
