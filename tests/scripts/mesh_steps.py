"""What the multi-device scripts share: jsnn's dense digits setup, two of the programs' train steps on the
first n devices, and the largest difference between two such runs. Imported by the scripts beside it (run
as files, they find it on their own directory's path) after they configure XLA."""
import contextlib

import jax
import numpy as np

from jsnn import conv
from jsnn.config import TrainConfig
from jsnn.data import load_dataset
from jsnn.models import build_model
from jsnn.parallel import data_mesh, put_batch
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables

BATCH = 16


def digits(timesteps: int):
    """(config, dataset, model) of a dense digits run at ``timesteps``, batch 16."""
    config = TrainConfig(dataset="digits", epochs=1, timesteps=timesteps, batch_size=BATCH).resolve("dense")
    ds = load_dataset("digits")
    return config, ds, build_model(config, ds.num_classes)


def two_steps(config, ds, model, devices: int, compiled_text: bool = False):
    """The state's values after two train steps on the first ``devices`` devices (so momentum and running BN
    statistics matter too), from the same initialisation and global batch; with ``compiled_text``, also the
    compiled step's HLO text."""
    rule = MaskedTraining()
    trainer = Trainer(config, model, ds, mesh=data_mesh(jax.devices()[:devices]))
    state = trainer.new_state(init_variables(model, jax.random.key(0), (1, 8, 8, 1)), {}, rule, seed=0)
    train_step = trainer.jitted_steps(rule)[0]
    batch = (*put_batch(trainer.mesh, ds.train_images[:BATCH], ds.train_labels[:BATCH]), trainer.stop_flags())
    text = train_step.lower(state, *batch).compile().as_text() if compiled_text else None
    for _ in range(2):
        state, metrics = train_step(state, *batch)
    values = jax.tree.map(np.asarray, {"weights": state.weights, "bn": state.bn, "batch_stats": state.batch_stats,
                                       "loss": metrics["loss"]})
    return (values, text) if compiled_text else values


def evaluation(config, ds, model, devices: int) -> dict:
    """The test accuracy, loss and SynOps per image (counted in the evaluation's pass) of the initial network on
    the first ``devices`` devices."""
    rule = MaskedTraining()
    trainer = Trainer(config, model, ds, mesh=data_mesh(jax.devices()[:devices]))
    state = trainer.new_state(init_variables(model, jax.random.key(0), (1, 8, 8, 1)), {}, rule, seed=0)
    return trainer.evaluate(state, rule, synops=True)


def differences(a, b) -> list[float]:
    """The largest absolute difference of each leaf of two runs' values."""
    return jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b))


@contextlib.contextmanager
def custom_calls_on_one_device():
    """Inside: jsnn's convolution kernels run on a one-device mesh of this several-device process, as in a 1-device
    process (``conv.conv2d`` otherwise keeps XLA's convolution outside the trainer's per-device body when the
    process has several devices: a custom call has no rule to split a batch-sharded convolution)."""
    rule = conv._on_this_cpu
    conv._on_this_cpu = lambda: jax.default_backend() == "cpu"
    try:
        yield
    finally:
        conv._on_this_cpu = rule
