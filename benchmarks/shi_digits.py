"""Shi et al.'s mask learning as published (train/shi.py, method ``shi``) on digits, beside the SynOps-budget
variant (method ``energy``) at the SynOps Shi et al.'s ticket reached, and the dense network, per seed (issue 32:
"Shi et al.'s method on digits ... beside the budgeted variant at the same SynOps"). The comparisons' setting
(benchmarks/methods_digits.py): the digits CNN at width 0.5, T = 2; each method at its digits presets (15 epochs
of search or training, the two mask methods then 5 of finetuning). Per seed:

    python train/dense.py --dataset digits --width 0.5 -T 2 --seed S --workdir WORK/dense_S
    python train/shi.py --dataset digits --width 0.5 -T 2 --seed S --workdir WORK/shi_S
    python train/sparse_training.py --algorithm energy --synops-budget B --dataset digits --width 0.5 -T 2 \\
        --seed S --workdir WORK/energy_S

B is the SynOps per *training* image of seed S's Shi ticket (the cost report's count over the 1 437 training
images, as the energy method checks its budget), so both tickets are held to the same count on the same images.
Recorded per run: test accuracy; weight sparsity (kept kernel weights, the cost report's ``connection_sparsity``); the
paper's connection fraction (``jsnn.sparsity.connection_penalty.connections``: synapse instances of a ones image through
the kept weights and neurons, so gated neuron positions count); SynOps per test and per training image and their ratio
to the same seed's dense network; kept neuron positions (Shi); and Shi's method on the first seed at two other lambdas
(``--lambdas``: how the digits preset was chosen); each Shi ticket's NIR export (its gates as Scale nodes) checked in
jsnn's importer and snnTorch against the ticket (``train/export.py --check jsnn,snntorch``).
Writes benchmarks/results/shi_digits.{json,md}.

    python benchmarks/shi_digits.py --workdir /tmp/shi_digits --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import git_commit, shared_machine, write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "shi_digits")
SETTING = ["--dataset", "digits", "--width", "0.5", "-T", "2"]


def program(argv: list[str], workdir: str) -> tuple[dict, float, str]:
    """Runs ``python argv --workdir workdir`` from scratch; (results.json, wall seconds, the command)."""
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [*argv, "--workdir", workdir, "--no-progress", "--no-plots"]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True)
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f), time.perf_counter() - t0, "python " + " ".join(cmd)


def ticket_facts(workdir: str) -> dict:
    """What the cost report does not say of a ticket: its SynOps per training image and the paper's connections."""
    from jsnn import data as jdata
    from jsnn.efficiency import measure
    from jsnn.sparsity import connection_penalty
    from jsnn.ticket import load_ticket
    from jsnn.variables import by_name

    ticket = load_ticket(os.path.join(workdir, "ticket.npz"))
    ds = jdata.load_dataset("digits")
    train = measure(ticket.model, ticket.variables, ds.train_images, batch_size=ticket.config.batch_size,
                    normalize=(ds.mean, ds.std))
    conn, total = connection_penalty.connections(ticket.model.layers(ds.image_shape), by_name(ticket.variables.masks),
                                  by_name(ticket.variables.gates))
    return {"synops_per_training_image": train["synops_per_image"], "connections": conn,
            "dense_connections": total, "connection_fraction": conn / total}


def row(results: dict, seconds: float, command: str, workdir: str) -> dict:
    e = results["runs"][-1]
    return {"command": command, "wall_seconds": seconds, "test_accuracy": e["test_accuracy"],
            "synops_per_image": e["efficiency"]["synops_per_image"],
            "macs_per_image": e["efficiency"]["macs_per_image"],
            "weight_sparsity": e["efficiency"]["connection_sparsity"], **ticket_facts(workdir)}


def run_seed(workdir: str, seed: int) -> dict:
    s = ["--seed", str(seed)]
    out = {}
    r, sec, cmd = program(["train/dense.py", *SETTING, *s], os.path.join(workdir, f"dense_{seed}"))
    out["dense"] = row(r, sec, cmd, os.path.join(workdir, f"dense_{seed}"))
    work = os.path.join(workdir, f"shi_{seed}")
    r, sec, cmd = program(["train/shi.py", *SETTING, *s], work)
    search, final = r["runs"]
    out["shi"] = {**row(r, sec, cmd, work), "penalty_lambda": final["penalty_lambda"],
                  "neuron_fraction": final["neuron_fraction"], "neurons_kept": final["neurons_kept"],
                  "layer_sparsity": final["layer_sparsity"], "empty_layers": final["empty_layers"],
                  "search": {"test_accuracy": search["test_accuracy"], "weight_sparsity": search["sparsity"],
                             "connection_fraction": search["connection_fraction"]}}
    nir_out = os.path.join(work, "ticket.nir")
    export = ["train/export.py", "--workdir", work, "--check", "jsnn,snntorch", "--out", nir_out]
    subprocess.run([sys.executable, *export], cwd=ROOT, check=True)
    with open(nir_out + ".check.json") as f:
        check = json.load(f)
    out["shi"]["export"] = {"command": "python " + " ".join(export), **{
        sim: {k: check["simulators"][sim][k] for k in ("prediction_agreement", "spike_agreement")}
        for sim in ("jsnn", "snntorch")}}
    budget = out["shi"]["synops_per_training_image"]
    work = os.path.join(workdir, f"energy_{seed}")
    r, sec, cmd = program(["train/sparse_training.py", "--algorithm", "energy", "--synops-budget", f"{budget:.1f}",
                           *SETTING, *s], work)
    final = r["runs"][-1]
    out["energy"] = {**row(r, sec, cmd, work), "synops_budget": budget, "within_budget": final["within_budget"],
                     "synops_per_training_image_run": final["synops_per_image"],
                     "removed_channels": final["removed_channels"], "channels": final["channels"],
                     "layer_sparsity": final["layer_sparsity"], "repairs": final["repairs"]}
    for name in ("shi", "energy"):
        d = out["dense"]
        out[name]["synops_vs_dense"] = out[name]["synops_per_image"] / d["synops_per_image"]
        out[name]["accuracy_vs_dense"] = out[name]["test_accuracy"] - d["test_accuracy"]
    return out


