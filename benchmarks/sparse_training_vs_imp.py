"""RigL at 90 % sparsity on digits against IMP's time to a 90 % ticket (issue 22).

Runs the two documented commands one after the other, each in a fresh workdir, and writes
benchmarks/results/sparse_training_digits.{json,md}:

    python train/sparse_training.py --algorithm rigl --sparsity 0.9 --workdir WORK/rigl90
    python train/imp.py --dataset digits --rounds 9 --prune-rate 0.25 --workdir WORK/imp90

IMP's round 8 is its 90 % ticket (1 - 0.75^8 = 89.99 %), so the IMP run's wall time is its time to that
ticket. Wall time of each whole program (start-up, compilation, training, evaluation, cost report) and
the summed per-epoch training seconds from metrics.jsonl.

    python benchmarks/sparse_training_vs_imp.py            # WORK = /tmp
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import write_results  # noqa: E402
from benchmarks.throughput import machine_info  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "sparse_training_digits")


def commands(work: str) -> dict[str, list[str]]:
    return {
        "rigl": ["train/sparse_training.py", "--algorithm", "rigl", "--sparsity", "0.9", "--workdir",
                 os.path.join(work, "rigl90")],
        "imp": ["train/imp.py", "--dataset", "digits", "--rounds", "9", "--prune-rate", "0.25", "--workdir",
                os.path.join(work, "imp90")],
    }


def timed(argv: list[str]) -> float:
    shutil.rmtree(argv[-1], ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv, "--no-progress"], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def read(workdir: str, name: str):
    with open(os.path.join(workdir, name)) as f:
        return json.load(f) if name.endswith(".json") else [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    cmds = commands(args.workdir)
    rows = {}
    for name, argv_ in cmds.items():
        seconds = timed(argv_)
        results, metrics = read(argv_[-1], "results.json"), read(argv_[-1], "metrics.jsonl")
        config = read(argv_[-1], "config.json")
        entry = results["runs"][-1]
        rows[name] = {
            "command": "python " + " ".join(argv_), "wall_seconds": seconds,
            "train_seconds": sum(r["seconds"] for r in metrics), "epochs_trained": len(metrics),
            "sparsity": entry["sparsity"], "test_accuracy": entry["test_accuracy"], "label": entry["label"],
            "layer_sparsity": entry.get("layer_sparsity"),
            "config": {k: config[k] for k in ("model", "dataset", "epochs", "timesteps", "batch_size", "lr")},
        }
    record = {"machine": machine_info(len(os.sched_getaffinity(0))), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "shared_machine": True, "runs": rows,
              "note": "the machine's 2 cores were shared with other work while this ran: times are indicative"}
    r, i = rows["rigl"], rows["imp"]
    md = ["# RigL at 90 % against IMP's 90 % ticket, digits", "",
          f"{record['machine']['cpu']}, {record['machine']['cores']} cores, shared with other work while it ran "
          f"({record['date']}).", "",
          "| run | command | sparsity | test accuracy | epochs | training s | wall s |",
          "|---|---|---|---|---|---|---|"]
    for name, x in rows.items():
        md.append(f"| {name} | `{x['command']}` | {x['sparsity']:.4f} | {x['test_accuracy']:.4f} | "
                  f"{x['epochs_trained']} | {x['train_seconds']:.0f} | {x['wall_seconds']:.0f} |")
    md += ["", f"RigL reached its 90 % network in {r['wall_seconds'] / i['wall_seconds']:.2f}× IMP's wall time "
               f"({r['epochs_trained']} epochs against {i['epochs_trained']})."]
    write_results(args.out, record, md)


if __name__ == "__main__":
    main()
