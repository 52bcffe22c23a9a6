"""BatchNorm followed by a LIF layer at long T: BN's per-channel map applied first (XLA writes its output, the LIF
kernel reads it) against the map computed inside the kernel as it reads the conv's output (``jsnn.layers.Affine``,
what a ``ConvBN`` fed by spikes hands its LIF layer), beside BN + ReLU (what the dense bound pays).

    python benchmarks/bn_lif.py        # writes benchmarks/results/bn_lif.{json,md}

A conv's output [T*B, 16, 16, 128] float32 at B = 32 (a small SNN-VGG layer). Evaluation: BN with fixed
statistics, the forward pass. Training: BN with the batch's statistics, the gradient of sum(S * W) in the conv's
output, BN's scale and its bias. Each function jitted, the median of --repeats calls after one warm-up, the three
forms alternated call by call (``median_call_seconds`` over each in turn, --rounds times), on this process's cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import median_call_seconds, write_results  # noqa: E402
from benchmarks.throughput import machine_info  # noqa: E402
from jsnn import xla_flags  # noqa: E402
from jsnn.lif_kernel import lif_spikes  # noqa: E402
from jsnn.neuron import LIFConfig  # noqa: E402
from jsnn.surrogate import Surrogate  # noqa: E402

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)

LIF = LIFConfig(surrogate=Surrogate("rectangle", 1.0))
EPS = 1e-5


def bn_map(x, gamma, beta, train: bool, mean, var):
    """(a, b) of BatchNorm as x * a + b (jsnn.layers._bn_map's arithmetic), from the batch or fixed statistics."""
    if train:
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes)
        var = jnp.mean(jnp.square(x - mean), axes)
    inv = jax.lax.rsqrt(var + EPS)
    return inv * gamma, beta - mean * inv * gamma


def forms(T: int, train: bool, mean, var):
    """{name: f(x, gamma, beta) -> spikes (or activations)} on folded x [T*B, H, W, C]."""

    def unfold(y):
        return y.reshape((T, -1) + y.shape[1:])

    def applied_first(x, gamma, beta):
        a, b = bn_map(x, gamma, beta, train, mean, var)
        return lif_spikes(unfold(x * a + b), LIF)

    def in_the_kernel(x, gamma, beta):
        a, b = bn_map(x, gamma, beta, train, mean, var)
        return lif_spikes(unfold(x), LIF, affine=(a, b))

    def relu(x, gamma, beta):
        a, b = bn_map(x, gamma, beta, train, mean, var)
        return jax.nn.relu(x * a + b)

    return {"bn_relu": relu, "bn_then_kernel": applied_first, "bn_in_kernel": in_the_kernel}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timesteps", default="16,32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bn_lif"))
    args = p.parse_args(argv)
    if jax.default_backend() != "cpu":
        print("the LIF kernel runs on the CPU backend only", file=sys.stderr)
        return 1
    rows = []
    c = 128
    gamma = jnp.asarray(np.linspace(0.5, 1.5, c, dtype=np.float32))
    beta = jnp.asarray(np.linspace(-0.2, 0.2, c, dtype=np.float32))
    mean, var = jnp.full((c,), 0.1), jnp.full((c,), 0.8)
    for T in (int(t) for t in args.timesteps.split(",")):
        x = jax.random.normal(jax.random.key(0), (T * 32, 16, 16, c))
        w = jnp.cos(3.0 * x)
        for mode in ("eval", "train"):
            calls = {}
            for name, f in forms(T, mode == "train", mean, var).items():
                if mode == "eval":
                    fn = jax.jit(f)
                else:
                    def loss(x, gamma, beta, f=f):
                        return jnp.sum(f(x, gamma, beta).reshape(x.shape) * w)
                    fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
                calls[name] = (lambda fn=fn: fn(x, gamma, beta))
            times = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    times[name].append(median_call_seconds(call, args.repeats))
            row = {"T": T, "mode": mode, "megabytes": x.nbytes / 2**20,
                   **{f"{name}_ms": 1e3 * float(np.median(t)) for name, t in times.items()}}
            row["kernel_saving"] = row["bn_then_kernel_ms"] / row["bn_in_kernel_ms"]
            rows.append(row)
            print(row, flush=True)
    m = machine_info(len(os.sched_getaffinity(0)))
    md = [f"Machine: {m['cpu']}, {m['threads_used']} cores; {time.strftime('%Y-%m-%d')}; "
          f"`python benchmarks/bn_lif.py` (the median over {args.rounds} alternated rounds of the median of "
          f"{args.repeats} calls; a conv's output [T*32, 16, 16, 128] f32; eval: the forward pass with fixed "
          "statistics; train: batch statistics, the gradient of sum(S * W) in the input and BN's scale and bias).",
          "", "| T | mode | MB | BN + ReLU ms | BN, then the LIF kernel ms | BN's map in the LIF kernel ms | "
          "then / in |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['T']} | {r['mode']} | {r['megabytes']:.0f} | {r['bn_relu_ms']:.1f} | {r['bn_then_kernel_ms']:.1f} | "
           f"{r['bn_in_kernel_ms']:.1f} | {r['kernel_saving']:.2f}× |" for r in rows]
    write_results(args.out, {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