def lambda_sweep(workdir: str, seed: int, lambdas) -> dict:
    """Shi et al.'s method on one seed at other lambdas than the digits preset: how the preset was chosen."""
    out = {}
    for lam in lambdas:
        work = os.path.join(workdir, f"shi_{seed}_lambda_{lam:g}")
        r, sec, cmd = program(["train/shi.py", *SETTING, "--seed", str(seed), "--penalty-lambda", f"{lam:g}"], work)
        final = r["runs"][-1]
        out[f"{lam:g}"] = {**row(r, sec, cmd, work), "neuron_fraction": final["neuron_fraction"]}
    return out


def summary(seeds: dict) -> dict:
    out = {}
    for name in ("dense", "shi", "energy"):
        rows = [seeds[s][name] for s in sorted(seeds)]
        keys = ["test_accuracy", "synops_per_image", "synops_per_training_image", "weight_sparsity",
                "connection_fraction"] + (["synops_vs_dense", "accuracy_vs_dense"] if name != "dense" else []) + (
                    ["neuron_fraction"] if name == "shi" else [])
        out[name] = {k: {"mean": float(np.mean([r[k] for r in rows])), "min": float(np.min([r[k] for r in rows])),
                         "max": float(np.max([r[k] for r in rows]))} for k in keys}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/shi_digits")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lambdas", type=float, nargs="*", default=[1e-7, 1e-5],
                   help="other lambdas, run on the first seed only")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    commit = git_commit()
    t0 = time.time()
    seeds = {s: run_seed(args.workdir, s) for s in args.seeds}
    sweep = lambda_sweep(args.workdir, args.seeds[0], args.lambdas)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    record = {"commit": commit, "command": "python benchmarks/shi_digits.py --seeds "
              + " ".join(map(str, args.seeds)), "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "machine": shared_machine("wall seconds are indicative only"), "load_average_at_end": load,
              "seconds": time.time() - t0, "setting": "digits CNN, width 0.5, T = 2, each method's digits presets",
              "seeds": {str(s): v for s, v in seeds.items()}, "summary": summary(seeds),
              "lambda_sweep": {"seed": args.seeds[0], "runs": sweep}}
    S = record["summary"]
    md = ["# Shi et al.'s mask learning on digits, beside the SynOps-budget variant at the same SynOps", "",
          f"Commit {commit}, {record['date']} UTC, {record['machine']}; seeds {', '.join(map(str, args.seeds))}. "
          "Mean (min – max) over the seeds. SynOps per test image (the cost report); the energy budget is Shi's "
          "SynOps per training image on the same seed.", "",
          "| method | test accuracy | SynOps / test image | vs dense | weight sparsity | connections (paper's) |",
          "|---|---|---|---|---|---|"]

    def cell(name, key, fmt="{:.4f}"):
        x = S[name][key]
        return f"{fmt.format(x['mean'])} ({fmt.format(x['min'])} – {fmt.format(x['max'])})"

    for name, what in (("dense", "dense"), ("shi", "Shi et al. (`train/shi.py`)"),
                       ("energy", "SynOps-budget variant (`--algorithm energy`)")):
        ratio = "1" if name == "dense" else cell(name, "synops_vs_dense", "{:.4f}")
        md.append(f"| {what} | {cell(name, 'test_accuracy')} | {cell(name, 'synops_per_image', '{:.0f}')} | {ratio} | "
                  f"{cell(name, 'weight_sparsity')} | {cell(name, 'connection_fraction', '{:.5f}')} |")
    md += ["", f"Other lambdas, seed {args.seeds[0]}: " + "; ".join(
        f"{lam}: {100 * x['test_accuracy']:.1f} %, connections {100 * x['connection_fraction']:.2f} %"
        for lam, x in sweep.items())]
    md += ["", "NIR export of Shi's tickets (gates as Scale nodes), run in jsnn's importer and snnTorch: " + "; ".join(
        f"seed {s}: " + ", ".join(f"{sim} {100 * x['export'][sim]['prediction_agreement']:.2f} % of predictions, "
                                  f"{100 * x['export'][sim]['spike_agreement']:.4f} % of spikes"
                                  for sim in ("jsnn", "snntorch")) for s, x in ((s, seeds[s]["shi"]) for s in seeds))]
    md += ["", f"Shi et al.'s tickets keep {cell('shi', 'neuron_fraction')} of the gated neuron positions.", "",
           "Commands: " + "; ".join(f"`{seeds[args.seeds[0]][k]['command']}`" for k in ("dense", "shi", "energy"))]
    write_results(args.out, record, md)


if __name__ == "__main__":
    main()
