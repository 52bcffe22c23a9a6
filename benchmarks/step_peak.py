"""The training step of SNN-VGG-16 and Res-SNN-19 at CIFAR shapes as a fraction of the measured matmul peak.

    nice -n 10 python -m benchmarks.step_peak                 # both networks, f32 and bf16, B = 32, T = 5
    python -m benchmarks.step_peak --batch 2 --models vgg16 --precisions f32 --out ''   # smoke

FLOPs of a step: XLA's cost analysis of the compiled step (``compiled.cost_analysis()["flops"]``: the
forward, the backward and the SGD update as XLA counts them), plus the products of the convolutions that
run as jsnn's AMX kernel (bf16 on a CPU with AMX, ``jsnn/conv_kernel.py``), which XLA sees as custom
calls and does not count: 2 x the multiply-adds of each call, counted from the step's jaxpr as XLA counts a
convolution's (taps on the padding left out). The peak: the best of several runs of a
jitted 2048 x 2048 x 2048 matmul, f32 x f32 -> f32 for the f32 rows and bf16 x bf16 -> f32 for the bf16
rows (``jsnn/precision.py``'s policy), measured right before each network's steps so both see the same
load. Fraction = (step FLOPs / median step seconds) / peak. No optimisation, only the measurement.
Results: benchmarks/results/step_peak.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jsnn  # noqa: F401  (jsnn's CPU convolution flag before the first computation)
from benchmarks.common import shared_machine, write_results
from jsnn import conv_kernel
from jsnn.models import get_model
from jsnn.neuron import LIFConfig
from jsnn.precision import matmul_policy
from jsnn.variables import apply_model, init_variables

RESULTS = os.path.join(os.path.dirname(__file__), "results", "step_peak")
PEAK_N = 2048


def matmul_peak(precision: str, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` jitted PEAK_N^3 matmuls under ``precision``'s policy."""
    policy = matmul_policy(precision)
    a = jnp.ones((PEAK_N, PEAK_N), policy.operand_dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, precision=policy.precision, preferred_element_type=policy.result_dtype))
    jax.block_until_ready(f(a, a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, a))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * PEAK_N ** 3 / best / 1e9


def _valid_taps(size: int, k: int, pad: int) -> int:
    """Over the output positions of one axis (stride 1), the kernel taps that fall inside the input."""
    return sum(sum(0 <= o + i - pad < size for i in range(k)) for o in range(size + 2 * pad - k + 1))


def _kernel_flops(jaxpr) -> float:
    """2 x the multiply-adds of every AMX convolution call in ``jaxpr`` and the jaxprs inside it, counted as
    XLA's cost analysis counts a convolution's: only taps that fall inside the input, not on its padding."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "ffi_call" and eqn.params["target_name"] in conv_kernel.TARGETS.values():
            first, second = (v.aval.shape for v in eqn.invars[:2])
            out = eqn.params["result_avals"][-1].shape
            pad = int(dict(eqn.params["attributes"])["pad"])
            # forward: x [N,H,W,C], w [kh,kw,..] -> [N,H',W',O]; backward: x, w, g -> (dx, dw [kh,kw,C,O]),
            # the two gradients' products (each as many as the forward's)
            if eqn.params["target_name"] == conv_kernel.TARGETS["forward"]:
                (n, h, w, c), (kh, kw), o, products = first, second[:2], out[3], 1
            else:
                (n, h, w, c), (kh, kw), o, products = first, out[:2], out[3], 2
            total += 2.0 * products * n * _valid_taps(h, kh, pad) * _valid_taps(w, kw, pad) * c * o
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _kernel_flops(inner)
    return total


def compiled_step(model_name: str, precision: str, batch: int, timesteps: int, image_shape=(32, 32, 3),
                  classes: int = 100, compiler_options: dict | None = None):
    """(the compiled SGD training step, its first state, compile seconds, the products of its AMX convolution
    calls in FLOPs) of ``model_name`` under ``precision``, compiled with ``jax.jit``'s ``compiler_options``."""
    model = get_model(model_name, classes, timesteps=timesteps, lif=LIFConfig(surrogate="rectangle"),
                      precision=precision)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((batch,) + tuple(image_shape), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, classes, batch))
    variables = init_variables(model, jax.random.PRNGKey(0), images.shape)
    opt = optax.sgd(0.1, momentum=0.9)

    def loss(weights, variables):
        logits, stats, _ = apply_model(model, variables._replace(weights=weights), images, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels[None]).mean(), stats

    def step(weights, opt_state, variables):
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(weights, variables)
        changes, opt_state = opt.update(grads, opt_state, weights)
        return optax.apply_updates(weights, changes), opt_state, variables._replace(batch_stats=stats), value

    weights, opt_state = variables.weights, opt.init(variables.weights)
    t0 = time.perf_counter()
    compiled = jax.jit(step, compiler_options=compiler_options).lower(weights, opt_state, variables).compile()
    compile_s = time.perf_counter() - t0
    kernel_flops = _kernel_flops(jax.make_jaxpr(step)(weights, opt_state, variables).jaxpr)
    return compiled, (weights, opt_state, variables), compile_s, kernel_flops


def step_rate(model_name: str, precision: str, batch: int, timesteps: int, steps: int) -> dict:
    compiled, state, compile_s, kernel_flops = compiled_step(model_name, precision, batch, timesteps)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float(cost["flops"])
    flops = xla_flops + kernel_flops
    jax.block_until_ready(compiled(*state))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        *state, value = compiled(*state)
        jax.block_until_ready(value)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    return {"model": model_name, "precision": precision, "batch": batch, "timesteps": timesteps,
            "step_flops": flops, "xla_counted_flops": xla_flops, "amx_kernel_flops": kernel_flops,
            "compile_s": compile_s, "median_step_s": seconds, "step_times_s": times,
            "step_gflops": flops / seconds / 1e9}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg16,resnet19")
    p.add_argument("--precisions", default="f32,bf16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default=RESULTS, help="results path without extension ('' writes nothing)")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for model_name in args.models.split(","):
        for precision in args.precisions.split(","):
            peak = matmul_peak(precision)
            row = step_rate(model_name, precision, args.batch, args.timesteps, args.steps)
            row.update(peak_gflops=peak, peak_after_gflops=matmul_peak(precision),
                       fraction_of_peak=row["step_gflops"] / peak)
            rows.append(row)
            print(f"{model_name} {precision}: {row['step_gflops']:.0f} GFLOP/s of a {peak:.0f} GFLOP/s peak "
                  f"({100 * row['fraction_of_peak']:.0f} %)", flush=True)
    lines = ["| network | precision | step GFLOP (XLA) | step s | step GFLOP/s | matmul peak GFLOP/s (before / after) "
             "| fraction of peak |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['precision']} | {r['step_flops'] / 1e9:.0f} | {r['median_step_s']:.2f} | "
              f"{r['step_gflops']:.0f} | {r['peak_gflops']:.0f} / {r['peak_after_gflops']:.0f} | "
              f"{100 * r['fraction_of_peak']:.0f} % |" for r in rows]
    record = {"what": f"training step (SGD, momentum) at B = {args.batch}, T = {args.timesteps}, 32x32x3, 100 "
                      f"classes; median of {args.steps} steps after the compiling one; peak: best of 5 jitted "
                      f"{PEAK_N}^3 matmuls",
              "machine": shared_machine("each peak measured right before its network's steps"),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__, "rows": rows}
    write_results(args.out, record, lines)
    return record


if __name__ == "__main__":
    main()
