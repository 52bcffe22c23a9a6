"""Are two trees' runs the same? Runs the documented digits commands with each tree's code and
compares what they leave: every ticket array byte for byte, each ticket's recorded entry, every
results.json and metrics.jsonl (timings left out, and the keys a later version added: labels and
the run signature in results).

    python benchmarks/same_results.py --before 21b7c34 --after HEAD     # git revisions, checked out apart
    python benchmarks/same_results.py --compare DIR_A DIR_B            # two finished sets of runs

Writes benchmarks/results/same_results.{json,md}: the commands, every file compared and the
differences (none, when the code moved without changing what it computes).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the digits presets of the documented commands (README): every method, control and variant
COMMANDS = {
    "dense": ["train/dense.py"],
    "ep": ["train/edge_popup.py", "--sparsity", "0.5,0.9", "--dense-baseline", "train"],
    "ep_floor": ["train/edge_popup.py", "--sparsity", "0.5", "--control", "random"],
    "imp": ["train/imp.py", "--dataset", "digits", "--rounds", "3"],
    "sf2": ["train/imp.py", "--dataset", "digits", "--rounds", "3", "--criterion", "sf", "--dns"],
    "reinit": ["train/imp.py", "--dataset", "digits", "--rounds", "3", "--control", "reinit", "--ticket", "{imp}"],
    "random": ["train/imp.py", "--dataset", "digits", "--rounds", "3", "--control", "random"],
    "eb": ["train/imp.py", "--dataset", "digits", "--rounds", "3", "--early-bird", "--early-bird-window", "2",
           "--early-bird-threshold", "0.2"],
}
IGNORED = ("seconds", "images_per_sec", "source", "ticket_dir", "workdir")  # timings and paths
ADDED = ("label", "method_label", "signature")  # keys later versions write beside the results


def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items() if not any(s in k for s in IGNORED) and k not in ADDED}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


def digest(root: str) -> dict[str, str]:
    """{file[:array]: sha1} of every ticket array, ticket entry, results.json and metrics.jsonl."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "checkpoints"]
        for f in sorted(files):
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, root)
            if f.endswith(".npz") and not f.startswith("firing_stats"):
                with np.load(path) as z:
                    for k in sorted(z.files):
                        if k == "__meta__":
                            info = clean(json.loads(bytes(z[k]).decode())["info"])
                            out[f"{rel}:info"] = _sha(json.dumps(info, sort_keys=True).encode())
                        else:
                            out[f"{rel}:{k}"] = _sha(np.ascontiguousarray(z[k]).tobytes())
            elif f == "results.json":
                with open(path) as fh:
                    out[rel] = _sha(json.dumps(clean(json.load(fh)), sort_keys=True).encode())
            elif f == "metrics.jsonl":
                with open(path) as fh:
                    records = [clean(json.loads(line)) for line in fh if line.strip()]
                out[rel] = _sha(json.dumps(records, sort_keys=True).encode())
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def run_all(tree: str, out: str) -> None:
    env = {**os.environ, "PYTHONPATH": tree, "JSNN_COMPILATION_CACHE": os.path.join(out, ".cache")}
    for name, command in COMMANDS.items():
        argv = [a.format(imp=os.path.join(out, "imp")) for a in command]
        subprocess.run([sys.executable, *argv, "--workdir", os.path.join(out, name), "--no-progress"], cwd=tree,
                       env=env, check=True, stdout=subprocess.DEVNULL)


def checkout(revision: str, where: str) -> str:
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", where, revision], check=True,
                   capture_output=True)
    return subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def compare(a: str, b: str) -> dict:
    da, db = digest(a), digest(b)
    return {"files_compared": len(set(da) & set(db)), "only_before": sorted(set(da) - set(db)),
            "only_after": sorted(set(db) - set(da)), "different": sorted(k for k in da if k in db and da[k] != db[k])}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="git revision")
    p.add_argument("--after", default="HEAD", help="git revision")
    p.add_argument("--compare", nargs=2, metavar="DIR", help="compare two finished sets of runs instead")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "same_results"))
    args = p.parse_args()
    if args.compare:
        report = {"compared": args.compare, **compare(*args.compare)}
    elif args.before:
        with tempfile.TemporaryDirectory() as tmp:
            commits = {}
            for side, revision in (("before", args.before), ("after", args.after)):
                commits[side] = checkout(revision, os.path.join(tmp, f"tree_{side}"))
                run_all(os.path.join(tmp, f"tree_{side}"), os.path.join(tmp, f"runs_{side}"))
            report = {"before": commits["before"], "after": commits["after"],
                      **compare(os.path.join(tmp, "runs_before"), os.path.join(tmp, "runs_after"))}
            for side in ("before", "after"):
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", os.path.join(tmp, f"tree_{side}")],
                               check=False, capture_output=True)
    else:
        p.error("give --before REV (and --after REV), or --compare DIR_A DIR_B")
    report["commands"] = {name: "python " + " ".join(c) for name, c in COMMANDS.items()}
    same = not (report["only_before"] or report["only_after"] or report["different"])
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=2)
    where = f"{report['before']} and {report['after']}" if "before" in report else " and ".join(report["compared"])
    lines = [f"Runs of {where} on digits: {report['files_compared']} files and arrays compared "
             f"({'all identical' if same else 'DIFFERENCES'}; timings, paths and added label/signature keys "
             "left out).", "", "| run | command |", "|---|---|"]
    lines += [f"| {name} | `{cmd}` |" for name, cmd in report["commands"].items()]
    for key in ("only_before", "only_after", "different"):
        if report[key]:
            lines += ["", f"{key}: " + ", ".join(report[key])]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
