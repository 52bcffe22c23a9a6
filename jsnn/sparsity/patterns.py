"""Sparsity types: the pattern a layer's mask keeps, apart from how many weights (the distribution) and
which ones (the criterion's scores). Any criterion, any distribution and any program can use any type.

    unstructured  any weights: the layer's k highest scores (``masks.keep_largest``), jsnn's default
    channel       whole output channels: the last axis of an HWIO conv kernel (kh, kw, in, out) or of a
                  linear kernel (in, out). A channel's score is the sum of its weights' scores; the
                  distribution's count k is rounded to the nearest whole number of channels (at least one)
                  and the top channels are kept, broadcast over the channel's weights
    N:M           (e.g. ``2:4``) in every group of m consecutive weights along the reduction (input) axis,
                  axis -2 (``in`` of both kernel layouts above), exactly the n highest scores are kept:
                  every such layer sits at density n / m, whatever count the distribution asks for

The N:M groups run along the input axis because that is the dot product a sparse matrix unit splits:
NVIDIA's 2:4 kernels group the reduction dimension (jaxpruner's ``NByM`` groups axis -1, the outputs,
which such hardware cannot use). A layer whose input axis is not a multiple of m (the first conv on
1- or 3-channel images, for one) is **left dense**, as NVIDIA's ASP skips the layers it cannot make 2:4
(``dense_layers`` names them); it is not an error.

Ties go to the later index everywhere, as ``masks.keep_largest`` (a stable argsort) and jaxpruner's
``NByM`` rank them: of equal scores in one group the later weights are kept, of equal channel sums the
later channels. Every type's ``keep`` is jittable, with exact counts; ``check_pattern`` checks a
finished mask tree layer by layer and names the first layer that breaks its type's pattern.

A new type is one class with ``count``, ``keep`` and ``check`` and one ``@register_sparsity_type``; a
parametrised family (like N:M) registers the regular expression its names match.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.sparsity import masks as M
from jsnn.variables import by_name, from_names

PyTree = Any

UNSTRUCTURED = "unstructured"


class PatternError(ValueError):
    """A mask that breaks its sparsity type's pattern."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str  # as the help lists it: "unstructured", "channel", "N:M"
    regex: str  # full-match regular expression of the names it parses
    make: Callable  # (*regex groups) -> the type


SPARSITY_TYPES: dict[str, _Entry] = {}


def register_sparsity_type(name: str, regex: str | None = None):
    """Registers a type under ``name``; ``regex`` (default: the name itself) matches the names it parses,
    its groups are passed to the class."""

    def wrap(cls):
        SPARSITY_TYPES[name] = _Entry(name, regex or re.escape(name), cls)
        return cls

    return wrap


def sparsity_type_names() -> list[str]:
    return sorted(SPARSITY_TYPES)


@functools.lru_cache(maxsize=None)
def sparsity_type(spec: str):
    """The sparsity type named ``spec`` ("unstructured", "channel", "2:4", ...)."""
    text = str(spec).strip().lower()
    for entry in SPARSITY_TYPES.values():
        found = re.fullmatch(entry.regex, text)
        if found:
            return entry.make(*found.groups())
    raise ValueError(f"unknown sparsity type {spec!r}; choose one of {sparsity_type_names()} "
                     "(N:M as two integers, e.g. 2:4)")


def canonical(spec: str) -> str:
    """The type's name as signatures and results store it ("2:4" for " 2:4 ")."""
    return sparsity_type(spec).name


