"""A whole ticket's inference, event-driven (jsnn.sparse_inference.predict_sparse) against the dense
path (the jitted eval forward), on SNN-VGG-16 at CIFAR shape.

    python benchmarks/sparse_ticket.py            # writes benchmarks/results/sparse_ticket.{json,md}
    python benchmarks/sparse_ticket.py --quick    # seconds: small batch, one sparsity

No trained CIFAR ticket exists offline, so each "ticket" is VGG-16 at its initialisation with ERK
masks at the overall sparsity (the magnitudes pick within each layer, as IMP's first round would)
and its BatchNorm statistics recalibrated on the batch (one training-mode pass), so that the LIF
layers receive currents of the scale training gives them; the input is CIFAR-shaped random images.
The firing rate of every spike-input layer is measured and reported beside the times. Median of
--repeats calls after one warm-up; both paths checked to give the same predictions.
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

from benchmarks import common  # noqa: E402
from benchmarks.common import median_call_seconds, write_results  # noqa: E402
from benchmarks.throughput import machine_info  # noqa: E402
from jsnn import xla_flags  # noqa: E402
from jsnn.layers import BNConfig  # noqa: E402
from jsnn.models import get_model  # noqa: E402
from jsnn.neuron import LIFConfig  # noqa: E402
from jsnn.sparse_inference import predict_sparse, sparse_layers  # noqa: E402
from jsnn.sparsity import distributions  # noqa: E402
from jsnn.sparsity.masks import sparsity_of  # noqa: E402
from jsnn.variables import apply_model, by_layer, init_variables, kernels  # noqa: E402

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)


def make_ticket(model, recalibrating_model, images, sparsity: float, seed: int = 0):
    v = init_variables(model, jax.random.key(seed), (1,) + images.shape[1:])
    magnitudes = jax.tree.map(jnp.abs, kernels(v.weights))
    masks = distributions.prune("erk", magnitudes, v.masks, 1.0 - sparsity) if sparsity > 0 else v.masks
    v = v._replace(masks=masks)
    # BN momentum 1: the running statistics become this batch's, layer after layer
    _, stats, _ = apply_model(recalibrating_model, v, images, train=True)
    return v._replace(batch_stats=stats)


def firing_rates(model, v, images) -> dict[str, float]:
    _, _, stats = apply_model(model, v, images, train=False, collect_stats=True)
    return {layer: float(np.sum(s["input_sum"]) / (s["input_count"] * np.size(s["input_sum"])))
            for layer, s in by_layer(stats).items() if "input_sum" in s and "input_count" in s}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsities", default="0.9,0.95,0.98")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out",
                   default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "sparse_ticket"))
    args = p.parse_args(argv)
    if args.quick:
        args.sparsities, args.batch, args.timesteps, args.repeats = "0.98", 2, 2, 1
    lif = LIFConfig(decay=common.DECAY, threshold=common.V_TH, surrogate="rectangle")
    model = get_model("vgg16", common.NUM_CLASSES, timesteps=args.timesteps, lif=lif, bn=BNConfig())
    recalibrating = get_model("vgg16", common.NUM_CLASSES, timesteps=args.timesteps, lif=lif, bn=BNConfig(momentum=1.0))
    images = jnp.asarray(common.make_batch(args.batch)[0])
    dense_fn = jax.jit(lambda v, x: apply_model(model, v, x, train=False)[0])
    rows = []
    for sparsity in (float(s) for s in args.sparsities.split(",")):
        v = make_ticket(model, recalibrating, images, sparsity)
        layers = sparse_layers(v)
        sparse_fn = jax.jit(lambda x: predict_sparse(model, v, x, layers))
        dense_logits, sparse_logits = dense_fn(v, images), sparse_fn(images)
        same = bool(np.array_equal(np.argmax(np.asarray(dense_logits).mean(0), -1),
                                   np.argmax(np.asarray(sparse_logits).mean(0), -1)))
        scale = float(np.abs(np.asarray(dense_logits)).max())
        diff = float(np.abs(np.asarray(dense_logits) - np.asarray(sparse_logits)).max()) / max(scale, 1e-30)
        rates = firing_rates(model, v, images)
        row = {"sparsity": sparsity, "measured_sparsity": sparsity_of(v.masks), "same_predictions": same,
               "max_logit_diff_relative": diff, "firing_rates": rates,
               "formats": {n: f for n, (f, _) in layers.items()},
               "dense_s": median_call_seconds(lambda: dense_fn(v, images), args.repeats),
               "sparse_s": median_call_seconds(lambda: sparse_fn(images), args.repeats)}
        rows.append(row)
        print(f"sparsity {sparsity:.2f}: dense {row['dense_s']:.3f} s  event-driven {row['sparse_s']:.3f} s  "
              f"({row['dense_s'] / row['sparse_s']:.2f}x)  same predictions {same}  logit diff {diff:.1e}  "
              f"mean firing {np.mean(list(rates.values())):.3f}", flush=True)
    m = machine_info(len(os.sched_getaffinity(0)))
    md = [f"Machine: {m['cpu']}, {m['threads_used']} cores; {time.strftime('%Y-%m-%d')}; "
          f"`python benchmarks/sparse_ticket.py{' --quick' if args.quick else ''}`: SNN-VGG-16, batch {args.batch}, "
          f"T = {args.timesteps}, ERK masks, BN recalibrated, median of {args.repeats} calls.", "",
          "| sparsity | dense s | event-driven s | speed-up | same predictions | max logit diff / max logit | "
          "firing rate of spike-input layers (min / mean / max) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        fr = list(r["firing_rates"].values())
        md.append(f"| {r['measured_sparsity']:.3f} | {r['dense_s']:.3f} | {r['sparse_s']:.3f} | "
                  f"{r['dense_s'] / r['sparse_s']:.2f}x | {r['same_predictions']} | "
                  f"{r['max_logit_diff_relative']:.1e} | "
                  f"{min(fr):.3f} / {np.mean(fr):.3f} / {max(fr):.3f} |")
    if args.quick:
        print("\n".join(md))
    else:
        write_results(args.out, {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
