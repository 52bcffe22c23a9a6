"""Which convolutions of the programs' train step data parallelism splits: the batch each device's
convolutions and LIF kernel calls run on, read from the compiled step, against the global batch.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu python benchmarks/data_parallel_split.py

writes benchmarks/results/data_parallel_split.{json,md}. digits_cnn, batch 16, at T = 4 and 16, on every
device this process has (a mesh of one device alongside, for reference). A split convolution runs on
T*B / devices images; one that runs on all T*B computes the whole batch on every device.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks.common import git_commit, write_results  # noqa: E402
from jsnn import xla_flags  # noqa: E402
from jsnn.config import TrainConfig  # noqa: E402
from jsnn.data import load_dataset  # noqa: E402
from jsnn.models import build_model  # noqa: E402
from jsnn.parallel import data_mesh, put_batch  # noqa: E402
from jsnn.trainer import Trainer  # noqa: E402
from jsnn.training_rules import MaskedTraining  # noqa: E402
from jsnn.variables import init_variables  # noqa: E402

xla_flags.configure()  # as the programs run (before the backend starts)


def image_batches(text: str, op: str) -> list[int]:
    """The batch each ``op`` in compiled HLO text runs on, in program order: every convolution over images,
    forward or input gradient (its result's leading dimension; the weight gradients, whose results are
    [C_in, 3, 3, C_out] kernels, left out), or each forward call of the LIF kernel (the axis after T)."""
    out = []
    for line in text.splitlines():
        if op == "conv" and "convolution(" in line:
            dims = [int(v) for v in re.search(r"= f32\[([\d,]+)\]", line).group(1).split(",")]
            if dims[1:3] != [3, 3]:
                out.append(dims[0])
        if op == "lif" and 'custom_call_target="jsnn_lif_spikes' in line:
            out.append(int(re.search(r"f32\[\d+,(\d+)", line).group(1)))
    return out


def median_step_seconds(step, state, batch, steps: int) -> float:
    """Median wall time of ``steps`` train steps after two untimed ones (the first compiles)."""
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        state, metrics = step(state, *batch)
        jax.block_until_ready(metrics)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timesteps", default="4,16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=0, help="also time this many train steps (median) on each mesh")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "data_parallel_split"))
    args = p.parse_args(argv)
    ds = load_dataset("digits")
    rule = MaskedTraining()
    rows = []
    for t in (int(v) for v in args.timesteps.split(",")):
        config = TrainConfig(dataset="digits", epochs=1, timesteps=t, batch_size=args.batch).resolve("dense")
        model = build_model(config, ds.num_classes)
        for n in sorted({1, jax.device_count()}):
            trainer = Trainer(config, model, ds, mesh=data_mesh(jax.devices()[:n]))
            state = trainer.new_state(init_variables(model, jax.random.key(0), (1, 8, 8, 1)), {}, rule, seed=0)
            batch = (*put_batch(trainer.mesh, ds.train_images[:args.batch], ds.train_labels[:args.batch]),
                     trainer.stop_flags())
            step = trainer.jitted_steps(rule)[0]
            text = step.lower(state, *batch).compile().as_text()
            rows.append({"timesteps": t, "devices": n, "global_images": t * args.batch,
                         "conv_batches": image_batches(text, "conv"), "lif_batches": image_batches(text, "lif"),
                         "step_s": median_step_seconds(step, state, batch, args.steps) if args.steps else None})
            print(rows[-1], flush=True)
    commit = git_commit()
    md = [f"`XLA_FLAGS=--xla_force_host_platform_device_count=N python benchmarks/data_parallel_split.py "
          f"{' '.join(sys.argv[1:])}` at commit {commit} ({time.strftime('%Y-%m-%d')}, jax {jax.__version__}, "
          f"{jax.device_count()} {jax.default_backend()} devices): digits_cnn's train step at batch {args.batch}, "
          "the batch each convolution over images (forward and input gradient) and each LIF kernel call runs "
          "on, on one device (the encoding convolution runs once on B images, the others on T*B). Step "
          "times: the devices of one process share this machine's cores, so they show work done, not a "
          "multi-device machine's speed.", "",
          "| T | devices | T*B | convolutions' batch | LIF kernel calls' batch | train step ms (median) |",
          "|---|---|---|---|---|---|"]

    def ms(v):
        return "–" if v is None else f"{1e3 * v:.1f}"

    md += [f"| {r['timesteps']} | {r['devices']} | {r['global_images']} | {r['conv_batches']} | "
           f"{r['lif_batches'] or '–'} | {ms(r['step_s'])} |" for r in rows]
    write_results(args.out, {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "commit": commit,
                             "cores": len(os.sched_getaffinity(0)), "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
