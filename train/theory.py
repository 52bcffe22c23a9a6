"""The paper's theory, checked by measurement (paper Sec. 3-4: crisis probability, spike flips, strong LTH).

    python train/theory.py --workdir /tmp/theory            # all three
    python train/theory.py --workdir /tmp/theory crisis     # Eq. 6, Lemma 3.2-3.4, Theorem 3.5
    python train/theory.py --workdir /tmp/theory flips      # does the criterion predict spike flips? (Sec. 6)
    python train/theory.py --workdir /tmp/theory slth       # Lemma 4.1, Theorem 4.3

crisis and flips measure one network: the dense digits SNN trained by jsnn's Trainer
(``--epochs``), trained once in WORKDIR/digits_dense and shared when both run. crisis
perturbs the input current of each spiking layer and counts spike flips against the
crisis probability and its bounds; flips removes sampled weights and measures how
often spike trains change, against the SF score, |w| and SF without its density
factor; slth builds the proof's wide random SNN for random small targets and checks
its masks against the theorem's bounds. Writes NAME.json/NAME.png for each experiment
NAME (jsnn/theory/experiments.py, jsnn/theory/figures.py), each with the command, the
commit and the machine it ran on.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys

import jax
from flags import run_cleanly

from jsnn.theory import experiments


def provenance(argv: list[str]) -> dict:
    """What made the results: the command as typed, the commit of the code (``-dirty`` where tracked
    files differ from it; None outside a git checkout), the machine and its load when the run started."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return {"command": shlex.join(["python", "train/theory.py", *argv]), "commit": commit,
            "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "platform": platform.platform(), "python": platform.python_version(),
                        "jax": f"{jax.__version__} ({jax.default_backend()})",
                        "load_average_at_start": list(os.getloadavg())}}


def main():
    d = experiments.TheoryOptions()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", default="all", choices=["all", *experiments.EXPERIMENTS])
    p.add_argument("--workdir", required=True, help="folder for the JSON results and PNG figures")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", "--flip_epochs", dest="epochs", type=int, default=d.epochs,
                   help="epochs of jsnn's dense digits training (the network crisis and flips measure)")
    g = p.add_argument_group("crisis (experiment 1)")
    g.add_argument("--images", type=int, default=d.images, help="test images whose potentials are measured")
    g.add_argument("--eps", type=float, nargs="+", default=d.eps)
    g.add_argument("--kinds", nargs="+", default=d.kinds, help="perturbations: sign, uniform, constant")
    g.add_argument("--kde_samples", type=int, default=d.kde_samples, help="potentials subsampled for the KDE")
    g = p.add_argument_group("flips (experiment 2)")
    g.add_argument("--flip_images", type=int, default=d.flip_images, help="test images whose spike trains are compared")
    g.add_argument("--flip_weights", type=int, default=d.flip_weights, help="sampled weights (or groups) per layer")
    g.add_argument("--flip_groups", type=int, nargs="+", default=d.flip_groups,
                   help="weights removed together (random, same output channel)")
    g.add_argument("--flip_fractions", type=float, nargs="+", default=d.flip_fractions)
    g.add_argument("--stats_batches", type=int, default=d.stats_batches,
                   help="training batches for SF's firing statistics")
    g.add_argument("--flip_checks", type=int, default=d.flip_checks,
                   help="weights per layer re-measured by re-running the whole masked model")
    g.add_argument("--flip_keep", type=int, default=d.flip_keep, help="sampled (flip rate, scores) kept in the JSON")
    g.add_argument("--bootstrap", type=int, default=d.bootstrap, help="resamples for the SF - |w| correlation interval")
    g.add_argument("--flip_chunk", type=int, default=d.flip_chunk, help="removals simulated at once")
    g = p.add_argument_group("slth (experiment 3)")
    g.add_argument("--width_target", type=int, default=d.width_target, help="N: target layer is N x N")
    g.add_argument("--slth_timesteps", type=int, default=d.slth_timesteps)
    g.add_argument("--u_th", type=float, default=d.u_th, help="threshold u_th < 1 (the proof needs it)")
    g.add_argument("--slth_decay", type=float, default=d.slth_decay)
    g.add_argument("--slth_eps", type=float, nargs="+", default=d.slth_eps)
    g.add_argument("--per_block", type=int, nargs="+", default=d.per_block,
                   help="candidates per weight n; width k = N n")
    g.add_argument("--max_inputs", type=int, default=d.max_inputs,
                   help="enumerate all 2^(N T) binary inputs up to this many, else sample this many")
    g.add_argument("--trials", type=int, default=d.trials, help="random targets (each with its own wide layers)")
    g.add_argument("--delta", type=float, default=d.delta, help="failure probability for the widths")
    args = vars(p.parse_args())
    experiment = args.pop("experiment")
    todo = experiments.EXPERIMENTS if experiment == "all" else (experiment,)
    workdir = args.pop("workdir")
    opts = experiments.TheoryOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    experiments.run(workdir, todo, opts, provenance(sys.argv[1:]))


if __name__ == "__main__":
    run_cleanly(main)
