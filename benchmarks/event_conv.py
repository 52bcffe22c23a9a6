"""Where the event-driven convolution (``jsnn/event_conv.py``) beats XLA's f32 convolution, by layer shape and
input density: the forward pass and the filter gradient, each against XLA's own; and where it beats jsnn's bf16
kernel (``jsnn/conv_kernel.py``, on a CPU with AMX or AVX512-BF16), which the "bf16" precision runs instead.

    python -m benchmarks.event_conv            # the digits, MNIST and SNN-VGG layers, densities 5-80 %
    python -m benchmarks.event_conv --quick    # one shape, two densities (a smoke test)

Inputs are Bernoulli spikes at each density (a layer's firing rate; after a max pool it is higher: digits'
second spiking conv sees about 40 % where the layer before fires at about 15 %); the output gradient and the
weights are Gaussian. Each pair of calls is alternated (XLA's, the kernel's) and the minimum of ``--repeats``
is kept: the machine is shared, and the minimum is the least disturbed call. Every kernel result is checked
against XLA's (largest difference over the largest value). ``event_conv.FORWARD_MAX_DENSITY`` and
``FILTER_GRAD_MAX_DENSITY`` (the densities up to which ``conv.conv2d`` takes each kernel) are read from this
table. The bf16 rows time the bf16 kernel's forward pass against the event-driven one on the same bf16-rounded
weights, and its backward call (both gradients) against its input gradient alone plus the event-driven filter
gradient: ``event_conv.BF16_FORWARD_MAX_DENSITY`` is read from them. Results: benchmarks/results/event_conv.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jsnn  # noqa: F401  (jsnn's CPU convolution flag, as the programs run)
from benchmarks.common import git_commit, shared_machine, write_results
from jsnn import conv, conv_kernel, event_conv

RESULTS = os.path.join(os.path.dirname(__file__), "results", "event_conv")

# (name, N = T x B images, H = W, Cin, Cout): 3x3 kernels, padding 1
SHAPES = [
    ("digits conv1 (T 4 x B 64)", 256, 8, 32, 64),
    ("digits conv2", 256, 4, 64, 128),
    ("MNIST dvs_small conv1 (T 4 x B 128)", 512, 14, 16, 32),
    ("MNIST dvs_small conv2", 512, 7, 32, 64),
    ("vgg_small conv1 (T 5 x B 32)", 160, 32, 64, 128),
    ("vgg_small conv2", 160, 16, 128, 256),
    ("vgg_small conv3", 160, 8, 256, 256),
]
DENSITIES = (0.05, 0.15, 0.3, 0.4, 0.5, 0.6, 0.8)


def _alternated_minimum(calls, repeats: int) -> list[float]:
    for call in calls:
        jax.block_until_ready(call())
    times = [[] for _ in calls]
    for _ in range(repeats):
        for k, call in enumerate(calls):
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[k].append(time.perf_counter() - t0)
    return [min(t) for t in times]


def measure(n: int, side: int, cin: int, cout: int, density: float, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.random((n, side, side, cin)) < density).astype(np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((n, side, side, cout)), jnp.float32)
    xla_forward = jax.jit(lambda x, k: conv.conv2d(x, k, 1, 1, impl="xla"))
    xla_filter = jax.jit(lambda x, g: jax.vjp(lambda k: conv.conv2d(x, k, 1, 1, impl="xla"), kernel)[1](g)[0])
    forward = jax.jit(lambda x, k: event_conv.forward(x, k, 1))
    filter_grad = jax.jit(lambda x, g: event_conv.filter_grad(x, g, kernel.shape, 1))
    errors = []
    for ours, theirs in ((forward(x, kernel), xla_forward(x, kernel)), (filter_grad(x, g), xla_filter(x, g))):
        errors.append(float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs))))
    t = _alternated_minimum([lambda: xla_forward(x, kernel), lambda: forward(x, kernel),
                             lambda: xla_filter(x, g), lambda: filter_grad(x, g)], repeats)
    row = {"density": density, "measured_density": float(jnp.mean(x != 0)),
           "xla_forward_ms": 1e3 * t[0], "event_forward_ms": 1e3 * t[1],
           "xla_filter_grad_ms": 1e3 * t[2], "event_filter_grad_ms": 1e3 * t[3],
           "forward_speedup": t[0] / t[1], "filter_grad_speedup": t[2] / t[3],
           "forward_rel_error": errors[0], "filter_grad_rel_error": errors[1]}
    return {**row, **measure_bf16(x, kernel, g, repeats)} if conv_kernel.unavailable() is None else row


def measure_bf16(x, kernel, g, repeats: int) -> dict:
    """The event-driven kernels against jsnn's bf16 kernel on the same bf16 weights and output gradient."""
    xb, kb, gb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), g.astype(jnp.bfloat16)
    forward = jax.jit(lambda x, k: event_conv.forward(x, k.astype(jnp.float32), 1))
    bf16_forward = jax.jit(lambda x, k: conv_kernel.forward(x, k, 1))
    gradients = jax.jit(lambda x, k, g: conv_kernel.gradients(x, k, g, 1))
    split = jax.jit(lambda x, k, g: (conv_kernel.input_grad(g, k, x.shape, 1),
                                     event_conv.filter_grad(x, g.astype(jnp.float32), k.shape, 1)))
    ours, theirs = forward(x, kb), bf16_forward(xb, kb)
    error = float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs)))
    t = _alternated_minimum([lambda: bf16_forward(xb, kb), lambda: forward(x, kb),
                             lambda: gradients(xb, kb, gb), lambda: split(x, kb, gb)], repeats)
    return {"bf16_forward_ms": 1e3 * t[0], "event_forward_bf16_weights_ms": 1e3 * t[1],
            "bf16_gradients_ms": 1e3 * t[2], "bf16_input_grad_plus_event_filter_grad_ms": 1e3 * t[3],
            "bf16_forward_speedup": t[0] / t[1], "bf16_backward_speedup": t[2] / t[3], "bf16_forward_rel_error": error}


