"""The SynOps-budget variant of Shi et al.'s (2024) mask learning (issue 22 item 2) on digits: the documented
command at two SynOps budgets, beside the dense network trained by the same preset, and each ticket's NIR
export without its removed channels checked in snnTorch. Writes benchmarks/results/energy_digits.{json,md}.

    python train/dense.py --dataset digits --workdir WORK/dense
    python train/sparse_training.py --algorithm energy --synops-budget N --workdir WORK/energy_N
    python train/export.py --workdir WORK/energy_N --drop-removed-channels --check jsnn,snntorch

SynOps per image are the cost report's (jsnn.efficiency, on the 360 test images); the budget holds for the
run's own count on the training images (its final entry's ``synops_per_image`` and ``within_budget``, also
recorded), so the test images' count can differ a little. Wall time is each whole program's (start-up,
compilation, training, the budget cut, evaluation, the cost report).

    python benchmarks/energy_digits.py                       # WORK = /tmp, budgets 200000 100000
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
OUT = os.path.join(ROOT, "benchmarks", "results", "energy_digits")
BUDGETS = (200000, 100000)


def timed(argv: list[str], fresh: str | None) -> float:
    if fresh:
        shutil.rmtree(fresh, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def read(path: str):
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp")
    p.add_argument("--budgets", type=float, nargs="+", default=BUDGETS)
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    rows = {}
    dense_dir = os.path.join(args.workdir, "energy_bench_dense")
    dense_cmd = ["train/dense.py", "--dataset", "digits", "--workdir", dense_dir, "--no-progress"]
    seconds = timed(dense_cmd, dense_dir)
    entry = read(os.path.join(dense_dir, "results.json"))["runs"][-1]
    rows["dense"] = {"command": "python " + " ".join(dense_cmd), "wall_seconds": seconds,
                     "synops_per_image": entry["efficiency"]["synops_per_image"],
                     "connection_sparsity": entry["efficiency"]["connection_sparsity"],
                     "test_accuracy": entry["test_accuracy"]}
    for budget in args.budgets:
        work = os.path.join(args.workdir, f"energy_bench_{budget:g}")
        cmd = ["train/sparse_training.py", "--algorithm", "energy", "--synops-budget", f"{budget:g}", "--workdir",
               work, "--no-progress"]
        seconds = timed(cmd, work)
        results = read(os.path.join(work, "results.json"))
        search, final = results["runs"]
        out = os.path.join(work, "ticket_without_removed_channels.nir")
        export = ["train/export.py", "--workdir", work, "--drop-removed-channels", "--check", "jsnn,snntorch",
                  "--out", out]
        export_seconds = timed(export, None)
        check = read(out + ".check.json")
        rows[f"energy_{budget:g}"] = {
            "command": "python " + " ".join(cmd), "wall_seconds": seconds, "synops_budget": budget,
            "synops_per_image": final["efficiency"]["synops_per_image"],
            "synops_per_training_image": final.get("synops_per_image"), "within_budget": final["within_budget"],
            "disconnected_layers": final.get("disconnected_layers", []),
            "unpruned_synops_per_image": final["efficiency"]["unpruned_synops_per_image"],
            "connection_sparsity": final["efficiency"]["connection_sparsity"],
            "removed_channels": final["removed_channels"], "channels": final["channels"],
            "test_accuracy": final["test_accuracy"],
            "search": {"synops_per_image": search["efficiency"]["synops_per_image"],
                       "test_accuracy": search["test_accuracy"], "connection_sparsity": search["sparsity"],
                       "lambda": search["lambda"]},
            "repairs": final["repairs"],
            "export": {"command": "python " + " ".join(export), "wall_seconds": export_seconds,
                       "without_removed_channels": check["without_removed_channels"],
                       "full_graph_snntorch_prediction_agreement":
                           check["simulators"]["snntorch"]["prediction_agreement"],
                       "full_graph_snntorch_spike_agreement": check["simulators"]["snntorch"]["spike_agreement"]},
        }
    record = {"machine": machine_info(len(os.sched_getaffinity(0))), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "shared_machine": True, "runs": rows,
              "note": "the machine's 2 cores were shared with other work while this ran: times are indicative"}
    d = rows["dense"]
    md = ["# Energy-budget pruning on digits", "",
          f"{record['machine']['cpu']}, {record['machine']['cores']} cores, shared with other work while it ran "
          f"({record['date']}). SynOps per test image as the cost report counts them (jsnn.efficiency).", "",
          "| run | budget | SynOps / image | vs dense | connection sparsity | removed channels | test accuracy "
          "| wall s |", "|---|---|---|---|---|---|---|---|",
          f"| dense | – | {d['synops_per_image']:.0f} | 1.00× | {d['connection_sparsity']:.4f} | – | "
          f"{d['test_accuracy']:.4f} | {d['wall_seconds']:.0f} |"]
    for name, x in rows.items():
        if name == "dense":
            continue
        removed = ", ".join(f"{k} {n} / {x['channels'][k]}" for k, n in x["removed_channels"].items())
        md.append(f"| `{x['command'].replace(' --no-progress', '')}` | {x['synops_budget']:g} | "
                  f"{x['synops_per_image']:.0f} | {d['synops_per_image'] / x['synops_per_image']:.2f}× | "
                  f"{x['connection_sparsity']:.4f} | {removed} | {x['test_accuracy']:.4f} | {x['wall_seconds']:.0f} |")
    md += ["", "NIR export without the removed channels, run in snnTorch against the full graph: " + "; ".join(
        f"{name}: {100 * x['export']['without_removed_channels']['prediction_agreement']:.2f} % of "
        f"{x['export']['without_removed_channels']['images']} predictions agree"
        for name, x in rows.items() if name != "dense") + "."]
    write_results(args.out, record, md)


if __name__ == "__main__":
    main()