def flag_value(text: str) -> str:
    """argparse ``type=`` of ``--sparsity-type``: the canonical name, or the reason it is not one."""
    try:
        return canonical(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- the types -------------------------------------------------------------------------------------------


@register_sparsity_type(UNSTRUCTURED)
@dataclasses.dataclass(frozen=True)
class Unstructured:
    name = UNSTRUCTURED
    density = None  # any: the distribution sets it

    def applies(self, shape) -> bool:
        return True

    def count(self, shape, k: int) -> int:
        return int(k)

    def keep(self, scores: jax.Array, k: int) -> jax.Array:
        return M.keep_largest(scores, k)

    def check(self, name: str, mask: np.ndarray) -> None:
        pass


@register_sparsity_type("channel")
@dataclasses.dataclass(frozen=True)
class Channel:
    """Whole output channels (the kernel's last axis)."""

    name = "channel"
    density = None  # any, to the nearest whole channel

    def applies(self, shape) -> bool:
        return True

    def channels(self, shape, k: int) -> int:
        """Channels kept for a count of k weights: the nearest whole number, at least one, at most all."""
        per_channel = math.prod(shape[:-1])
        return min(int(shape[-1]), max(1, int(round(int(k) / per_channel))))

    def count(self, shape, k: int) -> int:
        return self.channels(shape, k) * math.prod(shape[:-1])

    def keep(self, scores: jax.Array, k: int) -> jax.Array:
        sums = jnp.sum(scores.astype(jnp.float32).reshape(-1, scores.shape[-1]), axis=0)
        kept = M.keep_largest(sums, self.channels(scores.shape, k))
        return jnp.broadcast_to(kept.astype(scores.dtype), scores.shape)

    def check(self, name: str, mask: np.ndarray) -> None:
        columns = mask.reshape(-1, mask.shape[-1])
        mixed = np.flatnonzero(columns.min(axis=0) != columns.max(axis=0))
        if mixed.size:
            raise PatternError(f"layer {name}: its mask keeps part of output channel {int(mixed[0])} "
                               f"({mixed.size} channels partly kept); a channel mask keeps whole channels")


@register_sparsity_type("N:M", r"(\d+):(\d+)")
@dataclasses.dataclass(frozen=True)
class NByM:
    """Exactly n of every m consecutive weights along the input axis (-2)."""

    n: int
    m: int
    axis = -2

    def __post_init__(self):
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "m", int(self.m))
        if not 0 < self.n <= self.m:
            raise ValueError(f"sparsity type {self.n}:{self.m}: N:M needs 0 < n <= m")

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m

    def applies(self, shape) -> bool:
        """False for a layer whose input axis is not a multiple of m: it is left dense."""
        return len(shape) >= 2 and shape[self.axis] % self.m == 0

    def count(self, shape, k: int) -> int:
        size = math.prod(shape)
        return size * self.n // self.m if self.applies(shape) else size

    def _grouped(self, x):
        """[..., in, out] -> [..., out, in / m, m]: the groups on the last axis."""
        x = jnp.moveaxis(x, self.axis, -1)
        return x.reshape(x.shape[:-1] + (x.shape[-1] // self.m, self.m))

    def keep(self, scores: jax.Array, k: int | None = None) -> jax.Array:
        """The n highest of each group (``k``, the distribution's count, does not enter)."""
        if not self.applies(scores.shape):
            return jnp.ones_like(scores)
        g = self._grouped(M._order_preserving_int32(scores))  # the order keep_largest ranks by
        i = jnp.arange(self.m)
        # weight j outranks weight i of its group: a higher score, or an equal one at a later index
        beats = (g[..., None, :] > g[..., :, None]) | ((g[..., None, :] == g[..., :, None]) & (i[None, :] > i[:, None]))
        kept = jnp.sum(beats, axis=-1) < self.n
        moved = jnp.moveaxis(scores, self.axis, -1).shape
        return jnp.moveaxis(kept.reshape(moved), -1, self.axis).astype(scores.dtype)

    def check(self, name: str, mask: np.ndarray) -> None:
        if not self.applies(mask.shape):
            if not np.all(mask == 1):
                raise PatternError(f"layer {name}: its input axis ({mask.shape[self.axis]}) is not a multiple of "
                                   f"{self.m}, so {self.name} leaves it dense, but its mask removes weights")
            return
        x = np.moveaxis(mask, self.axis, -1)
        ones = np.count_nonzero(x.reshape(x.shape[:-1] + (x.shape[-1] // self.m, self.m)), axis=-1)
        bad = np.flatnonzero(ones.reshape(-1) != self.n)
        if bad.size:
            raise PatternError(f"layer {name}: {bad.size} of its {ones.size} groups of {self.m} along the input "
                               f"axis do not keep exactly {self.n} weights (one keeps {int(ones.reshape(-1)[bad[0]])})")


# -- masks of a type -----------------------------------------------------------------------------------


def fixed_density(spec: str) -> float | None:
    """n / m for N:M (the type alone sets each layer's density); None for a type that takes any count."""
    return sparsity_type(spec).density


def dense_layers(spec: str, shapes: dict[str, tuple]) -> tuple[str, ...]:
    """The layers the type leaves dense (N:M: an input axis not a multiple of m)."""
    kind = sparsity_type(spec)
    return tuple(sorted(n for n, s in shapes.items() if not kind.applies(tuple(s))))


def dense_note(spec: str, shapes: dict[str, tuple]) -> str | None:
    """One line naming the layers the type leaves dense, for the run's log; None when there are none."""
    dense = dense_layers(spec, shapes)
    if not dense:
        return None
    return (f"sparsity type {canonical(spec)} leaves {', '.join(dense)} dense (input axis not a multiple of "
            f"{sparsity_type(spec).m})")


def keep(spec: str, scores: jax.Array, k: int) -> jax.Array:
    """{0,1} mask of the shape of ``scores`` keeping ``k`` of them (as the type counts k) in its pattern."""
    return sparsity_type(spec).keep(scores, k)


def prune_per_layer(spec: str, scores: PyTree, masks: PyTree, keep_per_layer: dict[str, int]) -> PyTree:
    """Within each layer keep its count (rounded as the type rounds it) of highest-scored live weights,
    in the type's pattern. Already-pruned weights rank below every live one (``masks._ranked``)."""
    if canonical(spec) == UNSTRUCTURED:
        return M.prune_per_layer(scores, masks, from_names(keep_per_layer))
    kind = sparsity_type(spec)
    ranked = by_name(M._ranked(scores, masks))
    return from_names({n: kind.keep(s, kind.count(s.shape, keep_per_layer[n])) for n, s in ranked.items()})


def check_pattern(masks: PyTree, spec: str, dense=()) -> None:
    """Raises ``PatternError`` naming the first layer whose mask breaks the type's pattern; a mask must
    also be {0, 1}. Layers named in ``dense`` (kept whole by an option) must be all ones."""
    kind = sparsity_type(spec)
    for name, mask in sorted(by_name(masks).items()):
        m = np.asarray(mask)
        if not np.all((m == 0) | (m == 1)):
            raise PatternError(f"layer {name}: its mask holds values other than 0 and 1")
        if name in dense:
            if not np.all(m == 1):
                raise PatternError(f"layer {name} is kept dense, but its mask removes weights")
            continue
        kind.check(name, m)
