"""XLA's CPU backend optimisation level: what it costs in compilation and what it changes in the step.

    python -m benchmarks.compile_level                       # digits, MNIST and small-VGG steps, f32 and bf16
    python -m benchmarks.compile_level --cases digits --precisions f32 --repeats 2 --out ''   # smoke

A first run of a program waits for XLA to compile it: on digits the training step alone takes about as
long to compile as a hundred steps take to run. ``xla_backend_optimization_level`` (3 in the compile options
jaxlib makes) sets how hard LLVM optimises the code XLA generates for the fused element-wise operations; the
convolutions and matmuls are library calls it does not touch. For each case (a network, its batch, T and
image shape) and precision, this compiles the SGD training step
(``benchmarks/step_peak.py``'s: random images, the rectangle surrogate) at XLA's default level and at level 1
(``jax.jit``'s ``compiler_options``, persistent cache off), twice each, alternated (the faster compilation kept),
then times ``--steps`` steps of each, alternated ``--repeats`` times (the median and the minimum per step).
``jsnn.precision.compiler_options`` applies level 1 where this says it pays.
Results: benchmarks/results/compile_level.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

import jsnn  # noqa: F401  (jsnn's CPU convolution flag before the first computation)
from benchmarks import step_peak
from benchmarks.common import git_commit, shared_machine, write_results

RESULTS = os.path.join(os.path.dirname(__file__), "results", "compile_level")
# name -> (model, batch, T, image shape): the digits and MNIST presets' networks, and the small SNN-VGG at CIFAR's
CASES = {"digits": ("digits_cnn", 64, 4, (8, 8, 1)), "mnist": ("dvs_small", 128, 4, (28, 28, 1)),
         "vgg_small": ("vgg_small", 32, 5, (32, 32, 3))}
LEVELS = (None, 1)  # None: XLA's default


def compiled_step(case: str, precision: str, level: int | None):
    """(the compiled SGD step of ``case`` at ``level``, its first state, compile seconds): step_peak.py's step."""
    name, batch, timesteps, shape = CASES[case]
    options = {} if level is None else {"xla_backend_optimization_level": level}
    compiled, state, compile_s, _ = step_peak.compiled_step(name, precision, batch, timesteps, shape, classes=10,
                                                            compiler_options=options)
    return compiled, state, compile_s


def measure(case: str, precision: str, steps: int, repeats: int) -> list[dict]:
    built = {}
    # each level compiled twice, alternated, its faster compilation kept: the process's first compilation also pays
    # one-time costs (the kernels' libraries, LLVM's set-up) that are no level's
    for _ in range(2):
        for level in LEVELS:
            compiled, state, compile_s = compiled_step(case, precision, level)
            if level not in built or compile_s < built[level]["compile_s"]:
                built[level] = {"compiled": compiled, "state": state, "compile_s": compile_s, "times": []}
    for b in built.values():
        for _ in range(2):
            *b["state"], value = b["compiled"](*b["state"])
        jax.block_until_ready(value)
    for _ in range(repeats):
        for b in built.values():
            state = b["state"]
            t0 = time.perf_counter()
            for _ in range(steps):
                *state, value = b["compiled"](*state)
            jax.block_until_ready(value)
            b["times"].append((time.perf_counter() - t0) / steps)
            b["state"] = state
    return [{"case": case, "precision": precision, "level": "default" if level is None else level,
             "compile_s": b["compile_s"], "step_ms_median": 1e3 * statistics.median(b["times"]),
             "step_ms_min": 1e3 * min(b["times"])} for level, b in built.items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="digits,mnist,vgg_small")
    p.add_argument("--precisions", default="f32,bf16")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=RESULTS, help="results path without extension ('' prints only)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    load_before = os.getloadavg()
    record_machine = shared_machine("alternated in one process; compare within a row")
    rows = [r for case in args.cases.split(",") for precision in args.precisions.split(",")
            for r in measure(case, precision, args.steps, args.repeats)]
    lines = [f"`python -m benchmarks.compile_level {' '.join(argv or [])}`".replace(" `", "`")
             + f" at {git_commit()} on {record_machine}; jax {jax.__version__}.", "",
             "Compilation of the SGD training step (persistent cache off) and its step time (median / minimum of "
             f"{args.repeats} alternated runs of {args.steps} steps) at XLA's default CPU optimisation level and at "
             "level 1.", "",
             "| case | precision | compile s (default / 1) | step ms (default / 1) | compile 1 / default | "
             "step 1 / default |", "|---|---|---:|---:|---:|---:|"]
    for a, b in zip(rows[::2], rows[1::2]):
        lines.append(f"| {a['case']} | {a['precision']} | {a['compile_s']:.2f} / {b['compile_s']:.2f} | "
                     f"{a['step_ms_median']:.1f} / {b['step_ms_median']:.1f} | {b['compile_s'] / a['compile_s']:.2f} | "
                     f"{b['step_ms_median'] / a['step_ms_median']:.2f} |")
    record = {"command": "python -m benchmarks.compile_level " + " ".join(argv or []),
              "machine": record_machine, "commit": git_commit(),
              "jax": jax.__version__,
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "rows": rows}
    write_results(args.out, record, lines)
    return record


if __name__ == "__main__":
    main()
