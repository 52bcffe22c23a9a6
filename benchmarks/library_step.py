"""A user's own script over jsnn's public layers: training and inference steps, before and after
``import jsnn`` applies jsnn's CPU convolution flag (jsnn/xla_flags.py).

    nice -n 10 python -m benchmarks.library_step            # every variant, each in a fresh process
    python -m benchmarks.library_step --child after         # one variant, printed as JSON

The script is what a user writes (``USER_SCRIPT``: ``import jsnn`` and JAX, a VGG-style SNN from
``jsnn.layers`` with average pooling, B = 32, T = 5, CIFAR-shaped random images, SGD with momentum,
the whole step jitted). Variants, each in its own process (XLA reads XLA_FLAGS once per process):

  before       ``JSNN_KEEP_XLA_FLAGS=1``: no flag, what ``import jsnn`` gave a user before this change
               (YNNPACK's CPU convolutions)
  ynn_custom   as before, with jsnn's hand-written convolution VJP everywhere (``JSNN_CONV_IMPL=custom``):
               the choice a layer could make where the convolution is built, without the flag
  after        plain ``import jsnn``: the flag applied at import (XLA's own convolutions)
  after_bf16   as after, the layers at ``precision="bf16"`` (jsnn/precision.py)

Results: benchmarks/results/library_step.{json,md} (machine and load recorded; compare within one run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "library_step")
VARIANTS = {
    "before": {"JSNN_KEEP_XLA_FLAGS": "1"},
    "ynn_custom": {"JSNN_KEEP_XLA_FLAGS": "1", "JSNN_CONV_IMPL": "custom"},
    "after": {},
    "after_bf16": {"LIBRARY_STEP_PRECISION": "bf16"},
}
BATCH, TIMESTEPS, CLASSES = 32, 5, 10
PLAN = (64, 128, "A", 256, "A", 256, "A")  # vgg_small's plan with average pooling


def user_step_times(steps: int, warmup: int) -> dict:
    """The user's script: builds the network from jsnn's layers and times its jitted steps."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jsnn  # noqa: F401  (before any JAX computation, as a user does)
    from jsnn import xla_flags
    from jsnn.layers import ConvBN, MaskedDense, fold_time, lif_folded
    from jsnn.neuron import LIFConfig

    precision = os.environ.get("LIBRARY_STEP_PRECISION", "f32")

    class UserVGG(nn.Module):
        @nn.compact
        def __call__(self, images, train: bool):
            x = None
            for item in PLAN:
                if item == "A":
                    x = nn.avg_pool(x, (2, 2), (2, 2))
                    continue
                layer = ConvBN(item, input_is_spikes=x is not None, precision=precision)
                if x is None:  # direct encoding: the first conv sees the image once, repeated over T
                    currents = layer(images, train)
                    currents = fold_time(jnp.broadcast_to(currents, (TIMESTEPS,) + currents.shape))
                else:
                    currents = layer(x, train)
                x = lif_folded(currents, TIMESTEPS, LIFConfig(surrogate="rectangle"))
            logits = MaskedDense(CLASSES, precision=precision)(x.reshape(x.shape[0], -1))
            return logits.reshape(TIMESTEPS, -1, CLASSES)

    model = UserVGG()
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((BATCH, 32, 32, 3), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, CLASSES, BATCH))
    variables = model.init(jax.random.PRNGKey(0), images, train=False)
    trained = {k: variables[k] for k in ("weights", "bn")}
    fixed = {k: v for k, v in variables.items() if k not in trained}
    opt = optax.sgd(0.1, momentum=0.9)

    def loss_fn(params, fixed, images, labels):
        logits, updates = model.apply({**params, **fixed}, images, train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels[None]).mean()
        return loss, updates

    @jax.jit
    def train_step(params, opt_state, fixed, images, labels):
        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, fixed, images, labels)
        changes, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), opt_state, {**fixed, **updates}, loss

    @jax.jit
    def infer_step(params, fixed, images):
        return jnp.argmax(model.apply({**params, **fixed}, images, train=False).mean(0), -1)

    def timed(fn):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        first = time.perf_counter() - t0
        for _ in range(warmup):
            jax.block_until_ready(fn())
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
        return first, float(np.median(times))

    state = [trained, opt.init(trained), fixed]

    def one_train_step():
        state[0], state[1], state[2], loss = train_step(state[0], state[1], state[2], images, labels)
        return loss

    train_first, train_s = timed(one_train_step)
    infer_first, infer_s = timed(lambda: infer_step(state[0], state[2], images))
    flags = os.environ.get("XLA_FLAGS", "")
    return {"xla_flags": flags, "precision": precision,  # which library the flag gives: tests/test_xla_flags.py
            "conv_library": "XLA (Eigen)" if xla_flags.CPU_CONV_FLAG in flags else "YNNPACK",
            "train_first_step_s": train_first, "train_step_s": train_s, "train_images_per_s": BATCH / train_s,
            "infer_first_step_s": infer_first, "infer_step_s": infer_s, "infer_images_per_s": BATCH / infer_s}


def run_variant(name: str, steps: int, warmup: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JSNN_KEEP_XLA_FLAGS", "JSNN_CONV_IMPL")}
    env.update(VARIANTS[name], PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "benchmarks.library_step", "--child", name, "--steps", str(steps),
                          "--warmup", str(warmup)], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{out.stderr[-2000:]}")
    return {"variant": name, "env": VARIANTS[name], **json.loads(out.stdout.strip().splitlines()[-1])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", choices=sorted(VARIANTS), help="run one variant in this process, print JSON")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=RESULTS, help="results path without extension ('' writes nothing)")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(user_step_times(args.steps, args.warmup)))
        return None
    load_before = os.getloadavg()
    rows = [run_variant(name, args.steps, args.warmup) for name in args.variants.split(",")]
    base = next((r for r in rows if r["variant"] == "before"), rows[0])
    for r in rows:
        r["train_speedup_vs_before"] = base["train_step_s"] / r["train_step_s"]
        r["infer_speedup_vs_before"] = base["infer_step_s"] / r["infer_step_s"]
    lines = ["| variant | convolutions | train img/s | infer img/s | train × before | infer × before |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['conv_library']} | {r['train_images_per_s']:.1f} | "
              f"{r['infer_images_per_s']:.1f} | {r['train_speedup_vs_before']:.2f} | "
              f"{r['infer_speedup_vs_before']:.2f} |" for r in rows]
    from benchmarks.common import shared_machine, write_results

    record = {"what": f"a user's VGG-style SNN from jsnn's layers (plan {PLAN}, average pooling), B = {BATCH}, "
                      f"T = {TIMESTEPS}, 32x32x3; median of {args.steps} steps after {args.warmup} untimed, each "
                      "variant in a fresh process",
              "machine": shared_machine("compare variants within this run"),
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "rows": rows}
    write_results(args.out, record, lines)
    return record


if __name__ == "__main__":
    main()
