"""Where a training step's time goes, operation by operation, from JAX's profiler on this CPU.

    python -m benchmarks.step_profile                                   # the MNIST preset's network, bf16
    python -m benchmarks.step_profile --model digits_cnn --batch 64 --image 8,8,1 --precision f32 --out ''

Compiles ``benchmarks/step_peak.py``'s SGD step, runs it twice, traces ``--steps`` more with
``jax.profiler`` and sums each compiled operation's time (XLA's fusions, convolutions, the AMX kernel's
calls, ``ffi_call.N``) over the traced steps, per step. Each row names the operation, what it computes
(the JAX operation XLA's metadata names, e.g. ``jvp(SpikingVGG)/concatenate``) and its output shape, read
from the compiled program's text, and sets their sum against the step's wall time (the median of untraced
steps). The trace times an operation on the thread that runs it; XLA's own convolutions hand their work to
Eigen's thread pool, outside the traced events, so most of their time is in no row: the gap between the
sum and the wall time. jsnn's AMX kernel calls are timed whole. A map of the step for the next
optimisation, not a figure to compare across machines.
Results: benchmarks/results/step_profile_<model>_<precision>.{json,md}.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

import jax

import jsnn  # noqa: F401  (jsnn's CPU convolution flag before the first computation)
from benchmarks.common import shared_machine, write_results
from benchmarks.step_peak import compiled_step

RESULTS = os.path.join(os.path.dirname(__file__), "results")
# what XLA's thunk executor and JAX's dispatch record around the operations: not operations of the step
_WRAPPERS = ("ThunkExecutor", "block_until_ready", "try_to_block", "PjitFunction", "stop_trace", "start_trace")


def describe(hlo_text: str) -> dict[str, dict]:
    """Operation name -> its output shape and the JAX operation XLA's metadata names, from a compiled program."""
    ops = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.-]+) = (\S+) ", line)
        if m:
            what = re.search(r'op_name="([^"]*)"', line)
            ops[m.group(1)] = {"shape": m.group(2), "op_name": what.group(1) if what else ""}
    return ops


def profile(model: str, precision: str, batch: int, timesteps: int, image: tuple, classes: int, steps: int):
    """(per-operation milliseconds a step, the median wall milliseconds of an untraced step) of the compiled step."""
    step, state, _, _ = compiled_step(model, precision, batch, timesteps, image, classes)
    for _ in range(2):
        *state, loss = step(*state)
        jax.block_until_ready(loss)
    ops = describe(step.as_text())
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        *state, loss = step(*state)
        jax.block_until_ready(loss)
        walls.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        for _ in range(steps):
            *state, loss = step(*state)
            jax.block_until_ready(loss)
        jax.profiler.stop_trace()
        (trace,) = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace) as f:
            events = json.load(f)["traceEvents"]
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not any(w in e["name"] for w in _WRAPPERS):
            total[e["name"]] += e["dur"] / 1000.0 / steps
    rows = [{"operation": name, "ms_per_step": ms, **ops.get(name, {"shape": "", "op_name": ""})}
            for name, ms in total.most_common() if not name.startswith("end: ")]
    return rows, 1000.0 * statistics.median(walls)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dvs_small")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--image", default="28,28,1", help="H,W,C")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", default=None, help="results path without extension ('' prints only)")
    args = p.parse_args(argv)
    image = tuple(int(v) for v in args.image.split(","))
    load_before = os.getloadavg()
    rows, wall_ms = profile(args.model, args.precision, args.batch, args.timesteps, image, args.classes, args.steps)
    listed = sum(r["ms_per_step"] for r in rows)
    lines = [f"{args.model}, {args.precision}, B = {args.batch}, T = {args.timesteps}, {args.image}: a step takes "
             f"{wall_ms:.1f} ms, of which the traced operations {listed:.1f} ms; top {args.top}:", "",
             "| operation | ms a step | of the step | output | JAX operation |", "|---|---:|---:|---|---|"]
    for r in rows[:args.top]:
        lines.append(f"| {r['operation']} | {r['ms_per_step']:.2f} | {r['ms_per_step'] / wall_ms:.0%} | "
                     f"`{r['shape'][:60]}` | `{r['op_name'][-70:]}` |")
    record = {"command": "python -m benchmarks.step_profile " + " ".join(argv or []),
              "machine": shared_machine("one process; shares within a run"), "model": args.model,
              "precision": args.precision, "batch": args.batch, "timesteps": args.timesteps, "image": list(image),
              "steps": args.steps, "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "wall_ms_per_step": wall_ms, "listed_ms_per_step": listed, "rows": rows}
    out = args.out if args.out is not None else os.path.join(RESULTS, f"step_profile_{args.model}_{args.precision}")
    write_results(out, record, lines)
    return record


if __name__ == "__main__":
    main()
