"""What returning freed memory to the system (jsnn/host_memory.py) saves a first run, and what it costs.

    python benchmarks/freed_memory.py [--pairs 3]

Runs ``train/imp.py --dataset digits --rounds 3`` as a user does, each in a fresh workdir with an empty
compilation cache, alternating with and without ``JSNN_KEEP_FREED_MEMORY=1`` (which turns the release
off), so both see the machine in the same state. For each run: wall time, CPU time and peak RSS of the
child alone (``os.wait4``). Writes benchmarks/results/freed_memory.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: benchmarks.* from the checkout
from benchmarks.common import git_commit, shared_machine, write_results  # noqa: E402
from benchmarks.time_to_ticket import test_accuracies, timed_child  # noqa: E402

VARIANTS = {"freed memory returned (default)": {}, "kept (JSNN_KEEP_FREED_MEMORY=1)": {"JSNN_KEEP_FREED_MEMORY": "1"}}
KEYS = ("wall_s", "cpu_s", "peak_mib")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "freed_memory"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    runs = {name: [] for name in VARIANTS}
    for pair in range(args.pairs):
        order = list(VARIANTS) if pair % 2 == 0 else list(VARIANTS)[::-1]  # neither always first
        for name in order:
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as work:
                env = {k: v for k, v in os.environ.items() if k != "JSNN_KEEP_FREED_MEMORY"}
                env.update(PYTHONPATH=ROOT, JSNN_COMPILATION_CACHE=cache, **VARIANTS[name])
                out = timed_child([sys.executable, "train/imp.py", "--dataset", "digits", "--rounds", str(args.rounds),
                                   "--workdir", os.path.join(work, "w")], env)
            runs[name].append({**{k: out[k] for k in KEYS}, "test_accuracy": test_accuracies(out["output"])})
            print(f"pair {pair}: {name}: " + ", ".join(f"{k} {out[k]:.1f}" for k in KEYS), flush=True)
    load_after = os.getloadavg()
    median = {name: {k: statistics.median(r[k] for r in rs) for k in KEYS} for name, rs in runs.items()}
    on, off = (median[name] for name in VARIANTS)
    record = {"command": " ".join(["python benchmarks/freed_memory.py"] + argv),
              "commit": git_commit(), "machine": shared_machine("the variants alternate, so both see the same load"),
              "load_average_before": load_before, "load_average_after": load_after, "pairs": args.pairs,
              "rounds": args.rounds, "runs": runs, "median": median,
              "ratio_returned_to_kept": {k: on[k] / off[k] for k in KEYS}}
    lines = [f"`{record['command']}` at commit {record['commit']}: `train/imp.py --dataset digits --rounds "
             f"{args.rounds}`, first runs (empty compilation cache, fresh workdir), the two variants alternating, "
             f"median of {args.pairs} each; {record['machine']}; 1-minute load average {load_before[0]:.1f} before, "
             f"{load_after[0]:.1f} after.", "",
             "| variant | wall s | CPU s | peak MiB | peak MiB, each run |", "|---|---:|---:|---:|---|"]
    for name, m in median.items():
        each = ", ".join(f"{r['peak_mib']:.0f}" for r in runs[name])
        lines.append(f"| {name} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['peak_mib']:.0f} | {each} |")
    write_results(args.out, record, lines)


if __name__ == "__main__":
    main()
