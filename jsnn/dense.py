"""The dense SNN with trained weights: the reference every pruning method is compared with."""
from __future__ import annotations

import os

import jax

from jsnn import plots
from jsnn.config import TrainConfig
from jsnn.methods import MaskedTraining
from jsnn.metrics import log, read_json, read_jsonl, write_json
from jsnn.run import METRICS, RESULTS, check_same_run, prepare, run_signature, train_resumable
from jsnn.ticket import TICKET_FILE, record_ticket
from jsnn.variables import init_variables


def dense_signature(config: TrainConfig) -> dict:
    return run_signature("dense", config)


def train_dense(config: TrainConfig, workdir: str) -> dict:
    """Trains the weights of a dense SNN (resumable); writes and returns its results entry."""
    sig = dense_signature(config)
    done = read_json(os.path.join(workdir, RESULTS))
    if done is not None:
        check_same_run(done.get("signature", {}), sig, workdir)
        log(f"dense network: already complete in {workdir}")
        return done["runs"][0]
    dataset, model, trainer = prepare(config, workdir, sig)
    variables = init_variables(model, jax.random.key(config.seed), (1,) + dataset.image_shape)
    method = MaskedTraining()
    state = trainer.new_state(variables, {}, method, config.seed)
    state = train_resumable(trainer, workdir, state, method, sig)
    entry = {"sparsity": trainer.sparsity(state, method), **trainer.evaluate(state, method),
             "epochs": config.epochs}
    entry = record_ticket(os.path.join(workdir, TICKET_FILE), config, dataset.num_classes, state, method, entry,
                          dataset)
    write_json(os.path.join(workdir, RESULTS), {"method": "dense", "runs": [entry], "signature": sig})
    plots.training_curves(read_jsonl(os.path.join(workdir, METRICS)), os.path.join(workdir, "training_curves.png"),
                          title="dense SNN")
    return entry
