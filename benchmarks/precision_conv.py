"""Which convolutions gain from bf16 on this CPU, and in which form: XLA's convolution, one im2col matmul,
or (bf16 only) jsnn's kernel (AMX, or AVX512-BF16 on a CPU without AMX).

    python -m benchmarks.precision_conv            # the CIFAR-shape layers of SNN-VGG and Res-SNN-19
    python -m benchmarks.precision_conv --quick    # two shapes, for a smoke test

For every layer shape (spike input of N = 32 images, one timestep of a B = 32 batch, at CIFAR
sizes) it times forward+backward (input and kernel gradients) of the same convolution four ways:
XLA's convolution and the im2col matmul (``jsnn.conv``'s tiny-map path), each with f32 and with
bf16 operands (f32 accumulation and result, ``jsnn/precision.py``), and with bf16 operands on the CPU's
matrix unit or bf16 dot products (``jsnn.conv_kernel``, where the CPU has AMX or AVX512-BF16 and the
shape is one it supports; the column is named "amx" for either build, and ``kernel`` in the results says
which ran). ``jsnn/conv.py``'s im2col limit (``IM2COL_MAX_OUTPUT_PIXELS``) and its choice of the kernel
for bf16 are read from this table.
Results: benchmarks/results/precision_conv.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jsnn  # noqa: F401  (jsnn's CPU convolution flag, as a user's script gets it)
from benchmarks.common import shared_machine, write_results
from jsnn import conv, conv_kernel
from jsnn.precision import matmul_policy

RESULTS = os.path.join(os.path.dirname(__file__), "results", "precision_conv")

# (N, H, W, Cin, Cout, k, stride): N = 32 images (a step at T = 5 runs five times this)
SHAPES = [
    (32, 32, 32, 64, 128, 3, 1),  # VGG stage 1 / vgg_small conv1
    (32, 16, 16, 128, 256, 3, 1),  # stage 2
    (32, 8, 8, 256, 256, 3, 1),  # stage 3
    (32, 4, 4, 512, 512, 3, 1),  # SNN-VGG-16 stage 4
    (32, 2, 2, 512, 512, 3, 1),  # SNN-VGG-16 stage 5 (im2col already in f32)
    (32, 32, 32, 128, 256, 1, 2),  # Res-SNN-19's strided 1x1 shortcut
    (256, 8, 8, 32, 64, 3, 1),  # digits_cnn conv1 at the digits preset's step (B = 64, T = 4)
    (256, 4, 4, 64, 128, 3, 1),  # digits_cnn conv2
    (512, 14, 14, 16, 32, 3, 1),  # dvs_small on MNIST (B = 128, T = 4): 16 channels, padded to 32 in the AMX kernel
    (512, 7, 7, 32, 64, 3, 1),  # dvs_small's last convolution on MNIST
]
QUICK = [(32, 8, 8, 64, 64, 3, 1), (32, 2, 2, 128, 128, 3, 1)]
FORMS = {"xla": conv._xla_conv, "im2col": conv._im2col_conv}
KEYS = ("f32_xla", "f32_im2col", "bf16_xla", "bf16_im2col", "bf16_amx")


def _amx(a, b, stride, pad, policy):
    return conv_kernel.conv(a, b, pad)


def _median_s(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_shape(shape, repeats):
    n, h, w, cin, cout, k, stride = shape
    pad = k // 2
    kx, kk = jax.random.split(jax.random.PRNGKey(0))
    x = (jax.random.uniform(kx, (n, h, w, cin)) < 0.2).astype(jnp.float32)  # spikes
    kernel = jax.random.normal(kk, (k, k, cin, cout)) * 0.05
    ho, wo = conv._output_hw((h, w), (k, k), stride, pad)
    flop = 2.0 * n * ho * wo * k * k * cin * cout
    row = {"shape": list(shape), "output_pixels": ho * wo, "gflop_fwd": flop / 1e9}
    amx = conv_kernel.unavailable() is None and conv_kernel.supports(x.shape, kernel.shape, stride, pad)
    for precision in ("f32", "bf16"):
        policy = matmul_policy(precision)
        forms = dict(FORMS, amx=_amx) if precision == "bf16" and amx else FORMS
        for form, fn in forms.items():
            def loss(a, b, fn=fn, policy=policy):
                y = fn(a.astype(policy.operand_dtype), b.astype(policy.operand_dtype), stride, pad, policy)
                return jnp.sum(y * y) * 0.5

            step = jax.jit(jax.grad(loss, argnums=(0, 1)))
            seconds = _median_s(step, (x, kernel), repeats)
            row[f"{precision}_{form}"] = {"fwdbwd_s": seconds, "gflops": 3 * flop / seconds / 1e9}
    base = row["f32_xla"]["fwdbwd_s"]
    timed = [key for key in KEYS if key in row]
    row["speedup_vs_f32_xla"] = {key: base / row[key]["fwdbwd_s"] for key in timed if key != "f32_xla"}
    row["fastest"] = min(timed, key=lambda key: row[key]["fwdbwd_s"])
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two small shapes (smoke test); writes no results")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=RESULTS, help="results path without extension")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    rows = [bench_shape(s, args.repeats) for s in (QUICK if args.quick else SHAPES)]
    lines = ["| N,H,W,Cin,Cout,k,s | out px | f32 xla GFLOP/s | f32 im2col | bf16 xla | bf16 im2col | bf16 amx"
             " | fastest |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {','.join(map(str, r['shape']))} | {r['output_pixels']} | "
                     + " | ".join(f"{r[key]['gflops']:.0f}" if key in r else "–" for key in KEYS)
                     + f" | {r['fastest']} |")
    record = {"what": "forward+backward of one convolution (spike input), GFLOP/s = 3 x 2 x MACs / median time",
              "machine": shared_machine("compare ratios within one run"),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""), "repeats": args.repeats,
              "amx": conv_kernel.unavailable() or "available", "kernel": conv_kernel.cpu_variant(), "rows": rows}
    if args.quick:
        print("\n".join(lines))
        return record
    write_results(args.out, record, lines)
    return record


if __name__ == "__main__":
    main()
