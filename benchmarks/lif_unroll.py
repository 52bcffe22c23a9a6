"""One LIF layer over T: a fully unrolled scan, a while loop (one step per iteration) and the C++ kernel
(jsnn/lif_kernel.py), forward and forward + backward, beside a ReLU over the same currents (what the
dense bound pays).

    python benchmarks/lif_unroll.py        # writes benchmarks/results/lif_unroll.{json,md}

Currents [T, 32, 16, 16, 128] float32 (a small SNN-VGG layer at batch 32); each function jitted,
median of --repeats calls after one warm-up, on the cores this process may use. This is what
``LIFConfig.unroll=None`` (jsnn.neuron.FULL_UNROLL_MAX_T) is chosen from; where the kernel takes over
(jsnn.neuron.KERNEL_MIN_T) is chosen from whole steps (benchmarks/throughput.py, jsnn against jsnn_scan).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import median_call_seconds, write_results  # noqa: E402
from benchmarks.throughput import machine_info  # noqa: E402
from jsnn import xla_flags  # noqa: E402
from jsnn.lif_kernel import lif_spikes  # noqa: E402
from jsnn.neuron import FULL_UNROLL_MAX_T, KERNEL_MIN_T, LIFConfig, lif_time_major  # noqa: E402
from jsnn.surrogate import Surrogate  # noqa: E402

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)

LIF = LIFConfig(surrogate=Surrogate("rectangle", 1.0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timesteps", default="4,8,16,32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "lif_unroll"))
    args = p.parse_args(argv)
    rows = []
    for T in (int(t) for t in args.timesteps.split(",")):
        x = jax.random.normal(jax.random.key(0), (T, 32, 16, 16, 128))
        relu = jax.jit(jax.nn.relu)
        row = {"T": T, "megabytes": x.nbytes / 2**20,
               "relu_ms": 1e3 * median_call_seconds(lambda: relu(x), args.repeats)}
        os.environ["JSNN_LIF_IMPL"] = "scan"  # the scan's two forms; the kernel is called directly
        on_cpu = jax.default_backend() == "cpu"  # the kernel is registered with XLA's CPU backend only
        for name, unroll in (("unrolled", T), ("loop", 1), ("kernel", None)):
            if name == "kernel" and not on_cpu:
                row["kernel_forward_ms"] = row["kernel_backward_ms"] = None
                continue
            cfg = dataclasses.replace(LIF, unroll=unroll)
            layer = (lambda x: lif_spikes(x, cfg)) if name == "kernel" else (lambda x: lif_time_major(x, cfg))
            fwd = jax.jit(layer)
            bwd = jax.jit(jax.grad(lambda x: jnp.sum(layer(x) * x)))
            row[f"{name}_forward_ms"] = 1e3 * median_call_seconds(lambda: fwd(x), args.repeats)
            row[f"{name}_backward_ms"] = 1e3 * median_call_seconds(lambda: bwd(x), args.repeats)
        row["auto"] = "kernel" if T >= KERNEL_MIN_T and on_cpu else "unrolled" if T <= FULL_UNROLL_MAX_T else "loop"
        rows.append(row)
        print(row, flush=True)
    m = machine_info(len(os.sched_getaffinity(0)))
    md = [f"Machine: {m['cpu']}, {m['threads_used']} cores; {time.strftime('%Y-%m-%d')}; "
          f"`python benchmarks/lif_unroll.py` (median of {args.repeats} calls; currents [T, 32, 16, 16, 128] f32; "
          "forward + backward = the gradient of sum(S * X)).", "",
          "| T | MB | ReLU ms | unrolled fwd ms | loop fwd ms | kernel fwd ms | "
          "unrolled fwd+bwd ms | loop fwd+bwd ms | kernel fwd+bwd ms | jsnn picks |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    def ms(v):
        return "–" if v is None else f"{v:.1f}"

    md += [f"| {r['T']} | {r['megabytes']:.0f} | {r['relu_ms']:.1f} | {r['unrolled_forward_ms']:.1f} | "
           f"{r['loop_forward_ms']:.1f} | {ms(r['kernel_forward_ms'])} | {r['unrolled_backward_ms']:.1f} | "
           f"{r['loop_backward_ms']:.1f} | {ms(r['kernel_backward_ms'])} | {r['auto']} |" for r in rows]
    write_results(args.out, {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
