"""The lottery-ticket experiment on digits: winning tickets against their controls, SF against magnitude,
and early-bird tickets (issue #12).

Per seed, on the digits CNN at width 0.5 (half the channels: 16-32-64), T = 2, pruning 60 % of the
remaining weights per round for 7 rounds (sparsity 1 - 0.4^k up to 99.6 %), 8 epochs a round (the
digits preset), rewind to epoch 2:

    mag, sf1, sf2            IMP (magnitude), SF-IMP-1, SF-IMP-2: the winning tickets
    <c>_reinit, <c>_random   each one's controls: its mask with fresh weights; a random mask with its
                             per-layer counts on its rewind point
    eb, eb_ticket            magnitude IMP with early-bird rounds (You et al.: window 5, distance 0.1),
                             and its tickets retrained for full rounds (their accuracy)

    python benchmarks/lottery_digits.py run --workdir runs/lottery_digits --seeds 0,1,2,3,4 --workers 2
    python benchmarks/lottery_digits.py report --workdir runs/lottery_digits --out docs/results/lottery_digits
    python benchmarks/lottery_digits.py report --from-summary docs/results/lottery_digits/summary.json \
        --out docs/results/lottery_digits

``run`` is resumable (rerun it: finished runs are skipped, a killed one continues from its checkpoint);
``report`` writes summary.json, table.md and lottery_digits.png from whatever has finished; with
``--from-summary`` it recomputes the statistics and table.md from a summary.json's per-seed accuracies
alone (no run directories; the figure, which shows only means and standard deviations, is left as it is).
Statistics: ``jsnn.statistics`` (accuracies as counts of correct test images, exact Wilcoxon signed-rank
p, Holm over the paired table, t intervals).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

WIDTH, TIMESTEPS, PRUNE_RATE, ROUNDS = 0.5, 2, 0.6, 7  # chosen by the pilot described in docs/lottery.md
RUNS = {  # name: (criterion, dns, control, ticket run, early-bird)
    "mag": ("magnitude", False, None, None, False),
    "mag_reinit": ("magnitude", False, "reinit", "mag", False),
    "mag_random": ("magnitude", False, "random", "mag", False),
    "eb": ("magnitude", False, None, None, True),
    "eb_ticket": ("magnitude", False, "ticket", "eb", False),
    "sf1": ("sf", False, None, None, False),
    "sf1_reinit": ("sf", False, "reinit", "sf1", False),
    "sf1_random": ("sf", False, "random", "sf1", False),
    "sf2": ("sf", True, None, None, False),
    "sf2_reinit": ("sf", True, "reinit", "sf2", False),
    "sf2_random": ("sf", True, "random", "sf2", False),
}
TICKETS = {"mag": "IMP (magnitude)", "sf1": "SF-IMP-1", "sf2": "SF-IMP-2"}


# -- running ---------------------------------------------------------------------------------------------


def run_seed(workdir: str, seed: int) -> None:
    import jax

    from jsnn import xla_flags

    xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them, before JAX starts
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    from jsnn import data as jdata
    from jsnn.config import TrainConfig
    from jsnn.metrics import read_json
    from jsnn.models import build_model
    from jsnn.runs import imp
    from jsnn.runs.outputs import Outputs
    from jsnn.trainer import Trainer

    # the figures of every round are drawn by ``report`` once, and the cost of each round's ticket is
    # not part of this experiment
    outputs = Outputs(plots=False, cost_report=False)
    config = TrainConfig(dataset="digits", width=WIDTH, timesteps=TIMESTEPS, seed=seed, progress=False,
                         checkpoint_every=8, eval_every=8).resolve("imp")
    dataset = jdata.load_dataset("digits")
    trainer = Trainer(config, build_model(config, dataset.num_classes), dataset)
    log_path = os.path.join(workdir, "wall_times.jsonl")
    for name, (criterion, dns, control, ticket, early_bird) in RUNS.items():
        out = os.path.join(workdir, f"seed_{seed}", name)
        done = read_json(os.path.join(out, "results.json"))
        if done and len(done["runs"]) == ROUNDS:
            continue
        options = imp.IMPOptions(rounds=ROUNDS, prune_rate=PRUNE_RATE, criterion=criterion, dns=dns, control=control,
                                 ticket_dir=os.path.join(workdir, f"seed_{seed}", ticket) if ticket else None,
                                 early_bird=early_bird)
        t0 = time.time()
        imp.run(config, options, out, trainer=trainer, outputs=outputs)
        with open(log_path, "a") as f:
            record = {"seed": seed, "run": name, "seconds": time.time() - t0, "finished": time.time()}
            f.write(json.dumps(record) + "\n")


def run_all(workdir: str, seeds: list[int], workers: int) -> None:
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    groups = [seeds[i::workers] for i in range(workers)]
    procs = [subprocess.Popen([sys.executable, __file__, "_worker", "--workdir", workdir,
                               "--seeds", ",".join(map(str, g))]) for g in groups if g]
    codes = [p.wait() for p in procs]
    with open(os.path.join(workdir, "wall_times.jsonl"), "a") as f:
        f.write(json.dumps({"all": seeds, "workers": workers, "seconds": time.time() - t0, "codes": codes}) + "\n")
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")


# -- statistics ---------------------------------------------------------------------------------------------

# The paired table: one family of len(PAIRS) x (ROUNDS - 1) tests, Holm-adjusted together.
PAIRS = {f"{c} - {c}_reinit": (c, f"{c}_reinit") for c in TICKETS}
PAIRS.update({f"{c} - {c}_random": (c, f"{c}_random") for c in TICKETS})
PAIRS.update({"sf1 - mag": ("sf1", "mag"), "sf2 - mag": ("sf2", "mag"), "eb_ticket - mag": ("eb_ticket", "mag")})
STATISTICS = ("per seed, accuracy as the integer count of correct test images; differences in images (and in "
              "points, 100/n_test each); mean with its 95 % Student-t interval; exact two-sided Wilcoxon "
              "signed-rank p by enumeration of all sign flips (zeros dropped, 'wilcox'; ties at their average "
              "rank; Pratt's zero handling recorded beside it) and exact sign-flip p of the mean; Holm's "
              "adjustment over all the p-values of the paired table (jsnn.statistics)")


def digits_test_size() -> int:
    from jsnn import data as jdata

    return len(jdata.load_dataset("digits").test_labels)


def paired_statistics(accuracy: dict, n_test: int, rounds: int) -> dict:
    """The paired table from every seed's accuracy (%, [seed, round] per run): see ``STATISTICS``."""
    from jsnn import statistics as st

    counts = {n: st.accuracy_counts(accuracy[n], n_test, percent=True) for n in accuracy}
    points = 100.0 / n_test
    table = {}
    for label, (a, b) in PAIRS.items():
        rows = []
        for k in range(1, rounds):
            r = st.paired(counts[a][:, k], counts[b][:, k])
            d = np.asarray(r["per_seed"])
            rows.append({"round": k, "mean": points * r["mean"], "ci95": [points * x for x in r["ci95"]],
                         "mean_images": r["mean"], "ci95_images": r["ci95"],
                         "wilcoxon_p": r["wilcoxon_p"], "wilcoxon_p_holm": None,
                         "wilcoxon_p_pratt": st.wilcoxon_exact(d, "pratt").pvalue, "sign_flip_p": r["sign_flip_p"],
                         "ahead": r["ahead"], "tied": r["tied"], "behind": r["behind"],
                         "per_seed_images": r["per_seed"]})
        table[label] = rows
    cells = [e for rows in table.values() for e in rows]
    for e, q in zip(cells, st.holm([e["wilcoxon_p"] for e in cells])):
        e["wilcoxon_p_holm"] = float(q)
    return table