def crossover(rows: list[dict], key: str) -> float | None:
    """The highest measured density up to which the kernel won at every density (None: not at the lowest)."""
    best = None
    for row in sorted(rows, key=lambda r: r["density"]):
        if row[key] <= 1.0:
            break
        best = row["density"]
    return best


def _density(d: float | None) -> str:
    return "never" if d is None else f"{d:.0%}"


def _speedup_table(layers: list[dict], speedups: tuple[str, str], wins: tuple[str, str], wins_header: str,
                   shapes: bool) -> list[str]:
    """A markdown table of each layer's two speed-ups (``speedups``' keys) by density, then the densities up to
    which each wins (``wins``' keys); ``shapes`` adds the layer's shape column."""
    densities = [r["density"] for r in layers[0]["rows"]]
    lines = ["| layer | " + ("[N, H, W, Cin, Cout] | " if shapes else "") + " | ".join(f"{d:.0%}" for d in densities)
             + f" | {wins_header} |", "|---|" + ("---|" if shapes else "") + "---:|" * len(densities) + "---:|---:|"]
    for L in layers:
        cells = " | ".join(f"{r[speedups[0]]:.2f} / {r[speedups[1]]:.2f}" for r in L["rows"])
        lines.append(f"| {L['layer']} | " + (f"{L['shape']} | " if shapes else "")
                     + f"{cells} | {_density(L[wins[0]])} | {_density(L[wins[1]])} |")
    return lines


def markdown(record: dict) -> list[str]:
    """The results file's text, from its record."""
    layers = record["layers"]
    lines = [f"`python -m benchmarks.event_conv` at {record['commit']} on {record['machine']}; jax {record['jax']}.",
             "",
             "The event-driven kernels' speed-up over XLA's f32 convolution (XLA's time / the kernel's, minimum of "
             f"{record['repeats']} alternated calls), forward / filter gradient, by input density (Bernoulli spikes); "
             f"3x3 kernels, padding 1. Largest difference from XLA's result: {record['largest_rel_error']:.1e} of the "
             "largest value.", ""]
    lines += _speedup_table(layers, ("forward_speedup", "filter_grad_speedup"),
                            ("forward_wins_up_to", "filter_grad_wins_up_to"),
                            "forward wins up to | filter gradient wins up to", shapes=True)
    lines += ["", f"conv.conv2d runs the forward kernel up to {record['forward_max_density']:.0%} and the filter "
              f"gradient's up to {record['filter_grad_max_density']:.0%} density (decided per call from the input)."]
    if "bf16_forward_wins_up_to" in layers[0]:
        lines += ["", "Against jsnn's bf16 kernel (its time / the event-driven one's, on the same bf16 weights): the "
                  "forward pass / the backward call (both gradients) against its input gradient plus the event-driven "
                  "filter gradient.", ""]
        lines += _speedup_table(layers, ("bf16_forward_speedup", "bf16_backward_speedup"),
                                ("bf16_forward_wins_up_to", "bf16_backward_wins_up_to"),
                                "forward wins up to | backward wins up to", shapes=False)
        lines += ["", f"Under bf16, conv.conv2d runs the forward kernel up to "
                  f"{record['bf16_forward_max_density']:.0%} density and keeps the bf16 kernel's backward call."]
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one shape, two densities")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=RESULTS, help="results path without extension ('' prints only)")
    args = p.parse_args(argv)
    why = event_conv.unavailable()
    if why is not None:
        raise SystemExit(f"the event-driven convolution cannot run here: {why}")
    shapes, densities = (SHAPES[:1], (0.15, 0.6)) if args.quick else (SHAPES, DENSITIES)
    layers = []
    for name, n, side, cin, cout in shapes:
        rows = [measure(n, side, cin, cout, d, args.repeats) for d in densities]
        layers.append({"layer": name, "shape": [n, side, side, cin, cout], "rows": rows,
                       "forward_wins_up_to": crossover(rows, "forward_speedup"),
                       "filter_grad_wins_up_to": crossover(rows, "filter_grad_speedup"),
                       **({"bf16_forward_wins_up_to": crossover(rows, "bf16_forward_speedup"),
                           "bf16_backward_wins_up_to": crossover(rows, "bf16_backward_speedup")}
                          if "bf16_forward_speedup" in rows[0] else {})})
        print(name, " ".join(f"{r['density']:.2f}: {r['forward_speedup']:.2f}/{r['filter_grad_speedup']:.2f}"
                             for r in rows), flush=True)
    worst = max(max(r["forward_rel_error"], r["filter_grad_rel_error"]) for L in layers for r in L["rows"])
    record = {"machine": shared_machine("minimum of alternated calls"), "commit": git_commit(),
              "jax": jax.__version__, "threads": os.cpu_count(), "repeats": args.repeats,
              "forward_max_density": event_conv.FORWARD_MAX_DENSITY,
              "filter_grad_max_density": event_conv.FILTER_GRAD_MAX_DENSITY,
              "bf16_forward_max_density": event_conv.BF16_FORWARD_MAX_DENSITY,
              "largest_rel_error": worst, "layers": layers}
    write_results(args.out, record, markdown(record))


if __name__ == "__main__":
    main()
