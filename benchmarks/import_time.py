"""What a program's start-up spends importing, from ``python -X importtime``.

    python benchmarks/import_time.py [--runs 5] [--out PATH]

Runs ``python -X importtime -c "import jsnn.runs.imp"`` (what ``train/imp.py`` imports before its first line)
``--runs`` times in fresh interpreters and reports the median total and the modules whose own import (the
module alone, ``self``) took longest, with the installed versions of jax, numpy and ml_dtypes. ml_dtypes 0.7.0
spent about half a second in its extension's initialisation (``_ml_dtypes_ext``), 0.6.0 a tenth of that:
pyproject.toml pins the version (benchmarks/results/import_time*.json).
"""
from __future__ import annotations

import argparse
import collections
import importlib.metadata
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import git_commit, shared_machine, write_results  # noqa: E402

STATEMENT = "import jsnn.runs.imp"


def one_run() -> tuple[float, dict[str, float]]:
    """(total seconds, {module: its own seconds}) of one fresh interpreter importing STATEMENT."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", STATEMENT], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, check=True)
    own, total = {}, 0.0
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|")
        own[name.strip()] = int(self_us) / 1e6
        if not name[1:].startswith(" "):  # a top-level import (no indent): its cumulative time adds to the total
            total += int(cumulative_us) / 1e6
    return total, own


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "import_time"))
    args = p.parse_args()
    totals, own = [], collections.defaultdict(list)
    for _ in range(args.runs):
        total, modules = one_run()
        totals.append(total)
        for name, seconds in modules.items():
            own[name].append(seconds)
    median_own = {name: statistics.median(v) for name, v in own.items()}
    top = sorted(median_own.items(), key=lambda kv: -kv[1])[:args.top]
    versions = {d: importlib.metadata.version(d) for d in ("jax", "numpy", "ml_dtypes")}
    record = {"command": " ".join(["python benchmarks/import_time.py"] + sys.argv[1:]), "commit": git_commit(),
              "machine": shared_machine("medians of fresh interpreters"), "statement": STATEMENT,
              "versions": versions, "total_s": statistics.median(totals), "totals_s": totals,
              "slowest_own_s": dict(top)}
    lines = [f"`python -X importtime -c \"{STATEMENT}\"`, median of {args.runs} fresh interpreters: "
             f"**{record['total_s']:.2f} s**; " + ", ".join(f"{k} {v}" for k, v in versions.items())
             + f". {record['machine']}; commit {record['commit']}.", "",
             "| module (its own import) | s |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in top]
    write_results(args.out, record, lines)


if __name__ == "__main__":
    main()
