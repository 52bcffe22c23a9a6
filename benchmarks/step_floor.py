"""How much of the digits training step is the network's convolutions and matmuls, and what that leaves of issue
28's time-to-ticket targets.

    python -m benchmarks.step_floor          # digits_cnn at the digits IMP preset's shape (B = 64, T = 4, 8x8x1)

Times, in one process, the compiled SGD training step (``benchmarks/step_peak.py``'s) and then each of the
network's convolutions and linear layers alone at the shape the step gives it (``model.layers``: the encoding
conv sees the B images once, every later layer T*B spike maps), each jitted on its own as the step computes it
(``jsnn.conv.conv2d`` with the backend's default path, ``jsnn.precision.matmul``): the forward product, and the
forward with its backward (the input gradient and the kernel gradient; the encoding layer's input needs no
gradient). The sum of those is the step's products alone, without BatchNorm, the LIF scans, pooling, the
loss or the update; times the training steps of the time-to-ticket run (rounds x epochs x batches an epoch)
it is what the products alone take over that run, set against the eager script's wall time in
``benchmarks/results/time_to_ticket_digits.json`` (measured at another time: a ratio across two files).
Also the matmul peak (``step_peak.matmul_peak``) and the products' rate against it.
Results: benchmarks/results/step_floor.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jsnn  # noqa: F401  (jsnn's CPU convolution flag before the first computation)
from benchmarks.common import median_call_seconds, shared_machine, write_results
from benchmarks.step_peak import compiled_step, matmul_peak
from jsnn.conv import conv2d
from jsnn.data.datasets import load_digits
from jsnn.models import get_model
from jsnn.precision import matmul

RESULTS = os.path.join(os.path.dirname(__file__), "results", "step_floor")
PAIRED = os.path.join(os.path.dirname(__file__), "results", "time_to_ticket_digits.json")


def layer_products(layer, batch: int, timesteps: int, rng, repeats: int) -> dict:
    """Forward and forward+backward milliseconds of one conv / linear layer at the step's shape."""
    n = batch if layer.encoding else batch * timesteps
    spikes = not layer.encoding
    shape = (n,) + tuple(layer.in_shape)
    x = rng.random(shape, dtype=np.float32)
    x = jnp.asarray((x < 0.2).astype(np.float32) if spikes else x)
    kernel = jnp.asarray(rng.normal(size=layer.kernel_shape).astype(np.float32))
    if layer.kind == "conv":
        def forward(x, k):
            return conv2d(x, k, layer.stride, layer.padding)
    else:
        def forward(x, k):
            return matmul(x, k, "f32")
    out = jax.eval_shape(forward, x, kernel)
    g = jnp.asarray(rng.normal(size=out.shape).astype(np.float32))
    gradients = ["input", "kernel"] if spikes else ["kernel"]  # the image needs no gradient

    def forward_backward(x, k, g):
        if spikes:
            return jax.vjp(forward, x, k)[1](g)
        return jax.vjp(lambda k: forward(x, k), k)[1](g)

    macs = int(np.prod(out.shape)) * int(np.prod(layer.kernel_shape[:-1]))
    forward, forward_backward = jax.jit(forward), jax.jit(forward_backward)
    fwd = 1e3 * median_call_seconds(lambda: forward(x, kernel), repeats)
    both = 1e3 * median_call_seconds(lambda: forward_backward(x, kernel, g), repeats)
    return {"layer": layer.name, "kind": layer.kind, "input": list(shape), "kernel": list(layer.kernel_shape),
            "gradients": gradients, "forward_ms": fwd, "forward_backward_ms": both,
            "flops": 2 * macs * (1 + len(gradients))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8, help="per round")
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--out", default=RESULTS, help="results path without extension ('' writes nothing)")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    image_shape, classes = (8, 8, 1), 10
    peak = matmul_peak("f32")
    compiled, state, *_ = compiled_step("digits_cnn", "f32", args.batch, args.timesteps, image_shape, classes)
    state = list(state)
    for _ in range(3):
        *state, value = compiled(*state)
        jax.block_until_ready(value)
    step_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        *state, value = compiled(*state)
        jax.block_until_ready(value)
        step_times.append(time.perf_counter() - t0)
    step_ms = float(np.median(step_times)) * 1e3
    model = get_model("digits_cnn", classes, timesteps=args.timesteps)
    rng = np.random.default_rng(0)
    rows = [layer_products(layer, args.batch, args.timesteps, rng, args.repeats)
            for layer in model.layers(image_shape) if layer.kind in ("conv", "linear")]
    products_ms = sum(r["forward_backward_ms"] for r in rows)
    products_flops = sum(r["flops"] for r in rows)
    steps = args.rounds * args.epochs * (len(load_digits().train_labels) // args.batch)
    record = {
        "what": "the digits training step against its convolutions and linear layers alone, each at the step's shape",
        "machine": shared_machine("the step and the layers run one after the other in one process"),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "batch": args.batch, "timesteps": args.timesteps, "image_shape": list(image_shape),
        "matmul_peak_gflops": peak, "step_ms": step_ms, "step_times_s": step_times, "layers": rows,
        "products_ms": products_ms, "products_share_of_step": products_ms / step_ms,
        "products_gflops": products_flops / products_ms / 1e6,
        "products_fraction_of_peak": products_flops / products_ms / 1e6 / peak,
        "run_steps": steps, "run_rounds": args.rounds, "run_epochs_per_round": args.epochs,
        "run_products_s": steps * products_ms / 1e3, "run_steps_s": steps * step_ms / 1e3,
    }
    if os.path.exists(PAIRED):
        paired = json.load(open(PAIRED))
        script = paired["median"]["script"]["wall_s"]
        record.update(script_wall_s=script, script_from="benchmarks/results/time_to_ticket_digits.json",
                      run_products_over_script=record["run_products_s"] / script,
                      run_steps_over_script=record["run_steps_s"] / script)
    share, fraction = 100 * products_ms / step_ms, 100 * record["products_fraction_of_peak"]
    lines = [f"digits_cnn training step, B = {args.batch}, T = {args.timesteps}: {step_ms:.1f} ms; its convolutions "
             f"and linear layers alone, forward + backward: {products_ms:.1f} ms ({share:.0f} % of the step, "
             f"{record['products_gflops']:.0f} GFLOP/s, {fraction:.0f} % of the f32 matmul peak, {peak:.0f} GFLOP/s).",
             "",
             "| layer | input | kernel | forward ms | forward + backward ms |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['layer']} | {'x'.join(map(str, r['input']))} | {'x'.join(map(str, r['kernel']))} | "
              f"{r['forward_ms']:.2f} | {r['forward_backward_ms']:.2f} |" for r in rows]
    lines += ["", f"Over the time-to-ticket run's {steps} steps: the steps {record['run_steps_s']:.1f} s, the products "
              f"alone {record['run_products_s']:.1f} s"
              + (f" ({record['run_products_over_script']:.2f}x the eager script's {record['script_wall_s']:.1f} s wall "
                 "time in time_to_ticket_digits.json)." if "script_wall_s" in record else ".")]
    write_results(args.out, record, lines)
    return record


if __name__ == "__main__":
    main()
