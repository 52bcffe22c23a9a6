"""Training-time augmentation as pure, jittable JAX functions (run on device).

Order of operations matches the torchvision pipeline of Kim et al. (ECCV 2022),
``RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor -> [Cutout] ->
Normalize``: everything happens on *raw* pixel values and normalisation comes
last. So zero padding and Cutout both write raw 0 (black), which becomes
``-mean/std`` after ``normalize`` -- exactly what torchvision produces.

The random choices (crop offsets, flip flags, cutout centres) are drawn by
``sample_augment_params`` and applied by ``apply_augment``; ``augment_batch``
composes the two. Keeping them separate lets tests check the applied
transformation against a NumPy loop at the very offsets that were drawn.

Batches are images ``[B, H, W, C]`` or event frames ``[B, T, H, W, C]``: one draw per
sample, the same crop, flip and Cutout for each of its T frames (an event sample is one
recording; moving its frames apart would tear the motion).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What random augmentation to apply to a training batch.

    Attributes:
      crop_padding: zero-pad each side by this many pixels, then take a random
        crop of the original size (4 for CIFAR: Kim et al. / the paper's
        ``RandomCrop(32, padding=4)``). 0 = no crop.
      flip: random horizontal flip with probability 1/2 (on for CIFAR; off for
        digits, where mirroring changes the class).
      cutout: side of one square patch set to 0 (DeVries & Taylor 2017). Kim et
        al.'s code uses one 16-pixel hole for CIFAR-10/100 (``Cutout(n_holes=1,
        length=16)`` before ``Normalize``); 0 = off, the default here.
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    @property
    def is_identity(self) -> bool:
        return self.crop_padding == 0 and not self.flip and self.cutout == 0


class AugmentParams(NamedTuple):
    """The random draws for one batch (all int32 / bool, leading axis = batch)."""

    crop_offsets: jax.Array  # [B, 2] (row, col) of the crop in the padded image
    flip: jax.Array  # [B] bool: mirror left-right
    cutout_centers: jax.Array  # [B, 2] (row, col) of the Cutout square centre


def sample_augment_params(
    key: jax.Array, batch_size: int, height: int, width: int, config: AugmentConfig
) -> AugmentParams:
    """Draws the per-image random choices; deterministic given ``key``."""
    crop_key, flip_key, cutout_key = jax.random.split(key, 3)
    # Offsets in [0, 2 * padding]: every position torchvision's RandomCrop can pick.
    crop_offsets = jax.random.randint(crop_key, (batch_size, 2), 0, 2 * config.crop_padding + 1, dtype=jnp.int32)
    flip = jax.random.bernoulli(flip_key, 0.5, (batch_size,))
    # Cutout centres anywhere in the image (the square may hang over the edge
    # and is clipped), as in the reference Cutout.
    cutout_centers = jax.random.randint(cutout_key, (batch_size, 2), 0, jnp.array([height, width]), dtype=jnp.int32)
    return AugmentParams(crop_offsets, flip, cutout_centers)


def _check_rank(images: jax.Array) -> None:
    if images.ndim not in (4, 5):
        raise ValueError(f"augment: expected images [B, H, W, C] or frames [B, T, H, W, C], got shape {images.shape}")


def _random_crop(images: jax.Array, offsets: jax.Array, padding: int) -> jax.Array:
    """Zero-pads H and W by ``padding`` and cuts each sample (all its frames) back at its own offset."""
    *lead, height, width, channels = images.shape[1:]  # lead = [T] for frames, [] for images
    pad = [(0, 0)] * (1 + len(lead)) + [(padding, padding), (padding, padding), (0, 0)]
    padded = jnp.pad(images, pad)

    def crop_one(sample, offset):
        start = (0,) * len(lead) + (offset[0], offset[1], 0)
        return jax.lax.dynamic_slice(sample, start, (*lead, height, width, channels))

    return jax.vmap(crop_one)(padded, offsets)


def _cutout(images: jax.Array, centers: jax.Array, length: int) -> jax.Array:
    """Zeroes rows [cy - L//2, cy + L//2) x cols [cx - L//2, cx + L//2), clipped.

    Same bounds as the reference Cutout (so an odd ``length`` gives a square of
    side ``length - 1``, as there).
    """
    height, width = images.shape[-3:-1]
    half = length // 2
    rows = jnp.arange(height)[None, :]  # [1, H]
    cols = jnp.arange(width)[None, :]  # [1, W]
    cy, cx = centers[:, :1], centers[:, 1:]  # [B, 1] each
    in_rows = (rows >= cy - half) & (rows < cy + half)  # [B, H]
    in_cols = (cols >= cx - half) & (cols < cx + half)  # [B, W]
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]
    hole = hole.reshape(hole.shape[:1] + (1,) * (images.ndim - 4) + hole.shape[1:] + (1,))  # [B, (1,) H, W, 1]
    return jnp.where(hole, jnp.zeros((), images.dtype), images)


def apply_augment(images: jax.Array, params: AugmentParams, config: AugmentConfig) -> jax.Array:
    """Applies crop, then flip, then Cutout, with the given random draws (images or frames)."""
    _check_rank(images)
    if config.crop_padding > 0:
        images = _random_crop(images, params.crop_offsets, config.crop_padding)
    if config.flip:
        flip = params.flip.reshape((-1,) + (1,) * (images.ndim - 1))
        images = jnp.where(flip, jnp.flip(images, axis=-2), images)  # W is axis -2 in both layouts
    if config.cutout > 0:
        images = _cutout(images, params.cutout_centers, config.cutout)
    return images


def augment_batch(key: jax.Array, images: jax.Array, config: AugmentConfig) -> jax.Array:
    """Randomly augments a batch of raw-pixel images ``[B, H, W, C]`` or frames ``[B, T, H, W, C]``.

    Pure and jittable (``config`` is static: pass it by closure or as a static
    argument); the same ``key`` gives the same output. Call it on raw pixels
    (cast to float) *before* ``normalize``, as torchvision does.
    """
    _check_rank(images)
    if config.is_identity:
        return images
    batch_size, (height, width) = images.shape[0], images.shape[-3:-1]
    params = sample_augment_params(key, batch_size, height, width, config)
    return apply_augment(images, params, config)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """``(x - mean) / std`` per channel (last axis), in float32.

    ``mean`` and ``std`` are in raw pixel units (``ArrayDataset.mean/std``), so
    uint8 batches go in directly -- no separate division by 255.
    """
    images = jnp.asarray(images, jnp.float32)
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images - mean) / std
