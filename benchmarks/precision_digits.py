"""A digits ticket trained in f32 and in bf16: accuracy, sparsity and SynOps against seed noise, and the speed.

    nice -n 10 python -m benchmarks.precision_digits                       # seeds 0,1,2; f32 and bf16
    nice -n 10 python -m benchmarks.precision_digits --seeds 0 --rounds 1 --epochs 1   # smoke

Each run is ``train/imp.py --dataset digits --rounds R --seed S --precision P`` in a fresh workdir and a
fresh process (f32 and bf16 of one seed back to back, so both see the same load). Read per IMP round:
test accuracy, the ticket's sparsity, SynOps per image and activation sparsity from the run's
results.json (its cost report, which counts in f32 whatever the run trained in), and the training
throughput from metrics.jsonl (the median over epochs, round 0's first epoch, which compiles, left out),
with the run's wall time. Results: benchmarks/results/precision_digits.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import shared_machine, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "precision_digits")
PER_ROUND = ("test_accuracy", "sparsity", "synops_per_image", "activation_sparsity")


def run_once(seed: int, precision: str, rounds: int, epochs: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="jsnn-precision-digits-") as workdir:
        cmd = [sys.executable, "train/imp.py", "--dataset", "digits", "--rounds", str(rounds), "--seed", str(seed),
               "--precision", precision, "--workdir", workdir, "--no-plots", "--no-progress"]
        if epochs is not None:
            cmd += ["--epochs", str(epochs)]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        with open(os.path.join(workdir, "results.json")) as f:
            runs = json.load(f)["runs"]
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            epochs_seen = [json.loads(line) for line in f if line.strip()]
    per_round = []
    for entry in runs:
        eff = entry.get("efficiency", {})
        per_round.append({"round": entry["round"], "test_accuracy": entry["test_accuracy"],
                          "sparsity": entry["sparsity"], "synops_per_image": eff.get("synops_per_image"),
                          "activation_sparsity": eff.get("activation_sparsity")})
    speeds = [e["images_per_sec"] for e in epochs_seen
              if "images_per_sec" in e and not (e.get("round") == 0 and e.get("epoch") == 1)]
    return {"seed": seed, "precision": precision, "wall_s": wall, "rounds": per_round,
            "train_images_per_s": float(np.median(speeds)) if speeds else None,
            "command": " ".join(cmd[1:3] + cmd[3:cmd.index("--workdir")])}


def summarize(runs: list[dict], precisions: list[str]) -> dict:
    """Per precision and round: mean and seed standard deviation of each quantity; per round and
    quantity the difference of the bf16 and f32 means in units of the larger seed deviation."""
    out: dict = {}
    for p in precisions:
        mine = [r for r in runs if r["precision"] == p]
        out[p] = {"wall_s_mean": float(np.mean([r["wall_s"] for r in mine])),
                  "train_images_per_s_median": float(np.median([r["train_images_per_s"] for r in mine])),
                  "rounds": []}
        for i in range(len(mine[0]["rounds"])):
            row = {"round": mine[0]["rounds"][i]["round"]}
            for key in PER_ROUND:
                values = [r["rounds"][i][key] for r in mine if r["rounds"][i][key] is not None]
                if values:
                    row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))
                                if len(values) > 1 else None, "values": values}
            out[p]["rounds"].append(row)
    if "f32" in out and "bf16" in out:
        diffs = []
        for a, b in zip(out["f32"]["rounds"], out["bf16"]["rounds"]):
            row = {"round": a["round"]}
            for key in PER_ROUND:
                if key in a and key in b:
                    noise = max(a[key]["std"] or 0.0, b[key]["std"] or 0.0)
                    delta = b[key]["mean"] - a[key]["mean"]
                    row[key] = {"bf16_minus_f32": delta, "in_seed_stds": delta / noise if noise else None}
            diffs.append(row)
        out["bf16_vs_f32"] = diffs
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--precisions", default="f32,bf16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="epochs per round (unset: the digits preset)")
    p.add_argument("--out", default=RESULTS, help="results path without extension ('' writes nothing)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    precisions = args.precisions.split(",")
    load_before = os.getloadavg()
    runs = []
    for seed in seeds:
        for precision in precisions:
            runs.append(run_once(seed, precision, args.rounds, args.epochs))
            r = runs[-1]
            print(f"seed {seed} {precision}: wall {r['wall_s']:.1f} s, train {r['train_images_per_s']:.0f} img/s, "
                  + ", ".join(f"round {x['round']} acc {x['test_accuracy']:.4f} sparsity {x['sparsity']:.3f} "
                              f"SynOps {x['synops_per_image'] or 0:.3g}" for x in r["rounds"]), flush=True)
    summary = summarize(runs, precisions)
    record = {"machine": shared_machine("compare f32 and bf16 within this run"),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "seeds": seeds, "rounds": args.rounds, "epochs": args.epochs, "runs": runs, "summary": summary}
    lines = ["| precision | round | test acc (mean ± seed sd) | sparsity | SynOps / image | activation sparsity |",
             "|---|---:|---:|---:|---:|---:|"]
    for prec in precisions:
        for row in summary[prec]["rounds"]:
            cells = []
            for key, fmt in zip(PER_ROUND, ("{:.4f}", "{:.3f}", "{:.4g}", "{:.4f}")):
                v = row.get(key)
                cells.append("—" if v is None else fmt.format(v["mean"]) + (
                    "" if v["std"] is None else " ± " + fmt.format(v["std"])))
            lines.append(f"| {prec} | {row['round']} | " + " | ".join(cells) + " |")
    lines += ["", "| precision | wall s (mean) | training img/s (median) |", "|---|---:|---:|"]
    lines += [f"| {prec} | {summary[prec]['wall_s_mean']:.1f} | {summary[prec]['train_images_per_s_median']:.0f} |"
              for prec in precisions]
    write_results(args.out, record, lines)
    return record


if __name__ == "__main__":
    main()
