"""A user's first run and warm rerun of the digits IMP program at two commits, alternated: what a change did to
the whole run, where single runs are too noisy to compare across sessions.

    python benchmarks/commits_first_run.py OLD NEW [--pairs 3]
    python benchmarks/commits_first_run.py OLD NEW --program edge_popup    # README's main job instead

Checks both commits out into temporary git worktrees and, per pair, runs in each (OLD first) ``train/imp.py
--dataset digits --rounds 3`` (or ``train/edge_popup.py``, README's main job) in a fresh workdir with an empty
compilation cache (first run), then again with the cache it filled (warm), each in its own process, with that
worktree's ``jsnn`` first on the path (``PYTHONPATH``). For each: wall time, CPU time and peak RSS (the child's own
``os.wait4``), and each round's test accuracy (the same numbers at both commits say the change left a run's values
alone). The medians over the pairs and NEW's over OLD's. Results: benchmarks/results/commits_first_run.{json,md}
(``--out``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import shared_machine, write_results  # noqa: E402
from benchmarks.time_to_ticket import test_accuracies, timed_child  # noqa: E402

RUNS = ("first run (cache empty)", "cache warm")
# the program a user runs, with its arguments (``--rounds`` is IMP's)
PROGRAMS = {"imp": lambda rounds: ["train/imp.py", "--dataset", "digits", "--rounds", str(rounds)],
            "edge_popup": lambda rounds: ["train/edge_popup.py"]}


def resolve(commit: str) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"not a commit of this repository: {commit}")
    return out.stdout.strip()


def run_pair(tree: str, program: list[str]) -> dict:
    """The first run and the warm rerun at the worktree ``tree``."""
    env = {**os.environ, "PYTHONPATH": tree}
    out = {}
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as work:
        env["JSNN_COMPILATION_CACHE"] = cache
        for k, name in enumerate(RUNS):
            cmd = [sys.executable, *program, "--workdir", os.path.join(work, str(k))]
            r = timed_child(cmd, env, cwd=tree)
            out[name] = {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "peak_mib": r["peak_mib"],
                         "test_accuracy_per_round": test_accuracies(r["output"])}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--program", choices=sorted(PROGRAMS), default="imp")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "commits_first_run"))
    args = p.parse_args(argv)
    commits = {"old": resolve(args.old), "new": resolve(args.new)}
    load_before = os.getloadavg()
    samples = {side: {name: [] for name in RUNS} for side in commits}
    with tempfile.TemporaryDirectory() as trees:
        paths = {side: os.path.join(trees, side) for side in commits}
        for side, commit in commits.items():
            subprocess.run(["git", "worktree", "add", "--detach", paths[side], commit], cwd=ROOT, check=True,
                           capture_output=True)
        try:
            for pair in range(args.pairs):
                for side in commits:
                    for name, r in run_pair(paths[side], PROGRAMS[args.program](args.rounds)).items():
                        samples[side][name].append(r)
                    print(f"pair {pair}: {commits[side]} " + ", ".join(
                        f"{name} {samples[side][name][-1]['wall_s']:.1f} s" for name in RUNS), flush=True)
        finally:
            for path in paths.values():
                subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT, capture_output=True)
    median = {side: {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "peak_mib")}
                     for name, rs in by_name.items()} for side, by_name in samples.items()}
    ratio = {name: {k: median["new"][name][k] / median["old"][name][k] for k in ("wall_s", "cpu_s", "peak_mib")}
             for name in RUNS}
    record = {"command": "python benchmarks/commits_first_run.py " + " ".join(argv or sys.argv[1:]),
              "machine": shared_machine("alternated pairs; compare within this file"), "commits": commits,
              "pairs": args.pairs, "program": " ".join(PROGRAMS[args.program](args.rounds)),
              "rounds": args.rounds, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "runs": samples, "median": median, "ratio_new_to_old": ratio}
    lines = [f"`{record['program']}` at {commits['old']} (old) and {commits['new']} "
             f"(new), alternated, {args.pairs} pair(s); {record['machine']}. Median wall s, CPU s, peak MiB "
             "(min-max of wall in brackets).", "",
             "| run | old wall s | new wall s | new / old wall | old CPU s | new CPU s | old peak MiB | new peak MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in RUNS:
        o, n = median["old"][name], median["new"][name]
        spread = {side: (min(r["wall_s"] for r in samples[side][name]), max(r["wall_s"] for r in samples[side][name]))
                  for side in commits}
        lines.append(f"| {name} | {o['wall_s']:.1f} ({spread['old'][0]:.1f}-{spread['old'][1]:.1f}) | "
                     f"{n['wall_s']:.1f} ({spread['new'][0]:.1f}-{spread['new'][1]:.1f}) | "
                     f"{ratio[name]['wall_s']:.2f} | {o['cpu_s']:.1f} | {n['cpu_s']:.1f} | {o['peak_mib']:.0f} | "
                     f"{n['peak_mib']:.0f} |")
    same = all(r["test_accuracy_per_round"] == samples["old"][RUNS[0]][0]["test_accuracy_per_round"]
               for side in commits for rs in samples[side].values() for r in rs)
    lines += ["", "Test accuracy per round " + ("the same in every run: " if same else "differs between runs: ")
              + str(samples["old"][RUNS[0]][0]["test_accuracy_per_round"])]
    write_results(args.out, record, lines)


if __name__ == "__main__":
    main()
