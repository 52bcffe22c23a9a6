"""The training programs' own steps, timed: ``Trainer.jitted_steps`` as ``train/imp.py``,
``train/dense.py`` (MaskedTraining) and ``train/edge_popup.py`` (EdgePopup) call them.

Unlike the bare step in ``jsnn_impl.py``, each step here does everything a program's step does:
the uint8 batch goes from the host onto the device mesh (``parallel.put_batch``) with the stop
flags, the images are augmented on the device (CIFAR's random crop + flip) and normalized, the
kernels are multiplied by their masks (edge-popup: top-k of the scores, every step), the loss is
the mean over t of cross-entropy, SGD applies weight decay and momentum on a cosine schedule,
pruned weights get no update, and the step returns loss, accuracy and the agreed stop flag.
Inference is the trainer's ``eval_step`` (correct count, summed loss, valid count) on the forward
variables (masks folded into the kernels) that ``Trainer.evaluate`` computes once per evaluation,
with the training state then dropped: what a program that loads a ticket holds.
"""
from __future__ import annotations

import jax
import numpy as np

from benchmarks import common
from jsnn import data as jdata
from jsnn import parallel, xla_flags
from jsnn.config import TrainConfig
from jsnn.data.datasets import CIFAR_AUGMENT
from jsnn.models import build_model
from jsnn.runs.edge_popup import EdgePopupOptions, layer_targets
from jsnn.sparsity.score_masks import init_scores
from jsnn.trainer import Trainer
from jsnn.training_rules import EdgePopup, MaskedTraining
from jsnn.variables import init_variables, kernels

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)

EDGE_POPUP_SPARSITY = 0.5  # the sweep's default level (uniform over every layer, as train/edge_popup.py)


def program_config(case: common.Case, method: str) -> TrainConfig:
    """The CIFAR-100 preset of ``method``'s program with the benchmark's network (common.py):
    rectangle surrogate of width 1 (the peers'), the case's model, batch, T and precision."""
    return TrainConfig(dataset="cifar100", model=common.WORKLOADS[case.workload], timesteps=case.timesteps,
                       batch_size=case.batch, epochs=1, surrogate="rectangle", surrogate_width=common.RECT_WIDTH,
                       decay=common.DECAY, threshold=common.V_TH, precision=case.precision,
                       progress=False).resolve(method)


def synthetic_cifar(batch: int, seed: int = 0) -> jdata.ArrayDataset:
    """CIFAR-shaped uint8 data (two batches of training images, one of test images), CIFAR's augmentation."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(3 * batch,) + common.IMAGE_SHAPE, dtype=np.uint8)
    labels = rng.integers(0, common.NUM_CLASSES, size=3 * batch).astype(np.int32)
    mean, std = jdata.channel_stats(images[: 2 * batch])
    return jdata.ArrayDataset("cifar100", images[: 2 * batch], labels[: 2 * batch], images[2 * batch:],
                              labels[2 * batch:], common.NUM_CLASSES, mean, std, CIFAR_AUGMENT)


def build(case: common.Case, method_name: str):
    """The program's trainer, rule and state for ``case``; method_name: "masked" or "edge_popup"."""
    config = program_config(case, "edge_popup" if method_name == "edge_popup" else "imp")
    dataset = synthetic_cifar(case.batch)
    model = build_model(config, dataset.num_classes)
    trainer = Trainer(config, model, dataset)
    key_weights, key_scores = jax.random.split(jax.random.key(config.seed))
    variables = init_variables(model, key_weights, (1,) + dataset.image_shape)
    scores = init_scores(key_scores, kernels(variables.weights))
    if method_name == "edge_popup":
        rule = EdgePopup(layer_targets(model, variables.weights, EDGE_POPUP_SPARSITY, EdgePopupOptions()))
    else:
        rule = MaskedTraining()
    return trainer, rule, trainer.new_state(variables, scores, rule, config.seed), dataset


def run(case: common.Case, method_name: str = "masked") -> dict:
    trainer, rule, state, dataset = build(case, method_name)
    train_step, eval_step, forward_variables = trainer.jitted_steps(rule)
    mesh = trainer.mesh
    images, labels = dataset.train_images[: case.batch], dataset.train_labels[: case.batch]
    if case.mode == "train":
        holder = {"state": state}

        def step():  # as Trainer.train_epochs calls it
            holder["state"], m = train_step(holder["state"], *parallel.put_batch(mesh, images, labels),
                                            trainer.stop_flags())
            return m
    else:
        valid = np.ones(case.batch, np.float32)
        # once per evaluation, as Trainer.evaluate does; then only what a loaded ticket holds
        variables = forward_variables(state)
        del state
        common.as_loaded_ticket()

        def step():  # as Trainer.evaluate calls it, for each test batch
            return eval_step(variables, *parallel.put_batch(mesh, images, labels, valid))
    return common.time_steps(step, jax.block_until_ready, case)