def restate(summary: dict, n_test: int) -> dict:
    """``summary`` with its statistics recomputed from its per-seed accuracies (which are kept as they are)."""
    from jsnn import statistics as st

    out = {}
    for key, value in summary.items():  # keeps the order of the keys, n_test after rounds
        out[key] = value
        if key == "rounds":
            out["n_test"] = n_test
    out["n_test"] = n_test
    out["statistics"] = STATISTICS
    out["correct"] = {n: st.accuracy_counts(summary["accuracy"][n], n_test, percent=True).tolist()
                      for n in summary["accuracy"]}
    out["paired"] = paired_statistics({n: np.asarray(v) for n, v in summary["accuracy"].items()}, n_test,
                                      summary["rounds"])
    return out


def write(summary: dict, out: str, draw: bool = True) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(tables(summary))
    if draw:
        figure(summary, os.path.join(out, "lottery_digits.png"))


def report_from_summary(path: str, out: str) -> dict:
    """Recomputes the statistics and tables from a summary.json alone (no run directories): the
    accuracies, means, standard deviations and times are kept; the figure (means and standard deviations
    only) is left as it is."""
    with open(path) as f:
        summary = json.load(f)
    summary = restate(summary, summary.get("n_test") or digits_test_size())
    write(summary, out, draw=False)
    return summary


