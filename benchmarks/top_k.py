"""Edge-popup's per-step top-k mask: jsnn's bisection (jsnn.sparsity.masks.keep_largest) against
the argsort it replaced and a value sort, on the layer sizes of SNN-VGG-16 and Res-SNN-19.

    python benchmarks/top_k.py          # writes benchmarks/results/top_k.{json,md}

Each formulation is jitted and timed alone (median of --repeats calls after one warm-up), and
checked to give the same mask as the argsort.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import median_call_seconds, write_results  # noqa: E402
from benchmarks.throughput import machine_info  # noqa: E402
from jsnn import xla_flags  # noqa: E402
from jsnn.sparsity.masks import keep_largest  # noqa: E402

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)

# (what, kernel shape)
LAYERS = [("VGG-16 3x3 512->512 (x5)", (3, 3, 512, 512)), ("VGG-16 3x3 256->256", (3, 3, 256, 256)),
          ("VGG-16 3x3 64->64", (3, 3, 64, 64)), ("ResNet-19 3x3 128->128", (3, 3, 128, 128))]


def argsort_mask(scores, k):
    """The formulation keep_largest replaced: stable argsort, ranks scattered back."""
    flat = scores.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    rank = jnp.empty_like(order).at[order].set(jnp.arange(flat.size, dtype=order.dtype))
    return (rank >= flat.size - k).astype(scores.dtype).reshape(scores.shape)


def sort_mask(scores, k):
    """A value sort for the threshold (ties broken as keep_largest does)."""
    flat = scores.reshape(-1)
    kth = jnp.sort(flat)[flat.size - k]
    above, ties = flat > kth, flat == kth
    from_end = jnp.cumsum(ties[::-1].astype(jnp.int32))[::-1]
    return (above | (ties & (from_end <= k - jnp.sum(above)))).astype(scores.dtype).reshape(scores.shape)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "top_k"))
    args = p.parse_args(argv)
    rows = []
    for what, shape in LAYERS:
        scores = jnp.abs(jax.random.normal(jax.random.key(0), shape))
        k = scores.size // 2  # the sweep's first level
        reference = argsort_mask(scores, k)
        row = {"layer": what, "shape": shape, "n": int(scores.size)}
        for name, fn in (("argsort", argsort_mask), ("sort", sort_mask), ("bisection (jsnn)", keep_largest)):
            jitted = jax.jit(fn)
            assert bool((jitted(scores, k) == reference).all()), (name, what)
            row[name] = median_call_seconds(lambda: jitted(scores, k), args.repeats)
        rows.append(row)
        print(f"{what:28s} argsort {row['argsort'] * 1e3:7.1f} ms  sort {row['sort'] * 1e3:6.1f} ms  "
              f"bisection {row['bisection (jsnn)'] * 1e3:6.1f} ms", flush=True)
    m = machine_info(2)
    md = [f"Machine: {m['cpu']}, {m['cores']} cores; {time.strftime('%Y-%m-%d')}; `python benchmarks/top_k.py` "
          f"(median of {args.repeats} calls, jitted, k = n/2; every mask equal to the argsort's).", "",
          "| layer | weights | argsort ms | sort ms | bisection (jsnn) ms | argsort / bisection |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['layer']} | {r['n']:,} | {r['argsort'] * 1e3:.1f} | {r['sort'] * 1e3:.1f} | "
           f"{r['bisection (jsnn)'] * 1e3:.1f} | {r['argsort'] / r['bisection (jsnn)']:.1f}x |" for r in rows]
    write_results(args.out, {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
