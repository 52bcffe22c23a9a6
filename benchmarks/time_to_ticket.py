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
their cost report, results + plots, each timed from the run's phase events (``RunHooks``); each epoch's
test evaluation counts as evaluation and its SynOps count (a run with a cost report logs one per evaluated
epoch) as a row of its own, timed around the trainer's two methods.
Writes benchmarks/results/time_to_ticket_<model>.{json,md}.

    python benchmarks/time_to_ticket.py --paired [--pairs 3]   # digits: jsnn's program against an eager script

``--paired`` times what a user runs, each in its own child process, one after another per
pair: ``train/imp.py --dataset digits --rounds R`` in a fresh workdir with an empty compilation cache
(first run), again with the cache that run filled (warm), and the same IMP written the way an snnTorch
user would (benchmarks/peers/snntorch_imp.py: eager PyTorch, same net, budget and schedule). For
each: wall time, CPU time (user + system, the child's own rusage from ``os.wait4``) and peak RSS; the
medians over the pairs, the ratios jsnn / script and the phase breakdown above (cold and warm, the program's
criterion). Writes benchmarks/results/time_to_ticket_digits.{json,md}, with the load average: on a shared
machine the numbers are noisy.

    python benchmarks/time_to_ticket.py --paired --model dvs_small --data-dir DIR --rounds 3 --epochs 1

does the same on MNIST (jsnn's MNIST network and preset; the official files in DIR, which
benchmarks/mnist_files.py writes), where training, not compilation, dominates:
benchmarks/results/time_to_ticket_mnist.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: benchmarks.common from the checkout
from benchmarks.common import git_commit  # noqa: E402

# the rows of the wall-time breakdown (each groups some of the run's phases, PHASE_OF)
TIME_ROWS = ("start-up (interpreter, imports)", "data and set-up", "compilation", "training steps", "evaluation",
             "SynOps each epoch", "statistics, scoring, pruning", "checkpoint writes", "tickets and cost reports",
             "results and plots")


# the run's phases (jsnn.runs.outputs) as this table groups them
PHASE_OF = {"prepare": "data and set-up", "train": "training steps", "batch": "training steps",
            "epoch_end": "statistics, scoring, pruning", "prune": "statistics, scoring, pruning",
            "checkpoint": "checkpoint writes", "evaluate": "evaluation", "ticket": "tickets and cost reports",
            "cost_report": "tickets and cost reports", "results": "results and plots", "plots": "results and plots"}


DATASET_OF = {"digits_cnn": "digits", "dvs_small": "mnist"}  # --paired: the networks the script has


class PhaseClock:
    """Exclusive wall time per phase from the run's own phase events (``RunHooks``): the time from
    one event to the next goes to the phase the first one entered, less compilation, which JAX's
    monitoring events report wherever it happens."""

    def __init__(self):
        self.seconds = {p: 0.0 for p in TIME_ROWS}
        self.compiles: list[tuple[str, float]] = []
        self.label = "set-up"
        self.current, self.since, self.compiling = "data and set-up", time.perf_counter(), 0.0
        self.checkpoint_writes = 0

    def on_phase(self, name: str, where: dict) -> None:
        self.enter(PHASE_OF[name])
        if name == "train":
            self.label = f"round {where['segment']}"
        if name == "checkpoint":
            self.checkpoint_writes += 1

    def enter(self, row: str) -> None:
        now = time.perf_counter()
        self.seconds[self.current] += now - self.since - self.compiling
        self.current, self.since, self.compiling = row, now, 0.0

    def timing(self, method, row: str):
        """``method`` with its time given to ``row`` (and back to the phase it was called in)."""
        def timed(*args, **kwargs):
            previous = self.current
            self.enter(row)
            try:
                return method(*args, **kwargs)
            finally:
                self.enter(previous)
        return timed

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
    from jsnn.host_memory import release_after_each_compile
    from jsnn.models import build_model
    from jsnn.runs import imp
    from jsnn.runs.outputs import RunHooks
    from jsnn.trainer import Trainer

    if args.checkpoints != "auto":  # benchmarks/checkpoint_overlap.py: writes in the background or waited for
        import functools

        from jsnn import checkpoint
        checkpoint.Checkpointer.__init__ = functools.partialmethod(checkpoint.Checkpointer.__init__,
                                                                   background=args.checkpoints == "background")
    xla_flags.configure()  # as the programs do, before JAX starts
    enable_compilation_cache({"JSNN_COMPILATION_CACHE": args.cache})  # as the programs do
    release_after_each_compile()  # as the programs do
    start_up = time.time() - float(os.environ["TIME_TO_TICKET_T0"])  # the interpreter, JAX and jsnn imported
    clock = PhaseClock()
    clock.seconds[TIME_ROWS[0]] = start_up
    jax.monitoring.register_event_duration_secs_listener(clock.on_compile_event)

    t0 = time.perf_counter()
    if args.model == "digits_cnn":
        dataset_name = "digits"
        dataset = jdata.load_dataset("digits")
    elif args.model == "dvs_small":
        dataset_name = "mnist"
        dataset = jdata.load_dataset("mnist", data_dir=args.data_dir)
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
    # the epoch-end work inside training, out of the training steps' row
    trainer.evaluate = clock.timing(trainer.evaluate, "evaluation")
    trainer.synops_per_image = clock.timing(trainer.synops_per_image, "SynOps each epoch")
    options = imp.IMPOptions(rounds=args.rounds, criterion=args.criterion)
    imp.run(config, options, tempfile.mkdtemp(), trainer=trainer, hooks=RunHooks(on_phase=clock.on_phase))
    clock.stop()
    total = time.perf_counter() - t0 + start_up
    after_round0 = [s for label, s in clock.compiles if label not in ("set-up", "round 0")]
    return {"seconds": clock.seconds, "total_seconds": total, "compilations": len(clock.compiles),
            "checkpoint_writes": clock.checkpoint_writes,
            "compilations_after_round_0": len(after_round0), "compile_seconds_after_round_0": sum(after_round0),
            "images_trained": args.rounds * args.epochs * trainer.steps_per_epoch * config.batch_size,
            "devices": jax.device_count(), "config": config.to_dict()}


def timed_child(cmd: list[str], env: dict, cwd: str = ROOT) -> dict:
    """Runs ``cmd`` in ``cwd`` to its end: wall seconds, CPU seconds (user + system) and peak RSS (MiB) of that
    child alone (``os.wait4``'s rusage, which ``resource.getrusage(RUSAGE_CHILDREN)`` sums over all children),
    and its output."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
            "output": text}


def test_accuracies(text: str) -> list[float]:
    """Each round's test accuracy from the program's log ("round 1: sparsity 0.25 test accuracy 0.98") or the
    script's lines ("round 1: test accuracy 0.98, ...")."""
    return [float(a) for a in re.findall(r"test accuracy ([0-9.]+)", text)]


def amx_kernel_build_seconds() -> float | None:
    """Seconds to compile jsnn's bf16 convolution kernel (the AMX or the AVX512-BF16 build, whichever this CPU
    runs) from its source (into a fresh folder), or None where it does not apply. bf16 runs load it from the
    per-user kernel cache (``jsnn/native.py``), built by the first run on a machine: the paired runs' "first
    run" empties JAX's compilation cache, not that one."""
    from jsnn import conv_kernel

    variant = conv_kernel.cpu_variant()
    if variant is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        conv_kernel.build(folder, variant)
        return time.perf_counter() - t0


def paired(args, argv: list[str]) -> None:
    py = sys.executable
    dataset = DATASET_OF[args.model]
    # the digits run is the program's preset as a user types it; MNIST's names its epochs (a few, on this CPU)
    data = (["--data-dir", args.data_dir, "--epochs", str(args.epochs)] if dataset == "mnist" else [])
    load_before = os.getloadavg()
    runs = [("jsnn, first run (cache empty)", "cold", []), ("jsnn, cache warm", "warm", [])]
    if args.bf16:  # the same program under --precision bf16, its own cache
        runs += [("jsnn bf16, first run (cache empty)", "bf16_cold", ["--precision", "bf16"]),
                 ("jsnn bf16, cache warm", "bf16_warm", ["--precision", "bf16"])]
    samples = {name: [] for name, _, _ in runs} | {"script": []}
    env = {**os.environ, "PYTHONPATH": ROOT}
    for pair in range(args.pairs):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as work:
            for name, workdir, precision in runs:
                # f32 and bf16 each fill their own cache: "first run" starts from an empty one
                folder = os.path.join(cache, "bf16" if precision else "f32")
                os.makedirs(folder, exist_ok=True)
                env_cache = {**env, "JSNN_COMPILATION_CACHE": folder}
                cmd = [py, "train/imp.py", "--dataset", dataset, "--rounds", str(args.rounds), *data, *precision,
                       "--workdir", os.path.join(work, workdir)]
                samples[name].append(timed_child(cmd, env_cache))
            script = [py, "benchmarks/peers/snntorch_imp.py", "--dataset", dataset, "--rounds", str(args.rounds), *data]
            samples["script"].append(timed_child(script, env))
        print(f"pair {pair}: " + ", ".join(f"{n} {v[-1]['wall_s']:.1f} s" for n, v in samples.items()), flush=True)
    load_after = os.getloadavg()
    kernel_build_s = amx_kernel_build_seconds() if args.bf16 else None

    # the phase breakdown: the program's code in a child with the phase clock, cold then warm
    breakdown = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in ("cache, cold", "cache, warm"):
            cmd = [py, os.path.abspath(__file__), "--child", "--cache", cache, "--criterion", args.criterion,
                   "--rounds", str(args.rounds), "--model", args.model, "--epochs", str(args.epochs)]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            out = subprocess.run(cmd, cwd=ROOT, env={**env, "TIME_TO_TICKET_T0": repr(time.time())},
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{name}: {out.stderr[-3000:]}")
            breakdown[name] = json.loads(out.stdout.strip().splitlines()[-1])

    med = {n: {k: statistics.median(s[k] for s in v) for k in ("wall_s", "cpu_s", "peak_mib")}
           for n, v in samples.items()}
    script = med["script"]
    ratios = {n: {k: m[k] / script[k] for k in m} for n, m in med.items() if n != "script"}
    accuracy = {n: [test_accuracies(s["output"]) for s in v]
                for n, v in samples.items()}
    path = args.out or os.path.join(ROOT, "benchmarks", "results", f"time_to_ticket_{dataset}")
    machine = f"{os.cpu_count()}-core CPU shared with other jobs"
    record = {"command": " ".join(["python benchmarks/time_to_ticket.py"] + argv), "commit": git_commit(),
              "machine": machine, "load_average_before": load_before, "load_average_after": load_after,
              "pairs": args.pairs, "rounds": args.rounds,
              "runs": {n: [{k: s[k] for k in ("wall_s", "cpu_s", "peak_mib")} for s in v] for n, v in samples.items()},
              "median": med, "ratio_to_script": ratios, "test_accuracy_per_round": accuracy,
              "breakdown": breakdown, "amx_kernel_build_s": kernel_build_s}
    with open(path + ".json", "w") as f:
        json.dump(record, f, indent=2)
    lines = ["| | wall s | CPU s | peak MiB | wall / script | CPU / script | peak / script |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for n, m in med.items():
        r = ratios.get(n, {"wall_s": 1.0, "cpu_s": 1.0, "peak_mib": 1.0})
        walls = [s["wall_s"] for s in samples[n]]
        spread = f"{min(walls):.1f}–{max(walls):.1f}"
        lines.append(f"| {n} | {m['wall_s']:.1f} ({spread}) | {m['cpu_s']:.1f} | {m['peak_mib']:.0f} | "
                     f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_mib']:.2f} |")
    names = list(breakdown)
    lines += ["", f"Phase breakdown (the program's code with a phase clock, criterion {args.criterion}), seconds:", "",
              f"| phase | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for phase in TIME_ROWS:
        lines.append(f"| {phase} | " + " | ".join(f"{breakdown[n]['seconds'][phase]:.1f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{breakdown[n]['total_seconds']:.1f}**" for n in names) + " |")
    lines.append("| compilations (after round 0) | " + " | ".join(
        f"{breakdown[n]['compilations']} ({breakdown[n]['compilations_after_round_0']})" for n in names) + " |")
    acc = "; ".join(f"{n}: " + ", ".join(f"{a:.3f}" for a in accuracy[n][0]) for n in accuracy)
    head = (f"Time to a {dataset} ticket: `train/imp.py --dataset {dataset} --rounds {args.rounds}{' ' if data else ''}"
            f"{' '.join(data).replace(str(args.data_dir), 'DIR')}` (fresh workdir) against "
            f"`benchmarks/peers/snntorch_imp.py --dataset {dataset}`, median of {args.pairs} pair(s) run one after "
            f"another (wall "
            f"min–max in brackets), {machine}, load average {load_before[0]:.1f} before and {load_after[0]:.1f} "
            f"after: noisy numbers. Test accuracy per round (first pair): {acc}.\n\n")
    with open(path + ".md", "w") as f:
        f.write(head + "\n".join(lines) + "\n")
    print(head + "\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits_cnn", choices=["digits_cnn", "dvs_small", "vgg_small"],
                   help="digits_cnn: digits; dvs_small: MNIST (--data-dir); vgg_small: CIFAR-shaped random data")
    p.add_argument("--data-dir", default=None, help="dvs_small: the folder holding MNIST's IDX files")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="per round (digits 8, dvs_small and vgg_small 1)")
    p.add_argument("--timesteps", type=int, default=None, help="digits 4, vgg_small 5")
    p.add_argument("--batch-size", type=int, default=None, help="digits 64, vgg_small 32")
    p.add_argument("--images", type=int, default=640, help="training images of the random CIFAR-shaped set")
    p.add_argument("--criterion", default=None, help="IMP's criterion (--paired: magnitude, the program's; else sf)")
    p.add_argument("--paired", action="store_true",
                   help="the program, cold and warm, against the script (digits_cnn, dvs_small)")
    p.add_argument("--pairs", type=int, default=3, help="--paired: how many (cold, warm, script) triples")
    p.add_argument("--bf16", action="store_true", help="--paired: also the program at --precision bf16, cold and warm")
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoints", default="auto", choices=["auto", "background", "wait"], help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    small = args.model == "digits_cnn"
    args.epochs = args.epochs or (8 if small else 1)
    args.timesteps = args.timesteps or (5 if args.model == "vgg_small" else 4)
    args.batch_size = args.batch_size or {"digits_cnn": 64, "dvs_small": 128, "vgg_small": 32}[args.model]
    if args.model == "dvs_small" and not args.data_dir:
        p.error("--model dvs_small trains on MNIST: give --data-dir (python benchmarks/mnist_files.py DIR)")
    if args.model == "digits_cnn" and args.images != 640:
        p.error("--images is for the random CIFAR-shaped set (vgg_small)")
    args.criterion = args.criterion or ("magnitude" if args.paired else "sf")
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.paired:
        if args.model not in DATASET_OF:
            p.error("--paired is for digits_cnn (digits) and dvs_small (MNIST), the script's networks")
        paired(args, sys.argv[1:])
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
    for phase in TIME_ROWS:
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
