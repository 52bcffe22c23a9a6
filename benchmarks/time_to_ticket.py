"""Time to ticket: where the wall time of a whole IMP run goes.

    python benchmarks/time_to_ticket.py                       # digits, 3 rounds x 8 epochs
    python benchmarks/time_to_ticket.py --model vgg_small     # the small SNN-VGG on CIFAR-shaped random data

Runs the IMP program's own code (``jsnn.runs.imp.run``) in a child process three times: with JAX's
persistent compilation cache off, with an empty cache (cold) and with the cache the cold run
filled (warm: what a rerun or a resume after preemption sees). Each child reports, exclusive of
each other: start-up (interpreter and imports, until the program's first line), data and set-up,
compilation (JAX's tracing, lowering and backend compile events, wherever they happen, and how
many happen after round 0: recompilation across rounds), training steps, evaluation, firing
statistics + scoring + pruning (and early-bird's end-of-epoch work), checkpoint writes, tickets +
their cost report, results + plots, each timed from the run's phase events (``RunHooks``); the test
evaluations inside training count as training steps.
Writes benchmarks/results/time_to_ticket_<model>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("start-up (interpreter, imports)", "data and set-up", "compilation", "training steps", "evaluation",
          "statistics, scoring, pruning", "checkpoint writes", "tickets and cost reports", "results and plots")


# the run's phases (jsnn.runs.outputs) as this table groups them
PHASE_OF = {"prepare": "data and set-up", "train": "training steps", "batch": "training steps",
            "epoch_end": "statistics, scoring, pruning", "prune": "statistics, scoring, pruning",
            "checkpoint": "checkpoint writes", "evaluate": "evaluation", "ticket": "tickets and cost reports",
            "cost_report": "tickets and cost reports", "results": "results and plots", "plots": "results and plots"}


class PhaseClock:
    """Exclusive wall time per phase from the run's own phase events (``RunHooks``): the time from
    one event to the next goes to the phase the first one entered, less compilation, which JAX's
    monitoring events report wherever it happens."""

    def __init__(self):
        self.seconds = {p: 0.0 for p in PHASES}
        self.compiles: list[tuple[str, float]] = []
        self.label = "set-up"
        self.current, self.since, self.compiling = "data and set-up", time.perf_counter(), 0.0

    def on_phase(self, name: str, where: dict) -> None:
        now = time.perf_counter()
        self.seconds[self.current] += now - self.since - self.compiling
        self.current, self.since, self.compiling = PHASE_OF[name], now, 0.0
        if name == "train":
            self.label = f"round {where['segment']}"

    def stop(self) -> None:
        self.on_phase("results", {})

    def on_compile_event(self, event, seconds, **_):
        if event in ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration",
                     "/jax/core/compile/jaxpr_to_mlir_module_duration"):
            self.seconds["compilation"] += seconds
            self.compiling += seconds  # taken out of the phase it happened in
            if event == "/jax/core/compile/backend_compile_duration":
                self.compiles.append((self.label, seconds))


def child(args) -> dict:

    import jax
    import numpy as np

    from jsnn import data as jdata
    from jsnn import xla_flags
    from jsnn.compilation_cache import enable_compilation_cache
    from jsnn.config import TrainConfig
    from jsnn.data.datasets import CIFAR_AUGMENT
    from jsnn.models import build_model
    from jsnn.runs import imp
    from jsnn.runs.outputs import RunHooks
    from jsnn.trainer import Trainer

    xla_flags.configure()  # as the programs do, before JAX starts
    enable_compilation_cache({"JSNN_COMPILATION_CACHE": args.cache})  # as the programs do
    start_up = time.time() - float(os.environ["TIME_TO_TICKET_T0"])  # the interpreter, JAX and jsnn imported
    clock = PhaseClock()
    clock.seconds[PHASES[0]] = start_up
    jax.monitoring.register_event_duration_secs_listener(clock.on_compile_event)

    t0 = time.perf_counter()
    if args.model == "digits_cnn":
        dataset_name = "digits"
        dataset = jdata.load_dataset("digits")
    else:  # CIFAR-shaped random data: the program's path without the download
        dataset_name = "cifar10"
        rng = np.random.default_rng(0)
        n_train, n_test = args.images, max(args.images // 5, args.batch_size)
        dataset = jdata.ArrayDataset(
            name="cifar10", train_images=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
            train_labels=rng.integers(0, 10, n_train).astype(np.int32),
            test_images=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
            test_labels=rng.integers(0, 10, n_test).astype(np.int32), num_classes=10,
            mean=(127.5,) * 3, std=(73.9,) * 3, augment=CIFAR_AUGMENT)
    config = TrainConfig(dataset=dataset_name, model=args.model, epochs=args.epochs, timesteps=args.timesteps,
                         batch_size=args.batch_size, progress=False).resolve("imp")
    trainer = Trainer(config, build_model(config, dataset.num_classes), dataset)
    options = imp.IMPOptions(rounds=args.rounds, criterion=args.criterion)
    imp.run(config, options, tempfile.mkdtemp(), trainer=trainer, hooks=RunHooks(on_phase=clock.on_phase))
    clock.stop()
    total = time.perf_counter() - t0 + start_up
    after_round0 = [s for label, s in clock.compiles if label not in ("set-up", "round 0")]
    return {"seconds": clock.seconds, "total_seconds": total, "compilations": len(clock.compiles),
            "compilations_after_round_0": len(after_round0), "compile_seconds_after_round_0": sum(after_round0),
            "images_trained": args.rounds * args.epochs * trainer.steps_per_epoch * config.batch_size,
            "devices": jax.device_count(), "config": config.to_dict()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits_cnn", choices=["digits_cnn", "vgg_small"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="per round (digits 8, vgg_small 1)")
    p.add_argument("--timesteps", type=int, default=None, help="digits 4, vgg_small 5")
    p.add_argument("--batch-size", type=int, default=None, help="digits 64, vgg_small 32")
    p.add_argument("--images", type=int, default=640, help="training images of the random CIFAR-shaped set")
    p.add_argument("--criterion", default="sf")
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    small = args.model == "digits_cnn"
    args.epochs = args.epochs or (8 if small else 1)
    args.timesteps = args.timesteps or (4 if small else 5)
    args.batch_size = args.batch_size or (64 if small else 32)
    if args.model == "digits_cnn" and args.images != 640:
        p.error("--images is for the random CIFAR-shaped set (vgg_small)")
    if args.child:
        print(json.dumps(child(args)))
        return

    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, cache_arg in (("no cache", "off"), ("cache, cold", cache), ("cache, warm", cache)):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--cache", cache_arg] + [
                a for a in sys.argv[1:] if a != "--child"]
            env = {**os.environ, "PYTHONPATH": ROOT, "TIME_TO_TICKET_T0": repr(time.time())}
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{name}: {out.stderr[-3000:]}")
            runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name}: {runs[name]['total_seconds']:.1f} s", flush=True)

    path = args.out or os.path.join(ROOT, "benchmarks", "results", f"time_to_ticket_{args.model}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".json", "w") as f:
        json.dump({"command": " ".join(["python benchmarks/time_to_ticket.py"] + sys.argv[1:]), "runs": runs},
                  f, indent=2)
    names = list(runs)
    lines = [f"| phase | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for phase in PHASES:
        lines.append(f"| {phase} | " + " | ".join(f"{runs[n]['seconds'][phase]:.1f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{runs[n]['total_seconds']:.1f}**" for n in names) + " |")
    lines.append("| compilations (after round 0) | " + " | ".join(
        f"{runs[n]['compilations']} ({runs[n]['compilations_after_round_0']})" for n in names) + " |")
    r = runs[names[0]]
    head = (f"Time to ticket, seconds: IMP ({args.criterion}), {args.model}, {args.rounds} rounds x {args.epochs} "
            f"epochs, T = {args.timesteps}, batch {args.batch_size}, {r['images_trained']} training images in all, "
            f"{r['devices']} device(s)\n\n")
    with open(path + ".md", "w") as f:
        f.write(head + "\n".join(lines) + "\n")
    print(head + "\n".join(lines))


if __name__ == "__main__":
    main()
