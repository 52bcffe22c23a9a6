"""Cost of the SF criterion against one training epoch (IMP issue target: < 1 %).

Times, on synthetic CIFAR-shaped data with the real jsnn code paths:
  - one training step of the model (median of --steps), extrapolated to an epoch
    of CIFAR's 50,000 training images at --batch;
  - the firing-statistics pass over --calibration-batches batches (eval mode,
    potentials recorded) plus the SF scores for every kernel;
and writes benchmarks/results/criterion_cost.json.

    python benchmarks/criterion_cost.py                      # SNN-VGG-16, batch 32, T = 5
    python benchmarks/criterion_cost.py --model digits_cnn --batch 64   # seconds, for a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

from jsnn import xla_flags
from jsnn.config import TrainConfig
from jsnn.data import ArrayDataset, AugmentConfig
from jsnn.models import build_model
from jsnn.parallel import put_batch
from jsnn.runs.imp import IMPOptions
from jsnn.sparsity.criteria import sf
from jsnn.sparsity.stats import collect_statistics
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables

xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them (jsnn/xla_flags.py)

CIFAR_TRAIN_IMAGES = 50_000


def synthetic_cifar(n: int) -> ArrayDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, n).astype(np.int32)
    return ArrayDataset("synthetic", images, labels, images[:8], labels[:8], 100, (125.0,) * 3, (63.0,) * 3,
                        AugmentConfig(4, True, 0))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vgg16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--calibration-batches", type=int, default=IMPOptions().calibration_batches)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "criterion_cost.json"))
    args = p.parse_args()

    config = TrainConfig(dataset="cifar100", model=args.model, timesteps=args.timesteps, batch_size=args.batch,
                         epochs=1, progress=False).resolve("imp")
    ds = synthetic_cifar(args.batch * max(args.steps + 1, args.calibration_batches))
    model = build_model(config, ds.num_classes)
    trainer = Trainer(config, model, ds)
    rule = MaskedTraining()
    variables = init_variables(model, jax.random.key(0), (1, 32, 32, 3))
    state = trainer.new_state(variables, {}, rule, seed=0)
    train_step = trainer.jitted_steps(rule)[0]

    batch = (*put_batch(trainer.mesh, ds.train_images[:args.batch], ds.train_labels[:args.batch]), trainer.stop_flags())
    t0 = time.perf_counter()
    state, m = train_step(state, *batch)
    jax.block_until_ready(m)
    compile_train = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, m = train_step(state, *batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    epoch_s = step_s * (CIFAR_TRAIN_IMAGES // args.batch)

    collect_statistics(trainer, state, rule, 1)  # compile
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        stats = collect_statistics(trainer, state, rule, args.calibration_batches)
        scores = sf(state.weights, {"bn": state.bn, "batch_stats": state.batch_stats}, stats)
        jax.block_until_ready(scores)
        runs.append(time.perf_counter() - t0)
    criterion_s = statistics.median(runs)
    result = {"model": args.model, "batch": args.batch, "timesteps": args.timesteps, "device": str(jax.devices()[0]),
              "devices": jax.device_count(), "train_step_s_median": step_s, "train_step_s_all": times,
              "train_compile_s": compile_train, "epoch_s_extrapolated": epoch_s,
              "calibration_batches": args.calibration_batches, "criterion_s_median": criterion_s,
              "criterion_s_all": runs, "criterion_fraction_of_epoch": criterion_s / epoch_s}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{args.model} T={args.timesteps} batch {args.batch}: train step {step_s:.3f} s (epoch of "
          f"{CIFAR_TRAIN_IMAGES} images ~ {epoch_s:.0f} s); statistics over {args.calibration_batches} batches "
          f"+ SF scores {criterion_s:.3f} s = {100 * criterion_s / epoch_s:.3f} % of an epoch")


if __name__ == "__main__":
    main()
