"""Every method on the official MNIST (issue 30 item 6): the documented programs, one at a time, each timed.

The MNIST preset (jsnn/config.py: "dvs_small" = 16C3-P2-32C3-P2-64C3-P2-FC10, T = 4, batch 128, SGD +
cosine, lr 0.1; edge-popup lr 0.3 with non-affine BN), one seed, a short budget (``--epochs``, 2 by
default; IMP and SF-IMP-1: ``--rounds`` rounds of ``--round-epochs`` each) because this runs on a 2-core CPU
shared with other jobs. Runs, in this order (a run cut off by ``--deadline`` is reported as not run):

    dense        python train/dense.py --dataset mnist --epochs E
    edge_popup   python train/edge_popup.py --dataset mnist --sparsity 0.5,0.9 --epochs E
    rigl_90/98   python train/sparse_training.py --dataset mnist --algorithm rigl --sparsity 0.9 --epochs E
    imp          python train/imp.py --dataset mnist --rounds R --epochs E_r --prune-rate 0.6
    sf1          python train/imp.py --dataset mnist --rounds R --epochs E_r --prune-rate 0.6 --criterion sf
    energy       python train/sparse_training.py --dataset mnist --algorithm energy --synops-budget B --epochs E
                 --finetune-epochs 1; B = ``--energy-fraction`` of the dense ticket's measured SynOps per image
    shi          python train/shi.py --dataset mnist --epochs E --finetune-epochs 1   (Shi et al. as published, its
                 digits presets: lambda 1e-6, masks at Adam 1e-2)
    energy_at_shi  the energy run above with B = the shi ticket's measured SynOps per test image: the
                 SynOps-budget variant beside Shi et al. at the same SynOps

Each ticket's SynOps per image and accuracy are its cost pass over the 10,000 test images (the runs'
``efficiency`` entries); wall time is each whole program's (start-up, data, compilation, training, cost
pass). Writes benchmarks/results/mnist_methods.{json,md}.

    python benchmarks/mnist_files.py /tmp/mnist               # the official IDX files
    python benchmarks/mnist_methods.py --data-dir /tmp/mnist --workdir /tmp/mnist_methods
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import git_commit, write_results  # noqa: E402
from benchmarks.throughput import machine_info  # noqa: E402


def runs(args, dense_synops: float | None, shi_synops: float | None = None) -> list[tuple[str, list[str]]]:
    e, re, r = str(args.epochs), str(args.round_epochs), str(args.rounds)
    common = ["--dataset", "mnist", "--data-dir", args.data_dir, "--no-progress", "--no-plots"]
    out = [("dense", ["train/dense.py", "--epochs", e]),
           ("edge_popup", ["train/edge_popup.py", "--sparsity", "0.5,0.9", "--epochs", e]),
           ("rigl_90", ["train/sparse_training.py", "--algorithm", "rigl", "--sparsity", "0.9", "--epochs", e]),
           ("rigl_98", ["train/sparse_training.py", "--algorithm", "rigl", "--sparsity", "0.98", "--epochs", e]),
           ("imp", ["train/imp.py", "--rounds", r, "--epochs", re, "--prune-rate", "0.6"]),
           ("sf1", ["train/imp.py", "--rounds", r, "--epochs", re, "--prune-rate", "0.6", "--criterion", "sf"])]
    if dense_synops is not None:
        budget = f"{args.energy_fraction * dense_synops:.0f}"
        out.append(("energy", ["train/sparse_training.py", "--algorithm", "energy", "--synops-budget", budget,
                               "--epochs", e, "--finetune-epochs", "1"]))
    out.append(("shi", ["train/shi.py", "--epochs", e, "--finetune-epochs", "1"]))
    if shi_synops is not None:
        out.append(("energy_at_shi", ["train/sparse_training.py", "--algorithm", "energy", "--synops-budget",
                                      f"{shi_synops:.0f}", "--epochs", e, "--finetune-epochs", "1"]))
    return [(name, cmd + common + ["--workdir", os.path.join(args.workdir, name)]) for name, cmd in out]


def results_of(workdir: str) -> list[dict]:
    """(label, sparsity, accuracy, SynOps per image, epochs, training seconds) per ticket a run wrote."""
    rows = []
    for folder, _, files in sorted(os.walk(workdir)):
        # a ticket's folder holds its metrics.jsonl (an edge-popup sweep's results.json beside its levels' folders
        # repeats their entries)
        if "results.json" not in files or "metrics.jsonl" not in files or "checkpoints" in folder:
            continue
        with open(os.path.join(folder, "results.json")) as f:
            results = json.load(f)
        with open(os.path.join(folder, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for entry in results["runs"]:
            segment = entry.get("round", 0)
            mine = [x for x in records if x.get("round", 0) == segment]
            eff = entry.get("efficiency") or {}
            rows.append({"run": os.path.relpath(folder, workdir), "label": entry.get("label"),
                         "method_label": entry.get("method_label"), "sparsity": entry["sparsity"],
                         "test_accuracy": entry["test_accuracy"], "synops_per_image": eff.get("synops_per_image"),
                         "macs_per_image": eff.get("macs_per_image"),
                         "unpruned_synops_per_image": eff.get("unpruned_synops_per_image"),
                         "connection_fraction": entry.get("connection_fraction"),
                         "neuron_fraction": entry.get("neuron_fraction"),
                         "penalty_lambda": entry.get("penalty_lambda"), "epochs": len(mine),
                         "train_seconds": sum(float(x["seconds"]) for x in mine),
                         "epoch_test_accuracy": [x.get("test_accuracy") for x in mine]})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--workdir", default="/tmp/mnist_methods")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-epochs", type=int, default=1)
    p.add_argument("--energy-fraction", type=float, default=0.5)
    p.add_argument("--only", default="", help="comma-separated run names (default: all)")
    p.add_argument("--deadline", type=float, default=0.0, help="unix time after which no new run starts")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "mnist_methods"))
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    log_path = os.path.join(args.workdir, "wall.json")
    wall = json.load(open(log_path)) if os.path.exists(log_path) else {}
    only = set(filter(None, args.only.split(",")))
    for name, cmd in runs(args, None) + [("energy", None), ("energy_at_shi", None)]:
        if name in ("energy", "energy_at_shi"):  # their budgets are read from the dense and the shi tickets
            dense = results_of(os.path.join(args.workdir, "dense"))
            if not dense or dense[0]["synops_per_image"] is None:
                continue
            shi = results_of(os.path.join(args.workdir, "shi")) if name == "energy_at_shi" else None
            if name == "energy_at_shi" and (not shi or shi[-1]["synops_per_image"] is None):
                continue
            planned = dict(runs(args, dense[0]["synops_per_image"], shi[-1]["synops_per_image"] if shi else None))
            cmd = planned[name]
        if (only and name not in only) or name in wall:
            continue
        if args.deadline and time.time() > args.deadline:
            print(f"{name}: not started (deadline)", flush=True)
            continue
        print(f"{name}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        env = {**os.environ, "PYTHONPATH": ROOT}  # this checkout's jsnn, whatever is installed
        done = subprocess.run(["nice", "-n", "10", sys.executable, *cmd], cwd=ROOT, env=env)
        if done.returncode == 0:
            wall[name] = {"seconds": time.time() - t0, "command": "python " + " ".join(cmd), "commit": git_commit()}
            with open(log_path, "w") as f:
                json.dump(wall, f, indent=1)
        else:
            print(f"{name}: exit {done.returncode}", flush=True)
    report(args, wall)


def report(args, wall: dict) -> None:
    rows = {name: results_of(os.path.join(args.workdir, name)) for name in wall}
    record = {"setting": {"dataset": "MNIST (official IDX files, rebuilt by benchmarks/mnist_files.py)",
                          "preset": "dvs_small (16C3-P2-32C3-P2-64C3-P2-FC10), T = 4, batch 128, seed 0",
                          "epochs": args.epochs, "imp_rounds": args.rounds, "imp_round_epochs": args.round_epochs,
                          "energy_fraction_of_dense_synops": args.energy_fraction},
              "machine": {**machine_info(threads=2), "note": "shared with other jobs; one run at a time, "
                                                             "nice 10: times are noisy"},
              "wall": wall, "results": rows}
    lines = ["# Every method on MNIST (benchmarks/mnist_methods.py)", "",
             f"MNIST, the official 60k / 10k files; {record['setting']['preset']}; {args.epochs} epochs per run "
             f"(IMP / SF-IMP-1: {args.rounds} rounds of {args.round_epochs}); {record['machine']['cpu']}, "
             f"{record['machine']['cores']} cores, {record['machine']['note']}.", "",
             "| run | ticket | sparsity | test accuracy | SynOps / image | epochs | training s | program wall s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, entries in rows.items():
        for r in entries:
            synops = "—" if r["synops_per_image"] is None else f"{r['synops_per_image']:,.0f}"
            lines.append(f"| {name} | {r['label']} | {100 * r['sparsity']:.1f} % | {100 * r['test_accuracy']:.2f} % "
                         f"| {synops} | {r['epochs']} | {r['train_seconds']:.0f} | {wall[name]['seconds']:.0f} |")
    write_results(args.out, record, lines)


if __name__ == "__main__":
    main()