def _load(workdir: str):
    from jsnn.metrics import read_json, read_jsonl

    seeds = sorted(int(d.split("_")[1]) for d in os.listdir(workdir) if d.startswith("seed_"))
    acc, seconds, epochs, eb_seconds = {}, {}, {}, {}
    for s in seeds:
        for name in RUNS:
            d = os.path.join(workdir, f"seed_{s}", name)
            r = read_json(os.path.join(d, "results.json"))
            if not r or len(r["runs"]) < ROUNDS:
                continue
            acc[(name, s)] = [x["test_accuracy"] for x in r["runs"]]
            records = read_jsonl(os.path.join(d, "metrics.jsonl"))
            secs = [x["seconds"] for x in records]
            if secs:  # a process's first epoch includes compiling the step: count it as the run's median epoch
                secs[0] = float(np.median(secs))
            seconds[(name, s)] = [sum(t for x, t in zip(records, secs) if x["round"] == k) for k in range(ROUNDS)]
            epochs[(name, s)] = [sum(1 for x in records if x["round"] == k) for k in range(ROUNDS)]
            eb_seconds[(name, s)] = [x.get("early_bird_seconds", 0.0) for x in r["runs"]]
    return seeds, acc, seconds, epochs, eb_seconds


def report(workdir: str, out: str) -> dict:
    seeds, acc, seconds, epochs, eb_seconds = _load(workdir)
    complete = [s for s in seeds if all((n, s) in acc for n in RUNS)]
    if not complete:
        raise SystemExit(f"no seed in {workdir} has finished every run yet")
    sparsity = [1 - (1 - PRUNE_RATE) ** k for k in range(ROUNDS)]
    A = {n: 100 * np.array([acc[(n, s)] for s in complete]) for n in RUNS}  # [seed, round], %
    summary = {"seeds": complete, "width": WIDTH, "prune_rate": PRUNE_RATE, "rounds": ROUNDS, "sparsity": sparsity,
               "mean": {n: A[n].mean(0).tolist() for n in RUNS}, "std": {n: A[n].std(0, ddof=1).tolist() for n in RUNS},
               "accuracy": {n: A[n].tolist() for n in RUNS}, "paired": {}, "time_to_ticket": {}}
    # time to ticket k: the training (and early-bird scoring) before mask k is drawn
    for name in ("mag", "eb"):
        ep = np.array([np.cumsum([0] + epochs[(name, s)][:-1]) for s in complete], float)
        sec = np.array([np.cumsum([0] + [a + b for a, b in zip(seconds[(name, s)], eb_seconds[(name, s)])][:-1])
                        for s in complete])
        summary["time_to_ticket"][name] = {
            "epochs_mean": ep.mean(0).tolist(), "epochs_std": ep.std(0, ddof=1).tolist(),
            "seconds_mean": sec.mean(0).tolist(), "seconds_std": sec.std(0, ddof=1).tolist(),
            "epochs_per_round": [epochs[(name, s)] for s in complete]}
    summary = restate(summary, digits_test_size())
    write(summary, out)
    return summary


def _pm(m, s):
    return f"{m:.1f} ± {s:.1f}"


