"""Cost of the efficiency entry (issue 13 target: <= 5 % of a level's training time).

Reads a finished run: for every edge-popup level / IMP round, the seconds its
"efficiency" entry took (``jsnn.efficiency.ticket_entry``: test set loaded, model built,
counting pass compiled and run) against the seconds its training epochs took
(metrics.jsonl), and writes WORKDIR/report_cost.json.

    python benchmarks/report_cost.py --workdir runs/ep_eff     # edge-popup sweep
    python benchmarks/report_cost.py --workdir runs/imp_eff    # IMP run
"""
from __future__ import annotations

import argparse
import os

from jsnn.metrics import read_json, read_jsonl, write_json


def level_costs(workdir: str) -> list[dict]:
    results = read_json(os.path.join(workdir, "results.json"))
    if not results or not results.get("runs"):
        raise SystemExit(f"error: {workdir} has no results.json with runs; point --workdir at a finished run")
    rows = []
    for entry in results["runs"]:
        if "efficiency" not in entry:
            continue
        if "round" in entry:
            name = f"round {entry['round']}"
            records = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
                       if r.get("round") == entry["round"]]
        else:
            name = f"sparsity {entry['sparsity_target']:.2f}"
            records = read_jsonl(os.path.join(workdir, f"sparsity_{entry['sparsity_target']:.2f}", "metrics.jsonl"))
        train = sum(r["seconds"] for r in records)
        report = entry["efficiency"]["seconds"]
        rows.append({"level": name, "train_seconds": train, "report_seconds": report,
                     "report_fraction": report / train if train else None})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    rows = level_costs(args.workdir)
    print("| level | training s | report s | report / training |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['level']} | {r['train_seconds']:.1f} | {r['report_seconds']:.2f} | "
              f"{100 * r['report_fraction']:.2f} % |")
    write_json(os.path.join(args.workdir, "report_cost.json"), {"levels": rows})


if __name__ == "__main__":
    main()
