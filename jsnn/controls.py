"""The lottery-ticket controls (Frankle & Carbin 2019; Kim et al., ECCV 2022).

A winning ticket is the mask found by pruning with its surviving weights
rewound. The claim is about two controls of the same sparsity:

    reinit   the ticket's mask, weights drawn afresh from the initialiser with another seed
             (BN scale/bias and running statistics at their initial values)
    random   a random mask with the ticket's kept count in every layer, on the weights the
             ticket rewinds to (the rewind point: weights, BN, running statistics)

Each trains with the ticket's schedule. Round 0 (no mask) is the ticket
run's dense network itself. This module holds the pure pieces;
``run_control`` trains them round by round from a finished (or here-run) IMP
ticket run.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.sparsity import masks as M
from jsnn.variables import Variables, by_name, from_names, init_variables, kernels, with_kernels

PyTree = Any
CONTROLS = ("reinit", "random", "ticket")  # ticket: the ticket itself, retrained (e.g. an early-bird one)
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
