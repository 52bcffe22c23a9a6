"""Does writing checkpoints in the background shorten a run on this CPU?

    python benchmarks/checkpoint_overlap.py [--pairs 3]

Runs ``benchmarks/time_to_ticket.py``'s child (the IMP program's code, digits, 3 rounds x 8 epochs: 26
checkpoint writes, one each epoch and one after each pruning) with a warm compilation cache, alternating
checkpoints written in the background (``Checkpointer(background=True)``: a save returns once the state is
on the host, orbax writes while training goes on) and waited for (``background=False``), ``--pairs`` times.
Reports each run's total and its rows "training steps" and "checkpoint writes" (the time the loop spent in
``save``, including a wait for the write before), and the medians. ``jsnn.checkpoint.Checkpointer`` takes
the background only off the CPU backend because of this file:
benchmarks/results/checkpoint_overlap.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import git_commit, shared_machine, write_results  # noqa: E402

ROWS = ("training steps", "checkpoint writes")


def child(cache: str, checkpoints: str) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "time_to_ticket.py"), "--child", "--cache", cache,
           "--criterion", "magnitude", "--checkpoints", checkpoints]
    env = {**os.environ, "PYTHONPATH": ROOT, "TIME_TO_TICKET_T0": repr(time.time())}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{checkpoints}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "checkpoint_overlap"))
    args = p.parse_args()
    runs = {"background": [], "wait": []}
    with tempfile.TemporaryDirectory() as cache:
        child(cache, "wait")  # fills the compilation cache: every timed run is warm
        for i in range(args.pairs):
            for how in runs:
                r = child(cache, how)
                runs[how].append({"total_s": r["total_seconds"], **{row: r["seconds"][row] for row in ROWS},
                                  "checkpoint_writes": r["checkpoint_writes"]})
                print(f"pair {i + 1} {how}: {r['total_seconds']:.2f} s", flush=True)
    median = {how: {k: statistics.median(run[k] for run in rs) for k in ("total_s",) + ROWS}
              for how, rs in runs.items()}
    record = {"command": " ".join(["python benchmarks/checkpoint_overlap.py"] + sys.argv[1:]),
              "commit": git_commit(), "machine": shared_machine("compare the two columns of one pair"),
              "runs": runs, "median": median}
    lines = [f"Checkpoint writes in the background or waited for: IMP on digits (3 rounds x 8 epochs, "
             f"{runs['wait'][0]['checkpoint_writes']} writes), warm compilation cache, {args.pairs} pairs "
             f"alternated, seconds. {record['machine']}; commit {record['commit']}.", "",
             "| pair | background: total | training steps | checkpoint writes | waited: total | training steps "
             "| checkpoint writes |", "|---|---:|---:|---:|---:|---:|---:|"]
    for i, (b, w) in enumerate(zip(runs["background"], runs["wait"])):
        lines.append(f"| {i + 1} | " + " | ".join(f"{r[k]:.2f}" for r in (b, w) for k in ("total_s",) + ROWS) + " |")
    lines.append("| median | " + " | ".join(f"{median[h][k]:.2f}" for h in runs for k in ("total_s",) + ROWS) + " |")
    write_results(args.out, record, lines)


if __name__ == "__main__":
    main()
