"""The one trainer every method uses: state, jitted steps, and the epoch loop.

``TrainState`` holds the separate pytrees (weights, masks, scores, bn,
batch_stats) and the optimizer state of whichever of them the training rule trains.
``train_step`` and ``eval_step`` are pure functions of the state and a batch,
jitted once over a device mesh (see ``parallel.py``). ``Trainer`` owns the
edges: data, progress, metrics, checkpoints.
"""
from __future__ import annotations

import dataclasses
import functools
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from jsnn import batch_split, parallel, platform, preemption
from jsnn import data as jdata
from jsnn.checkpoint import Checkpointer
from jsnn.config import TrainConfig
from jsnn.efficiency.counting import accumulates, counted_as_run, measure_synops_dataset, synops_pass
from jsnn.metrics import append_epoch, is_primary, log, progress
from jsnn.objective import per_example_loss, predictions, preprocess
from jsnn.precision import compiler_options
from jsnn.preemption import Preempted
from jsnn.sparsity.masks import sparsity_of
from jsnn.training_rules import TrainingRule, masks_in_use
from jsnn.variables import Variables, apply_model, fold_masks

PyTree = Any
_clock = time.monotonic  # when the last checkpoint was written (a test advances its own)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer steps taken (drives the schedule and the augmentation key)
    rng: jax.Array  # raw uint32 key data, so it checkpoints like any array
    weights: PyTree
    masks: PyTree
    scores: PyTree
    bn: PyTree
    batch_stats: PyTree
    opt_state: PyTree

    def trainable(self, rule: TrainingRule) -> dict:
        return {name: getattr(self, name) for name in rule.trainable}

    def forward_variables(self, rule: TrainingRule, trainable: dict | None = None) -> Variables:
        s = self.replace(**trainable) if trainable else self
        return rule.forward_variables(s.weights, s.masks, s.scores, s.bn, s.batch_stats)


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    if config.schedule == "cosine":  # cosine to 0 over the run (paper), stepped per batch
        return optax.cosine_decay_schedule(config.lr, decay_steps=max(1, config.epochs * steps_per_epoch))
    return optax.constant_schedule(config.lr)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """PyTorch's SGD as Kim et al. use it: weight decay added to the gradient, then momentum."""
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(learning_rate_schedule(config, steps_per_epoch), momentum=config.momentum),
    )


def create_state(variables: Variables, scores: PyTree, rule: TrainingRule,
                 optimizer: optax.GradientTransformation, seed: int,
                 init_optimizer: Callable[[PyTree], PyTree] | None = None) -> TrainState:
    """The first state; ``init_optimizer``: ``optimizer.init`` (the default), or the same function jitted."""
    state = TrainState(
        step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(seed)),
        weights=variables.weights, masks=variables.masks, scores=scores, bn=variables.bn,
        batch_stats=variables.batch_stats, opt_state=None,
    )
    return state.replace(opt_state=(init_optimizer or optimizer.init)(state.trainable(rule)))


def make_train_step(model, rule: TrainingRule, optimizer, dataset: jdata.ArrayDataset, augment: jdata.AugmentConfig):
    def train_step(state: TrainState, images, labels, stop_flags):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        x = preprocess(images, dataset.mean, dataset.std, augment, key)

        def loss_fn(trainable):  # the rule's objective (most: the task loss; energy: + its SynOps penalty)
            return rule.loss(model, state.replace(**trainable), x, labels)

        trainable = state.trainable(rule)
        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
        updates = rule.mask_updates(updates, state.masks)
        new = state.replace(**optax.apply_updates(trainable, updates))
        new = new.replace(step=state.step + 1, opt_state=opt_state, batch_stats=new_stats)
        # the rule's in-step change of the state (SET / RigL: the mask update; the others none)
        new = rule.update_masks(new, grads, state.step, jax.random.fold_in(key, 1))
        accuracy = jnp.mean(predictions(logits) == labels)
        # every process's stop request (preemption.py), agreed on by all: the maximum over devices
        return new, {"loss": loss, "accuracy": accuracy, "stop": jnp.max(stop_flags)}

    return train_step


