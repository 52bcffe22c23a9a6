"""One conv layer, forward and forward+backward, in each of jsnn's conv implementations.

    python -m benchmarks.conv_layer                      # conv 128->256 at 16x16, batch 160
    python -m benchmarks.conv_layer --shape 160,32,32,64,128

Prints GFLOP/s (2 * N * Ho * Wo * k * k * Cin * Cout per convolution; fwd+bwd = 3x).
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jsnn import xla_flags
from jsnn.conv import IMPLS, conv2d

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)


def _median_time(fn, *args, steps=10):
    jax.block_until_ready(fn(*args))  # compile + warm-up
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_layer(n, h, w, cin, cout, k=3, stride=1, steps=10):
    pad = k // 2
    key = jax.random.PRNGKey(0)
    x = (jax.random.uniform(key, (n, h, w, cin)) < 0.2).astype(jnp.float32)  # spike-like input
    kernel = jax.random.normal(key, (k, k, cin, cout)) * 0.05
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    flop = 2.0 * n * ho * wo * k * k * cin * cout
    out = {"shape": [n, h, w, cin, cout, k, stride]}
    for impl in IMPLS:
        fwd = jax.jit(lambda x, kk: conv2d(x, kk, stride, pad, impl=impl))

        def loss(x, kk):
            return jnp.sum(conv2d(x, kk, stride, pad, impl=impl) ** 2) * 0.5

        bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
        tf, tb = _median_time(fwd, x, kernel, steps=steps), _median_time(bwd, x, kernel, steps=steps)
        out[impl] = {"fwd_s": tf, "fwd_gflops": flop / tf / 1e9, "fwdbwd_s": tb, "fwdbwd_gflops": 3 * flop / tb / 1e9}
    # forward + backward time of "xla" over each implementation's
    out["fwdbwd_speedup_vs_xla"] = {impl: out["xla"]["fwdbwd_s"] / out[impl]["fwdbwd_s"] for impl in IMPLS}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", action="append", help="N,H,W,Cin,Cout[,k[,stride]] (repeatable)")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    shapes = args.shape or ["160,16,16,128,256"]
    for s in shapes:
        dims = [int(v) for v in s.split(",")]
        print(json.dumps(bench_layer(*dims, steps=args.steps)))


if __name__ == "__main__":
    main()
