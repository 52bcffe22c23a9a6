"""The lottery-ticket controls (Frankle & Carbin 2019; Kim et al., ECCV 2022).

A winning ticket is the mask found by pruning with its surviving weights
rewound. The claim is about two controls of the same sparsity:

    reinit   the ticket's mask, weights drawn afresh from the initialiser with another seed
             (BN scale/bias and running statistics at their initial values)
    random   a random mask with the ticket's kept count in every layer, on the weights the
             ticket rewinds to (the rewind point: weights, BN, running statistics)

Each trains with the ticket's schedule. Round 0 (no mask) is the ticket
run's dense network itself. ``TicketSource`` is the collaborator an IMP run
takes its rounds from instead of pruning (``runs/imp.py``): round 0 and each
round's variables from a finished IMP ticket run; the functions below it are
the pure pieces.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.parallel import put_replicated
from jsnn.runs.tickets import rewind_path, round_path
from jsnn.sparsity import masks as M
from jsnn.ticket import load_ticket
from jsnn.variables import Variables, by_name, check_kernel_tree, from_names, init_variables, kernels, with_kernels

PyTree = Any
CONTROLS = ("reinit", "random", "ticket")  # ticket: the ticket itself, retrained (e.g. an early-bird one)
LABELS = {"reinit": "reinit", "random": "random mask", "ticket": "ticket retrained"}
RESEED = 7919  # reinit draws its weights with seed + RESEED: never the ticket's own initialisation


def random_masks(masks: PyTree, key: jax.Array) -> PyTree:
    """{0,1} masks with exactly the kept count of ``masks`` in every layer, positions uniformly at random."""
    named = by_name(masks)
    keys = jax.random.split(key, len(named))
    out = {}
    for k, (name, m) in zip(keys, named.items()):
        kept = int(np.count_nonzero(np.asarray(m)))
        order = np.asarray(jax.random.permutation(k, m.size))
        flat = np.zeros(m.size, np.asarray(m).dtype)
        flat[order[:kept]] = 1
        out[name] = jnp.asarray(flat.reshape(m.shape))
    return from_names(out)


def reinit_variables(model, input_shape, masks: PyTree, seed: int, unmasked: tuple[str, ...] = ()) -> Variables:
    """Fresh variables of ``model`` from key(seed + RESEED), kernels multiplied by ``masks``
    (layers in ``unmasked``, DNS, keep all their fresh weights)."""
    fresh = init_variables(model, jax.random.key(seed + RESEED), input_shape)
    return rewound_variables(fresh, masks, unmasked)


def rewound_variables(rewind: Variables, masks: PyTree, unmasked: tuple[str, ...] = ()) -> Variables:
    """The rewind point with ``masks`` applied to its kernels (layers in ``unmasked``, DNS, keep theirs)."""
    applied = M.apply_masks(kernels(rewind.weights),
                            from_names({n: (jnp.ones_like(m) if n in unmasked else m)
                                        for n, m in by_name(masks).items()}))
    return Variables(with_kernels(rewind.weights, applied), masks, rewind.bn, rewind.batch_stats)


class TicketSource:
    """Where a control run's rounds come from: the IMP ticket run in ``ticket_dir``.

    Round 0 is that run's dense network (no mask, same seed), taken, not retrained; round k is
    its round-k mask with fresh weights (reinit), a random mask of its per-layer counts on its
    rewind point (random), or the ticket itself (ticket).
    """

    def __init__(self, control: str, ticket_dir: str, seed: int):
        self.control, self.ticket_dir, self.seed = control, ticket_dir, seed

    def round_zero(self, run, state):
        path = round_path(self.ticket_dir, 0)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the ticket run in {self.ticket_dir} has no round 0 ({path}); run it first")
        v = load_ticket(path).variables
        check_kernel_tree(v.masks, state.weights, f"the masks of {path}")
        return put_replicated(run.trainer.mesh, state.replace(weights=v.weights, masks=v.masks, bn=v.bn,
                                                              batch_stats=v.batch_stats))

    def round_variables(self, run, state, round_index: int, rounds: int, unmasked: tuple[str, ...]) -> Variables:
        path = round_path(self.ticket_dir, round_index)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the ticket run in {self.ticket_dir} has no round {round_index} ({path}); "
                                    f"finish it with at least {rounds} rounds first")
        ticket_masks = load_ticket(path).variables.masks
        check_kernel_tree(ticket_masks, state.weights, f"the masks of {path}")
        if self.control == "reinit":
            return reinit_variables(run.model, (1,) + run.dataset.image_shape, ticket_masks, self.seed, unmasked)
        rewind = load_ticket(rewind_path(self.ticket_dir)).variables
        masks = ticket_masks
        if self.control == "random":
            key = jax.random.fold_in(jax.random.key(self.seed + RESEED), round_index)
            masks = random_masks(ticket_masks, key)
        return rewound_variables(rewind, masks, unmasked)