def make_eval_step(model, dataset: jdata.ArrayDataset, count_synops: bool = False):
    """The step over one test batch, on the variables the forward pass runs on: the state's
    ``forward_variables`` with the masks folded into the kernels (``fold_masks``), computed once
    per evaluation, so edge-popup's top-k masks and every kernel * mask product are not
    recomputed for every batch. ``count_synops``: the forward is ``jsnn.efficiency``'s
    ``synops_pass`` (the same logits), and the step also returns the batch's SynOps counts
    ("synops"), so an epoch's accuracy and SynOps come from one pass over the test set."""
    def eval_step(variables: Variables, images, labels, valid):
        x = preprocess(images, dataset.mean, dataset.std)
        if count_synops:
            logits, counts = synops_pass(model, variables, x, valid)
        else:
            logits, _, _ = apply_model(model, variables, x, train=False)
        per_example = per_example_loss(logits, labels)
        out = {"correct": jnp.sum((predictions(logits) == labels) * valid),
               "loss": jnp.sum(per_example * valid), "count": jnp.sum(valid)}
        return {**out, "synops": counts} if count_synops else out

    return eval_step


@dataclasses.dataclass
class Trainer:
    """Runs epochs on one dataset over every local device, under the training rule each call names."""

    config: TrainConfig
    model: Any
    dataset: jdata.ArrayDataset
    mesh: Any = None
    # each evaluated epoch's metrics also hold the network's SynOps per test image (counted in the evaluation's
    # pass over the test set at f32, by a pass of its own in bf16); the runs set it when they make a cost report
    # (Outputs.cost_report)
    count_synops: bool = False

    def __post_init__(self):
        self.mesh = self.mesh or parallel.data_mesh()
        parallel.check_global_batch(self.config.batch_size, self.mesh)
        n_train = len(self.dataset.train_labels)
        self.steps_per_epoch = jdata.num_batches(n_train, self.config.batch_size, drop_last=True)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch size {self.config.batch_size} exceeds the {n_train} training images")
        self.optimizer = make_optimizer(self.config, self.steps_per_epoch)
        self.jit_cache: dict = {}  # jitted functions by (kind, rule): compiled once each
        self._last_evaluation: tuple | None = None  # (state, rule, its evaluation)

    # -- jitted steps, one compilation per rule ------------------------------------------
    def jitted_steps(self, rule: TrainingRule, optimizer: optax.GradientTransformation | None = None):
        """(train_step(state, images, labels, stop_flags), eval_step(variables, images, labels, valid),
        forward_variables(state)), jitted once per rule and optimizer (None: the TrainConfig's,
        ``self.optimizer``; a run's plan may step with another, ``jsnn.runs.run.Plan.optimizer``)."""
        optimizer = self.optimizer if optimizer is None else optimizer
        key = ("steps", rule) if optimizer is self.optimizer else ("steps", rule, optimizer)
        if key not in self.jit_cache:
            repl, batch = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
            options = compiler_options(self.config.precision)
            train = jax.jit(self._split(make_train_step(self.model, rule, optimizer, self.dataset,
                                                        self.dataset.augment)),
                            in_shardings=(repl, batch, batch, batch), out_shardings=(repl, repl), donate_argnums=0,
                            compiler_options=options)
            evaluate = self._jit_eval_step(count_synops=False)
            forward = jax.jit(lambda state: fold_masks(state.forward_variables(rule)), in_shardings=repl,
                              out_shardings=repl, compiler_options=options)
            self.jit_cache[key] = (train, evaluate, forward)
        return self.jit_cache[key]

    def _jit_eval_step(self, count_synops: bool) -> Callable:
        """``make_eval_step``'s step jitted over the mesh: variables replicated, the batch split."""
        repl, batch = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
        return jax.jit(self._split(make_eval_step(self.model, self.dataset, count_synops)),
                       in_shardings=(repl, batch, batch, batch), out_shardings=repl,
                       compiler_options=compiler_options(self.config.precision))

    def _split(self, step: Callable) -> Callable:
        """``step`` with the model run on each device's part of the batch while it is traced (``jsnn.batch_split``:
        every layer's work divides over the mesh)."""

        @functools.wraps(step)
        def traced_split(*args):
            with batch_split.split(self.mesh, parallel.DATA_AXIS):
                return step(*args)

        return traced_split

    def compiled(self, key, build: Callable[[], Callable]) -> Callable:
        """The function ``build()`` returns (a jitted one), built once per trainer and ``key``: what is compiled
        for this trainer's model, data and mesh is kept with it (e.g. ``jsnn.sparsity.stats``' passes)."""
        if key not in self.jit_cache:
            self.jit_cache[key] = build()
        return self.jit_cache[key]

    def _init_optimizer(self, optimizer: optax.GradientTransformation) -> Callable[[PyTree], PyTree]:
        """``optimizer.init`` jitted, once per trainer and optimizer: one program for the whole state, not an eager
        one per parameter shape (each compiled, or read from the cache, at a run's start)."""
        return self.compiled(("init_optimizer", optimizer), lambda: jax.jit(optimizer.init))

    def new_state(self, variables: Variables, scores: PyTree, rule: TrainingRule, seed: int,
                  optimizer: optax.GradientTransformation | None = None) -> TrainState:
        """The first state; ``optimizer`` None: the TrainConfig's."""
        optimizer = self.optimizer if optimizer is None else optimizer
        return parallel.put_replicated(self.mesh, create_state(variables, scores, rule, optimizer, seed,
                                                               self._init_optimizer(optimizer)))

    def fresh_optimizer(self, state: TrainState, rule: TrainingRule, seed: int,
                        optimizer: optax.GradientTransformation | None = None) -> TrainState:
        """Same variables, a new optimizer, schedule and augmentation stream (a new IMP round)."""
        optimizer = self.optimizer if optimizer is None else optimizer
        state = state.replace(step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(seed)),
                              opt_state=self._init_optimizer(optimizer)(state.trainable(rule)))
        return parallel.put_replicated(self.mesh, state)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, state: TrainState, rule: TrainingRule, synops: bool = False) -> dict:
        """Test accuracy and loss; ``synops``: also ``synops_per_image``, counted in the same pass where the
        model computes at f32 (``jsnn.efficiency.counted_as_run``), else by ``synops_per_image``'s pass.
        The same state object evaluated again under the same rule (a segment's last epoch, then its entry in
        the results) gives the numbers of the first evaluation without another pass."""
        last = self._last_evaluation
        if last is not None and last[0] is state and last[1] == rule and (not synops or "synops_per_image" in last[2]):
            return {k: v for k, v in last[2].items() if synops or k != "synops_per_image"}
        counted_here = synops and counted_as_run(self.model)
        _, eval_step, forward_variables = self.jitted_steps(rule)
        if counted_here:
            eval_step = self.compiled(("eval_synops", rule), lambda: self._jit_eval_step(count_synops=True))
        variables = forward_variables(state)
        totals, acs = {"correct": 0.0, "loss": 0.0, "count": 0.0}, 0
        for images, labels, valid in jdata.process_eval_batches(self.dataset, self.config.batch_size):
            out = eval_step(variables, *parallel.put_batch(self.mesh, images, labels, valid))
            for k in totals:
                totals[k] += float(out[k])
            if counted_here:
                acs += accumulates(jax.device_get(out["synops"]))
        result = {"test_accuracy": totals["correct"] / totals["count"], "test_loss": totals["loss"] / totals["count"]}
        if counted_here:
            result["synops_per_image"] = acs / totals["count"]
        elif synops:
            result["synops_per_image"] = self.synops_per_image(state, rule)
        self._last_evaluation = (state, rule, result)  # a state's arrays never change: the object names its values
        return result

    # -- the epoch loop -----------------------------------------------------------------------
    def stop_flags(self) -> jax.Array:
        """This process's stop request on each of its devices, as the train step's global input."""
        return parallel.put_batch(self.mesh, preemption.local_flags(len(self.mesh.local_devices)))[0]

    def train_epochs(self, state: TrainState, rule: TrainingRule, start_epoch: int, *,
                     data_seed: int, epoch_offset: int = 0, label: dict | None = None,
                     metrics_path: str | None = None,
                     on_epoch_end: Callable[[TrainState, int], bool | None] | None = None,
                     save: Callable[[TrainState, int, int, dict], None] | None = None,
                     start_batch: int = 0, partial_epoch: dict | None = None,
                     on_batch: Callable[[int, int], None] | None = None,
                     optimizer: optax.GradientTransformation | None = None,
                     learning_rate: Callable[[int], float] | None = None) -> TrainState:
        """Trains epochs ``start_epoch .. config.epochs - 1`` (from batch ``start_batch`` of the first).

        Each epoch's batch order depends on (data_seed, epoch_offset + epoch)
        only, so a resumed run sees the batches an uninterrupted one would;
        ``partial_epoch`` carries the per-batch losses of the batches done before
        the interruption, so the epoch's metrics are the uninterrupted run's too.

        ``on_epoch_end(state, epochs_done)`` runs after each epoch; a truthy return
        ends training there. ``save(state, epoch, batch, partial_epoch)`` writes a
        checkpoint at that position: after every ``checkpoint_every``-th epoch and
        every ``checkpoint_every_steps`` steps, unless the last write (or this call's
        start) was less than ``checkpoint_min_seconds`` before; always after the last
        epoch (batch 0 of the next) and when a stop was requested (preemption.py),
        after which ``Preempted`` is raised. Raises TrainingDivergedError on a non-finite loss, before anything
        of that epoch is saved. ``on_batch(epoch, batches_done)`` runs after each
        train step is dispatched (``epoch`` counts from 0, as ``start_epoch``). The step updates with
        ``optimizer`` (None: the TrainConfig's), which must be the one the state was made with; the log's
        ``learning_rate`` is ``learning_rate(step)``, that optimizer's schedule (None: the TrainConfig's).
        """
        train_step = self.jitted_steps(rule, optimizer)[0]
        cfg, d = self.config, self.dataset
        # the log's learning rate, jitted once: the schedule's arithmetic run eagerly compiles a program per operation
        schedule = self.compiled(("learning_rate", learning_rate),
                                 lambda: jax.jit(learning_rate or learning_rate_schedule(cfg, self.steps_per_epoch)))
        label = label or {}
        every_steps = cfg.checkpoint_every_steps
        # periodic writes at most every checkpoint_min_seconds: a write costs tens of ms of the cores the steps
        # use, and a short epoch would spend a tenth of its time on it (docs/reliability.md)
        last_write = _clock()

        def periodic_due() -> bool:
            if cfg.checkpoint_min_seconds <= 0:
                return True
            due = _clock() - last_write >= cfg.checkpoint_min_seconds
            if jax.process_count() > 1:  # a save is collective: every process takes process 0's decision
                due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
            return due

        for epoch in range(start_epoch, cfg.epochs):
            first = start_batch if epoch == start_epoch else 0
            done_before = (partial_epoch or {}) if epoch == start_epoch and first else {}
            losses, accuracies = list(done_before.get("loss", [])), list(done_before.get("accuracy", []))
            if len(losses) != first:
                raise ValueError(f"partial epoch holds {len(losses)} batches, resuming at batch {first}")
            seconds_before = float(done_before.get("seconds", 0.0))
            t0 = time.perf_counter()
            batches = jdata.process_train_batches(d, cfg.batch_size, data_seed, epoch_offset + epoch, first)
            bar = progress(batches, self.steps_per_epoch,
                           f"{_describe(label)}epoch {epoch + 1}/{cfg.epochs}", cfg.progress and is_primary(),
                           initial=first)
            history, pending = [], None

            def partial() -> dict:
                return {"loss": losses + [float(m["loss"]) for m in history],
                        "accuracy": accuracies + [float(m["accuracy"]) for m in history],
                        "seconds": seconds_before + time.perf_counter() - t0}

            for i, (images, labels) in enumerate(bar, start=first):
                state, m = train_step(state, *parallel.put_batch(self.mesh, images, labels), self.stop_flags())
                history.append(m)
                # the previous step's agreed stop flag: reading it keeps one step in flight
                stop = pending is not None and bool(pending["stop"])
                pending = m
                if i % 10 == 0 and cfg.progress:
                    bar.set_postfix(loss=f"{float(m['loss']):.4f}")
                done = i + 1
                if on_batch:
                    on_batch(epoch, done)
                if done < self.steps_per_epoch and (stop or (every_steps and done % every_steps == 0
                                                             and periodic_due())):
                    so_far = partial()
                    self._check_finite(np.asarray(so_far["loss"]), label, epoch)
                    if save:
                        save(state, epoch, done, so_far)
                        last_write = _clock()
                    if stop:
                        raise self._preempted(label, epoch, done)
            stop = pending is not None and bool(pending["stop"])
            whole = partial()
            self._check_finite(np.asarray(whole["loss"]), label, epoch)
            seconds = whole["seconds"]
            record = {**label, "epoch": epoch + 1, "loss": float(np.mean(whole["loss"])),
                      "train_accuracy": float(np.mean(whole["accuracy"])),
                      "learning_rate": float(schedule(int(state.step))),
                      "sparsity": self.sparsity(state, rule),
                      "images_per_sec": self.steps_per_epoch * cfg.batch_size / seconds, "seconds": seconds}
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                record.update(self.evaluate(state, rule, synops=self.count_synops))
            if metrics_path:
                append_epoch(metrics_path, record)
            log(_epoch_line(record))
            finished = bool(on_epoch_end(state, epoch + 1)) if on_epoch_end else False
            last = finished or epoch + 1 == cfg.epochs
            if save and (stop or last or ((epoch + 1) % cfg.checkpoint_every == 0 and periodic_due())):
                save(state, epoch + 1, 0, {})
                last_write = _clock()
            if stop and not last:
                raise self._preempted(label, epoch + 1, 0)
            if finished:
                break
        return state

    def _check_finite(self, losses: np.ndarray, label: dict, epoch: int) -> None:
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            raise TrainingDivergedError(
                f"the loss became {losses[bad]} at {_describe(label)}epoch {epoch + 1}, batch {bad + 1}. "
                "The last good checkpoint is kept; lower --lr (or check the data) and rerun the same "
                "command to resume from it."
            )

    def _preempted(self, label: dict, epoch: int, batch: int) -> Preempted:
        signum = preemption.signal_number()
        where = f"{_describe(label)}epoch {epoch + 1}, batch {batch}" if batch else f"{_describe(label)}epoch {epoch}"
        return Preempted(f"stopped by {signal.Signals(signum).name} after {where} and saved a checkpoint there; "
                         "rerun the same command to continue from it", signum)

    def synops_per_image(self, state: TrainState, rule: TrainingRule) -> float:
        """SynOps per test image of the network as it stands: the cost report's exact count
        (``jsnn.efficiency``) over the whole test set, at the run's batch size, by the pass that counts
        only the SynOps (an epoch's log wants this one number, not the whole report)."""
        variables = Variables(state.weights, masks_in_use(rule, state.masks, state.scores), state.bn,
                              state.batch_stats, rule.effective_gates(state.scores))
        return measure_synops_dataset(self.model, jax.device_get(variables), self.dataset,
                                      batch_size=self.config.batch_size)

    def sparsity(self, state: TrainState, rule: TrainingRule) -> float:
        """Measured fraction of maskable weights that are zero in the forward pass."""
        return sparsity_of(masks_in_use(rule, state.masks, state.scores))


def _describe(label: dict) -> str:
    return "".join(f"{k} {v} " for k, v in label.items())


def _epoch_line(r: dict) -> str:
    test = f" test acc {r['test_accuracy']:.4f}" if "test_accuracy" in r else ""
    head = _describe({k: v for k, v in r.items() if k in ("round", "sparsity_target")})
    return (f"{head}epoch {r['epoch']}: loss {r['loss']:.4f} train acc {r['train_accuracy']:.4f}{test} "
            f"lr {r['learning_rate']:.4g} sparsity {r['sparsity']:.4f} {r['images_per_sec']:.0f} img/s "
            f"on {platform.line()}")


def checkpoint_tree(state: TrainState, extra: dict | None = None) -> dict:
    """The plain-dict pytree a checkpoint stores."""
    return {"state": flax.serialization.to_state_dict(state), "extra": extra or {}}


def from_checkpoint_tree(tree: dict, like_state: TrainState) -> TrainState:
    return flax.serialization.from_state_dict(like_state, tree["state"])


def save_checkpoint(ckpt: Checkpointer, step: int, state: TrainState, extra: dict, meta: dict) -> None:
    ckpt.save(step, checkpoint_tree(state, extra), meta)  # orbax coordinates multi-host writes