def tables(S: dict) -> str:
    rounds = range(S["rounds"])
    head = "| | " + " | ".join(f"{100 * S['sparsity'][k]:.1f} %" for k in rounds) + " |\n"
    head += "|---" * (S["rounds"] + 1) + "|\n"
    names = {"mag": "IMP (magnitude)", "mag_reinit": "  reinit", "mag_random": "  random mask",
             "sf1": "SF-IMP-1", "sf1_reinit": "  reinit", "sf1_random": "  random mask",
             "sf2": "SF-IMP-2", "sf2_reinit": "  reinit", "sf2_random": "  random mask",
             "eb": "early-bird search (stopped rounds)", "eb_ticket": "early-bird ticket, retrained"}
    text = f"Test accuracy (%), mean ± std over seeds {S['seeds']} (n = {len(S['seeds'])}), by sparsity:\n\n" + head
    for n, label in names.items():
        text += f"| {label} | " + " | ".join(_pm(S["mean"][n][k], S["std"][n][k]) for k in rounds) + " |\n"
    cells = sum(len(rows) for rows in S["paired"].values())
    text += (f"\nPaired per-seed differences, in points (1 test image = {100 / S['n_test']:.2f} points): mean "
             f"[95 % t interval]; seeds ahead/tied/behind; exact two-sided Wilcoxon signed-rank p (zeros dropped, "
             f"ties at average ranks) and its Holm adjustment over the table's {cells} p-values\n\n")
    text += "| | " + " | ".join(f"{100 * S['sparsity'][k]:.1f} %" for k in rounds if k) + " |\n"
    text += "|---" * S["rounds"] + "|\n"
    for label, rows in S["paired"].items():
        text += f"| {label} | " + " | ".join(
            f"{r['mean']:+.1f} [{r['ci95'][0]:+.1f}, {r['ci95'][1]:+.1f}] {r['ahead']}/{r['tied']}/{r['behind']} "
            f"(p {r['wilcoxon_p']:.2g}, Holm {r['wilcoxon_p_holm']:.2g})" for r in rows) + " |\n"
    t = S["time_to_ticket"]
    text += "\nTime to the ticket of each sparsity (training before its mask is drawn; seconds: training epochs, the " \
            "first one of each run counted as the run's median epoch since it includes compiling, plus early-bird's " \
            "per-epoch scoring), mean ± std:\n\n"
    text += "| | " + " | ".join(f"{100 * S['sparsity'][k]:.1f} %" for k in rounds if k) + " |\n"
    text += "|---" * S["rounds"] + "|\n"
    for name, label in (("mag", "IMP"), ("eb", "early-bird")):
        text += f"| {label}, epochs | " + " | ".join(
            _pm(t[name]["epochs_mean"][k], t[name]["epochs_std"][k]) for k in rounds if k) + " |\n"
        text += f"| {label}, seconds | " + " | ".join(
            _pm(t[name]["seconds_mean"][k], t[name]["seconds_std"][k]) for k in rounds if k) + " |\n"
    return text


def figure(S: dict, path: str) -> str:
    from jsnn.plots import pyplot, save_figure

    plt = pyplot()

    remaining = 100 * (1 - np.array(S["sparsity"]))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.0), dpi=130, sharey=True)
    style = {"": ("-", "o"), "_reinit": ("--", "s"), "_random": ("--", "^")}
    for ax, (c, title) in zip(axes, TICKETS.items()):
        for suffix, (ls, marker) in style.items():
            n = c + suffix
            m, s = np.array(S["mean"][n]), np.array(S["std"][n])
            label = title if not suffix else {"_reinit": "reinit (fresh weights)", "_random": "random mask"}[suffix]
            ax.plot(remaining, m, ls=ls, marker=marker, ms=4, label=label)
            ax.fill_between(remaining, m - s, m + s, alpha=0.15)
        ax.set_title(title)
    ax = axes[3]
    for n, label in (("mag", "IMP (magnitude)"), ("sf1", "SF-IMP-1"), ("sf2", "SF-IMP-2"),
                     ("eb_ticket", "early-bird ticket")):
        m, s = np.array(S["mean"][n]), np.array(S["std"][n])
        ax.plot(remaining, m, marker="o", ms=4, label=label)
        ax.fill_between(remaining, m - s, m + s, alpha=0.15)
    ax.set_title("tickets compared")
    for ax in axes:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xticks(remaining)
        ax.set_xticklabels([f"{r:.3g}" for r in remaining], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("remaining weights (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("test accuracy (%)")
    return save_figure(fig, path, title=f"digits CNN, width {S['width']}, T = {TIMESTEPS}, mean ± std over "
                                        f"{len(S['seeds'])} seeds "
                                        f"(controls dashed)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report", "_worker"])
    p.add_argument("--workdir", default="runs/lottery_digits")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--workers", type=int, default=1, help="processes, each taking every workers-th seed")
    p.add_argument("--out", default="docs/results/lottery_digits")
    p.add_argument("--from-summary", metavar="SUMMARY_JSON",
                   help="report: recompute the statistics and tables from this summary.json (its per-seed "
                        "accuracies) instead of the run directories; the figure is left as it is")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.command == "_worker":
        for s in seeds:
            run_seed(args.workdir, s)
    elif args.command == "run":
        run_all(args.workdir, seeds, args.workers)
    else:
        if args.from_summary:
            report_from_summary(args.from_summary, args.out)
        else:
            report(args.workdir, args.out)
        with open(os.path.join(args.out, "table.md")) as f:
            print(f.read())


if __name__ == "__main__":
    main()
