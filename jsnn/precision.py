"""How jsnn's convolutions and matmuls compute: the ``precision`` setting and its policy per backend.

A run's ``precision`` (``TrainConfig.precision``, ``--precision``) names the operand dtype and
the XLA precision of every convolution and matmul in jsnn's layers (``jsnn.conv.conv2d``,
``matmul`` below). Parameters, optimizer state, BatchNorm and the membrane potential stay f32
in every setting, and every product accumulates and returns f32 (``preferred_element_type``).

  "f32"   f32 operands at ``Precision.HIGHEST`` on every backend: exact f32 products. On the CPU
          HIGHEST is what XLA computes anyway (the compiled program differs only in the
          attribute); on an NVIDIA GPU
          (Ampere and later) it turns off TF32, which XLA otherwise uses for f32 convolutions
          and matmuls, and on a TPU it asks for f32 instead of one bf16 pass. Without it a
          spike whose potential lies within TF32's rounding (10 mantissa bits) of the threshold
          flips between a GPU and the CPU, the flip is amplified by every later layer, and
          tests comparing two implementations of a layer compare two roundings.
  "tf32"  f32 operands at ``Precision.HIGH``: TF32 on an NVIDIA GPU, three bf16 passes on a TPU
          (about TF32's accuracy); on the CPU the same as "f32" (a CPU has no TF32).
  "bf16"  bf16 operands (weights rounded to 8 significant bits; spikes are exactly 0 or 1 in
          bf16, so on spike inputs only the weights are rounded), f32 accumulation and result,
          at the backend's default precision. On a CPU with AMX, bf16 reaches the matrix unit
          through matmuls only (the dense layers, ``jsnn/conv.py``'s tiny maps;
          ``benchmarks/precision_conv.py`` measures where else a matmul would pay).

A user who sets JAX's own default matmul precision (``jax.default_matmul_precision``, or the
environment variable ``JAX_DEFAULT_MATMUL_PRECISION``) gets it for "f32" instead of HIGHEST.
The policy depends on the backend in principle (``POLICY``); today the same entry serves every
backend, which keeps a program exported on one backend for another (``jax.export``) right. The
backend is read when a layer is traced (``jax.default_backend()``), as ``jsnn.conv`` picks its
implementation. Export (NIR) and the cost report compute in f32 whatever the run used.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

PRECISIONS = ("f32", "tf32", "bf16")
_P = jax.lax.Precision


@dataclasses.dataclass(frozen=True)
class MatmulPolicy:
    """What a convolution / matmul does under one ``precision`` on one backend."""

    operand_dtype: Any  # the operands are cast to this
    precision: jax.lax.Precision | None  # XLA's precision config of the product (None: JAX's default)
    result_dtype: Any = jnp.float32  # accumulation and result (preferred_element_type)


_F32_EXACT = MatmulPolicy(jnp.float32, _P.HIGHEST)
_F32_FAST = MatmulPolicy(jnp.float32, _P.HIGH)
_BF16 = MatmulPolicy(jnp.bfloat16, _P.DEFAULT)

# precision -> backend -> policy (reasons in the module docstring); "other" for any backend not named
POLICY: dict[str, dict[str, MatmulPolicy]] = {
    "f32": {"cpu": _F32_EXACT, "gpu": _F32_EXACT, "tpu": _F32_EXACT, "other": _F32_EXACT},
    "tf32": {"cpu": _F32_FAST, "gpu": _F32_FAST, "tpu": _F32_FAST, "other": _F32_FAST},
    "bf16": {"cpu": _BF16, "gpu": _BF16, "tpu": _BF16, "other": _BF16},
}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def _backend_kind(backend: str) -> str:
    backend = backend.lower()
    if backend in ("cuda", "rocm"):
        return "gpu"
    return backend if backend in ("cpu", "gpu", "tpu") else "other"


_USER_F32 = MatmulPolicy(jnp.float32, None)  # f32 products at the precision the user gave JAX


# XLA's CPU backend compiles jsnn's f32 programs at LLVM optimisation level 1 instead of its default 3: the code it
# generates itself (fused element-wise operations) runs as fast there, the convolutions and matmuls are library
# calls it does not touch, and the training step compiles in about three quarters of the time (a first run waits
# for it). Under bf16 the step ran up to a tenth slower at level 1, so bf16 keeps the default
# (benchmarks/compile_level.py). Other backends: not measured, XLA's default.
CPU_F32_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def compiler_options(precision: str = "f32", backend: str | None = None) -> dict:
    """``jax.jit``'s ``compiler_options`` for a program computing under ``precision`` on ``backend`` (default:
    JAX's default backend); jsnn's trainer and cost passes compile with them."""
    if check_precision(precision) in ("f32", "tf32") and _backend_kind(backend or jax.default_backend()) == "cpu":
        return dict(CPU_F32_COMPILER_OPTIONS)
    return {}


def matmul_policy(precision: str = "f32", backend: str | None = None) -> MatmulPolicy:
    """The policy for ``precision`` on ``backend`` (default: the backend being traced for).

    Where the user has set JAX's own default (``jax.default_matmul_precision(...)``, or
    ``JAX_DEFAULT_MATMUL_PRECISION``), "f32" follows it instead of asking for HIGHEST."""
    if check_precision(precision) == "f32" and jax.config.jax_default_matmul_precision is not None:
        return _USER_F32
    return POLICY[precision][_backend_kind(backend or jax.default_backend())]


_CONTRACT_LAST = (((1,), (1,)), ((), ()))  # a @ b.T
_CONTRACT_FIRST = (((0,), (0,)), ((), ()))  # a.T @ b


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_2d(a, b, policy: MatmulPolicy):
    """``a @ b`` with its VJP written out: both backward matmuls take operands of the policy's dtype
    (bf16 x bf16 -> f32 is what a CPU's AMX runs; autodiff would multiply the f32 output gradient by
    bf16 operands, a slow mixed product)."""
    return jnp.dot(a, b, precision=policy.precision, preferred_element_type=policy.result_dtype)


def _matmul_fwd(a, b, policy):
    return _matmul_2d(a, b, policy), (a, b)


def _matmul_bwd(policy, res, g):
    a, b = res
    g = g.astype(policy.operand_dtype)
    kwargs = {"precision": policy.precision, "preferred_element_type": policy.result_dtype}
    da = jax.lax.dot_general(g, b, _CONTRACT_LAST, **kwargs)
    db = jax.lax.dot_general(a, g, _CONTRACT_FIRST, **kwargs)
    return da.astype(a.dtype), db.astype(b.dtype)


_matmul_2d.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x: jax.Array, kernel: jax.Array, precision: str = "f32") -> jax.Array:
    """``x @ kernel`` (x [..., in], kernel [in, out]) under ``precision``'s policy; the result is f32."""
    policy = matmul_policy(precision)
    x, kernel = x.astype(policy.operand_dtype), kernel.astype(policy.operand_dtype)
    if policy.operand_dtype == jnp.float32:  # XLA's own transposes, as before there was a policy
        return jnp.matmul(x, kernel, precision=policy.precision, preferred_element_type=policy.result_dtype)
    out = _matmul_2d(x.reshape(-1, x.shape[-1]), kernel, policy)
    return out.reshape(x.shape[:-1] + (kernel.shape[-1],))
