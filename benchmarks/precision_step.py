"""The training step at f32 and at bf16, alternated in one process so both see the same load.

    nice -n 10 python -m benchmarks.precision_step        # digits_cnn at digits' shape, vgg_small at CIFAR's

For each network both steps are compiled first (``benchmarks/step_peak.py``'s SGD step), then run
alternately f32, bf16, f32, ... ``--rounds`` times; the median of each and their ratio are recorded.
Results: benchmarks/results/precision_step.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import jsnn  # noqa: F401  (jsnn's CPU convolution flag before the first computation)
from benchmarks.common import shared_machine, write_results
from benchmarks.step_peak import compiled_step

RESULTS = os.path.join(os.path.dirname(__file__), "results", "precision_step")
# network, batch, T, image shape, classes: the digits IMP preset's network and batch; the benchmarks' CIFAR workload
CASES = [("digits_cnn", 64, 4, (8, 8, 1), 10), ("vgg_small", 32, 5, (32, 32, 3), 100)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--models", default=",".join(c[0] for c in CASES))
    p.add_argument("--out", default=RESULTS, help="results path without extension ('' writes nothing)")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for name, batch, timesteps, shape, classes in [c for c in CASES if c[0] in args.models.split(",")]:
        steps = {prec: compiled_step(name, prec, batch, timesteps, shape, classes) for prec in ("f32", "bf16")}
        states = {prec: steps[prec][1] for prec in steps}
        times = {prec: [] for prec in steps}
        for prec in steps:  # one untimed run each
            *states[prec], loss = steps[prec][0](*states[prec])
            jax.block_until_ready(loss)
        for _ in range(args.rounds):
            for prec in steps:
                t0 = time.perf_counter()
                *states[prec], loss = steps[prec][0](*states[prec])
                jax.block_until_ready(loss)
                times[prec].append(time.perf_counter() - t0)
        med = {prec: float(np.median(t)) for prec, t in times.items()}
        rows.append({"model": name, "batch": batch, "timesteps": timesteps, "image_shape": list(shape),
                     "f32_step_s": med["f32"], "bf16_step_s": med["bf16"], "bf16_speedup": med["f32"] / med["bf16"],
                     "f32_images_per_s": batch / med["f32"], "bf16_images_per_s": batch / med["bf16"],
                     "step_times_s": times})
        print(f"{name}: f32 {med['f32']:.3f} s, bf16 {med['bf16']:.3f} s ({med['f32'] / med['bf16']:.2f}x)", flush=True)
    lines = ["| network | batch | T | f32 step s | bf16 step s | bf16 speed-up |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['timesteps']} | {r['f32_step_s']:.3f} | {r['bf16_step_s']:.3f} | "
              f"{r['bf16_speedup']:.2f} |" for r in rows]
    record = {"what": f"SGD training step, f32 and bf16 alternated {args.rounds} times in one process, medians",
              "machine": shared_machine("the two precisions alternate, so both see the same load"),
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "rows": rows}
    write_results(args.out, record, lines)
    return record


if __name__ == "__main__":
    main()
