"""Are two trees' runs the same? Runs every documented digits command (README, docs/*.md) with each tree's
code and compares what they leave: every ticket array byte for byte, each ticket's recorded entry, every
results.json, metrics.jsonl and config.json, value by value (timings and paths left out).

    python benchmarks/same_results.py --before 2cfd8a5 --after main --parallel \
        --explain benchmarks/same_results_explanations.json       # git revisions, exported apart
    python benchmarks/same_results.py --compare DIR_A DIR_B      # two finished sets of runs
    python benchmarks/same_results.py --reexplain benchmarks/results/same_results.json --explain FILE

The commands run on a short schedule (SCHEDULE: fewer epochs and rounds, the same flags on both sides), so
the whole comparison fits a shared 2-core machine; it checks that the code computes the same, not the
documented accuracies. A program or flag an older tree lacks is recorded ("not in the before tree"), as is a
run that fails; neither stops the others.

A key only one side writes (a later version records more) is listed apart from a value that changed.
``--explain FILE`` (JSON: {"files": {"run[/file pattern]": "commit: why"}, "keys": {"key pattern": "commit:
why"}}) attaches the reason for each expected difference; a difference no entry explains is counted as
unexplained and the run exits 1, as it does when two names of one run (SAME_AS) leave different files.

Writes benchmarks/results/same_results.{json,md}: both commits, the machine, every command and how it went
on each side, every file compared, and the differences with their explanation.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import shared_machine  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "results", "same_results")

# The short schedule every command runs on, on both sides (the documented commands run their presets' epochs
# on the full-width network at T = 4): 2 epochs per run or IMP round on the comparison's network (digits CNN
# at width 0.5, T = 2; docs/comparison.md), 3 IMP rounds (2 for its criterion, structured, config and
# digits_dvs variants), the energy and Shi methods 2 search epochs and 1 finetune epoch. The energy budget is
# the comparison's failing cell's (about the SynOps of IMP's 97.44 % ticket, issue 32).
SCHEDULE = ("--epochs", "2", "--width", "0.5", "-T", "2")
DIGITS = ("--dataset", "digits")
DVS = ("--dataset", "digits_dvs")
ENERGY = ("--synops-budget", "3300", "--finetune-epochs", "1")

# name -> (program, arguments): every documented command on digits and digits_dvs. {NAME} is the workdir
# of the command NAME (run before it).
COMMANDS: dict[str, tuple[str, ...]] = {
    # dense (README, docs/events.md)
    "dense": ("train/dense.py",),
    # edge-popup: a sweep with the dense baseline, its random floor, N:M (README, docs/methods.md)
    "ep": ("train/edge_popup.py", "--sparsity", "0.5,0.9", "--dense-baseline", "train"),
    "ep_floor": ("train/edge_popup.py", "--sparsity", "0.5,0.9", "--control", "random"),
    "ep_nm": ("train/edge_popup.py", "--sparsity-type", "2:4"),
    # IMP, SF-IMP-1, SF-IMP-2, the controls, early-bird (README, docs/methods.md)
    "imp": ("train/imp.py", *DIGITS, "--rounds", "3"),
    "sf1": ("train/imp.py", *DIGITS, "--rounds", "3", "--criterion", "sf"),
    "sf2": ("train/imp.py", *DIGITS, "--rounds", "3", "--criterion", "sf", "--dns"),
    "reinit": ("train/imp.py", *DIGITS, "--rounds", "3", "--control", "reinit", "--ticket", "{imp}"),
    "random": ("train/imp.py", *DIGITS, "--rounds", "3", "--control", "random", "--ticket", "{imp}"),
    "eb": ("train/imp.py", *DIGITS, "--rounds", "3", "--early-bird", "--early-bird-window", "2",
           "--early-bird-threshold", "0.2"),
    "eb_ticket": ("train/imp.py", *DIGITS, "--rounds", "3", "--control", "ticket", "--ticket", "{eb}"),
    # IMP with another criterion and distribution, structured masks (README)
    "imp_snip": ("train/imp.py", *DIGITS, "--rounds", "2", "--criterion", "snip", "--scope", "global"),
    "imp_random_erk": ("train/imp.py", *DIGITS, "--rounds", "2", "--criterion", "random", "--scope", "erk"),
    "imp_channel": ("train/imp.py", *DIGITS, "--rounds", "2", "--sparsity-type", "channel"),
    "imp_nm": ("train/imp.py", *DIGITS, "--rounds", "2", "--sparsity-type", "2:4"),
    # an experiment config in the ml_collections form (README, configs/digits.py)
    "imp_config": ("train/imp.py", "--config", "configs/digits.py:imp", "--config.rounds=2"),
    # sparse training from scratch and static pruning at initialisation (README, docs/methods.md)
    "set": ("train/sparse_training.py", "--algorithm", "set", "--sparsity", "0.9", "--distribution", "uniform"),
    "rigl": ("train/sparse_training.py", "--algorithm", "rigl", "--sparsity", "0.9"),
    "snip": ("train/sparse_training.py", "--algorithm", "static", "--criterion", "snip", "--sparsity", "0.9"),
    "static_random": ("train/sparse_training.py", "--algorithm", "static", "--criterion", "random",
                      "--distribution", "erk", "--sparsity", "0.9"),
    "static_magnitude": ("train/sparse_training.py", "--algorithm", "static", "--criterion", "magnitude",
                         "--sparsity", "0.9"),
    # the energy method, under both names the docs give it (README, docs/methods.md)
    "energy": ("train/sparse_training.py", "--algorithm", "energy", *ENERGY),
    "energy_program": ("train/energy.py", *ENERGY),
    # Shi et al.'s mask learning as published (issue 32 item 1; "not in this tree" where train/shi.py is not)
    "shi": ("train/shi.py", *DIGITS, "--finetune-epochs", "1"),
    "shi_alias": ("train/sparse_training.py", "--algorithm", "shi", "--finetune-epochs", "1"),
    # event data, simulated offline (docs/events.md)
    "dvs_dense": ("train/dense.py", *DVS),
    "dvs_ep": ("train/edge_popup.py", *DVS),
    "dvs_imp": ("train/imp.py", *DVS, "--rounds", "2"),
    "dvs_rigl": ("train/sparse_training.py", *DVS, "--algorithm", "rigl"),
}
# the config file sets its own schedule (its keys); early-bird needs more epochs than its window to stop early
SCHEDULE_BY_COMMAND = {"imp_config": ("--config.epochs=2", "--config.width=0.5", "--config.timesteps=2"),
                       "eb": ("--epochs", "3", "--width", "0.5", "-T", "2")}
# commands that are another name of the same run: within one tree their files must be identical
SAME_AS = {"energy_program": "energy", "shi_alias": "shi"}

IGNORED = ("seconds", "images_per_sec", "source", "ticket_dir", "workdir")  # timings and paths: key substrings
COMPARED_FILES = ("results.json", "metrics.jsonl", "config.json")
LISTED = 12  # value differences listed per file (all are counted)


def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items() if not any(s in k for s in IGNORED)}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


def load_run(root: str) -> dict[str, object]:
    """{file[:array]: value} of every ticket array (bytes, shape, dtype), ticket entry, results.json,
    metrics.jsonl and config.json under ``root`` (checkpoints and TensorBoard files left out)."""
    out: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "tensorboard", ".cache"))
        for f in sorted(files):
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, root)
            try:
                if f.endswith(".npz"):
                    with np.load(path) as z:
                        for k in sorted(z.files):
                            if k == "__meta__":  # the ticket's results entry and its configuration
                                meta = json.loads(bytes(z[k]).decode())
                                out[f"{rel}:info"] = clean(meta.get("info", {}))
                                out[f"{rel}:config"] = clean(meta.get("config", {}))
                            else:
                                out[f"{rel}:{k}"] = np.array(z[k])
                elif f in ("results.json", "config.json"):
                    with open(path) as fh:
                        out[rel] = clean(json.load(fh))
                elif f == "metrics.jsonl":
                    with open(path) as fh:
                        out[rel] = [clean(json.loads(line)) for line in fh if line.strip()]
            except (OSError, ValueError) as e:  # a damaged file is itself a difference
                out[rel] = f"unreadable: {e}"
    return out


def diff_values(a, b, path: str = "") -> tuple[list[dict], list[str], list[str]]:
    """(changed values [{path, before, after}], keys only in a, keys only in b) between two JSON values."""
    changed, only_a, only_b = [], [], []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}/{k}" if path else str(k)
            if k not in b:
                only_a.append(p)
            elif k not in a:
                only_b.append(p)
            else:
                c, oa, ob = diff_values(a[k], b[k], p)
                changed += c
                only_a += oa
                only_b += ob
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            c, oa, ob = diff_values(x, y, f"{path}/{i}" if path else str(i))
            changed += c
            only_a += oa
            only_b += ob
    elif not _equal(a, b):
        changed.append({"path": path, "before": _short(a), "after": _short(b)})
    return changed, sorted(set(only_a)), sorted(set(only_b))


def _equal(a, b) -> bool:
    """JSON values alike: NaN equals NaN, 2 equals 2.0, True does not equal 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (a != a and b != b)
    return type(a) is type(b) and a == b


def _short(x):
    text = json.dumps(x)
    return x if len(text) <= 120 else text[:117] + "..."


def diff_arrays(a: np.ndarray, b: np.ndarray) -> dict | None:
    """None when ``a`` and ``b`` are the same bytes of the same shape and dtype, else what differs."""
    if a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == \
            np.ascontiguousarray(b).tobytes():
        return None
    if a.shape != b.shape or a.dtype != b.dtype:
        return {"before": f"{a.dtype}{list(a.shape)}", "after": f"{b.dtype}{list(b.shape)}"}
    ne = a != b if a.dtype.kind not in "fc" else ~((a == b) | (np.isnan(a) & np.isnan(b)))
    out = {"elements_different": int(ne.sum()), "elements": int(a.size)}
    if a.dtype.kind in "fc" and ne.any():
        out["max_abs_difference"] = float(np.max(np.abs(a[ne].astype(np.float64) - b[ne].astype(np.float64))))
    if a.dtype == bool or set(np.unique(a).tolist()) <= {0, 1}:  # a mask: how many kept on each side
        out["kept_before"], out["kept_after"] = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    return out


def compare(a: str, b: str) -> dict:
    """Every file and array under ``a`` against the same under ``b``, command by command (the top folders)."""
    ra, rb = load_run(a), load_run(b)
    files = []
    for key in sorted(set(ra) | set(rb)):
        entry = {"file": key}
        if key not in rb:
            entry["status"] = "only_before"
        elif key not in ra:
            entry["status"] = "only_after"
        elif isinstance(ra[key], np.ndarray) or isinstance(rb[key], np.ndarray):
            d = diff_arrays(np.asarray(ra[key]), np.asarray(rb[key]))
            entry["status"] = "identical" if d is None else "different"
            if d is not None:
                entry["array"] = d
        else:
            changed, only_a, only_b = diff_values(ra[key], rb[key])
            if changed:
                entry["status"] = "different"
                entry["values_different"] = len(changed)
                entry["values"] = changed[:LISTED]
            else:
                entry["status"] = "identical" if not (only_a or only_b) else "same_values_keys_differ"
            if only_a:
                entry["keys_only_before"] = collapse(only_a)
            if only_b:
                entry["keys_only_after"] = collapse(only_b)
        files.append(entry)
    return {"files": files, "counts": _counts(files)}


def collapse(paths: list[str]) -> list[str]:
    """Key paths with list positions as ``*`` (``3/synops_per_image`` -> ``*/synops_per_image``), each once."""
    return sorted({"/".join("*" if part.isdigit() else part for part in p.split("/")) for p in paths})


def _counts(files: list[dict]) -> dict[str, int]:
    counts = {"compared": sum(f["status"] not in ("only_before", "only_after") for f in files)}
    for status in ("identical", "same_values_keys_differ", "different", "only_before", "only_after"):
        counts[status] = sum(f["status"] == status for f in files)
    return counts


def explain(files: list[dict], explanations: dict, went: dict) -> None:
    """Attach to each file that is not identical why: the command did not run on one side (its program or
    flag not in that tree), else ``explanations["files"]``' first pattern matching ``command/file``
    (fnmatch; a bare command name matches all its files) for changed values, and for keys only one side
    writes ``explanations["keys"]``' patterns, each such key matched."""
    by_file, by_key = explanations.get("files", {}), explanations.get("keys", {})
    for f in files:
        if f["status"] == "identical":
            continue
        command = f["file"].split("/")[0]
        missing = [w for w in (went.get("before", {}).get(command), went.get("after", {}).get(command))
                   if w and w["status"] in ("not_in_tree", "flag_not_in_tree")]
        if missing and f["status"] in ("only_before", "only_after"):
            f["explained"] = missing[0]["why"]
            continue
        if f["status"] != "same_values_keys_differ":  # changed values: the run's or file's reason covers all
            reasons = [why for pattern, why in by_file.items()
                       if fnmatch.fnmatch(f["file"], pattern) or fnmatch.fnmatch(f["file"], pattern + "/*")]
            if reasons:
                f["explained"] = reasons[0]
            continue
        keys = f.get("keys_only_before", []) + f.get("keys_only_after", [])
        key_reasons = [next((why for pattern, why in by_key.items() if fnmatch.fnmatch(k, pattern)), None)
                       for k in keys]
        if None not in key_reasons:
            f["explained"] = "; ".join(dict.fromkeys(key_reasons))


def same_as(runs: str) -> list[dict]:
    """Each SAME_AS pair in one tree's runs: the files of one name against the other's (identical expected)."""
    out = []
    for name, other in SAME_AS.items():
        a, b = os.path.join(runs, other), os.path.join(runs, name)
        if os.path.isdir(a) and os.path.isdir(b):
            files = compare(a, b)["files"]
            out.append({"run": name, "as": other, "files": len(files),
                        "identical": sum(f["status"] == "identical" for f in files),
                        "not_identical": [f for f in files if f["status"] != "identical"]})
    return out


# ------------------------------------------------------------------------------------------ running


def side_argv(name: str, tree: str, runs: str) -> list[str]:
    program, *arguments = COMMANDS[name]
    schedule = SCHEDULE_BY_COMMAND.get(name, SCHEDULE)
    arguments = [a.format(**{n: os.path.join(runs, n) for n in COMMANDS}) for a in arguments]
    return [program, *arguments, *schedule, "--workdir", os.path.join(runs, name), "--no-progress", "--no-plots"]


def run_side(tree: str, runs: str, names: list[str], side: str) -> dict[str, dict]:
    """Each command in ``names`` with the code of ``tree``, its runs under ``runs``: {name: how it went}."""
    os.makedirs(runs, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": tree, "JSNN_COMPILATION_CACHE": os.path.join(runs, ".cache")}
    went = {}
    for name in names:
        argv = side_argv(name, tree, runs)
        needs = [n for n in COMMANDS if "{" + n + "}" in COMMANDS[name]]
        if not os.path.exists(os.path.join(tree, argv[0])):
            went[name] = {"status": "not_in_tree", "why": f"{argv[0]} is not in the {side} tree"}
        elif any(went.get(n, {}).get("status") != "ran" for n in needs):
            went[name] = {"status": "not_run", "why": f"needs {', '.join(needs)}, which did not run"}
        else:
            t0 = time.time()
            proc = subprocess.run([sys.executable, *argv], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            seconds = round(time.time() - t0, 1)
            last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or [""]
            if proc.returncode == 0:
                went[name] = {"status": "ran", "seconds": seconds}
            elif proc.returncode == 2 and ("unrecognized arguments" in proc.stderr or "invalid choice" in
                                           proc.stderr or "error: argument" in proc.stderr):
                went[name] = {"status": "flag_not_in_tree", "why": f"{side} tree: {last[0].strip()}",
                              "seconds": seconds}
            else:
                went[name] = {"status": "failed", "exit": proc.returncode, "why": last[0].strip()[-400:],
                              "seconds": seconds}
        print(f"[{side}] {name}: {went[name]['status']} {went[name].get('seconds', '')} s "
              f"{went[name].get('why', '')}", flush=True)
    return went


def export(revision: str, where: str) -> str:
    """The tree of ``revision`` written to ``where`` (git archive: no worktree, nothing left in .git)."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", revision], check=True, capture_output=True,
                            text=True).stdout.strip()
    os.makedirs(where)
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", where], input=archive, check=True)
    return commit


def load_average() -> list[float] | None:
    try:
        return [round(x, 1) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------------------ report


def markdown(report: dict) -> list[str]:
    c = report["counts"]
    lines = [f"`{report['command']}`", "", f"Machine: {report['machine']}; load average {report.get('load_before')} "
             f"before, {report.get('load_after')} after. Before {report['before']}, after {report['after']}.", "",
             f"Schedule: {report['schedule']}.", "",
             f"{c['compared']} files and arrays compared: {c['identical']} identical, {c['same_values_keys_differ']} "
             f"with the same values but keys only one side writes, {c['different']} with different values; "
             f"{c['only_before']} only before, {c['only_after']} only after. Not identical: "
             f"{c['explained']} explained, {c['unexplained']} not.", "",
             "| run | command | before | after | files | identical | not identical |", "|---|---|---|---|---|---|---|"]
    for name, row in report["commands"].items():
        lines.append(f"| {name} | `{row['command']}` | {_went(row['before'])} | {_went(row['after'])} | "
                     f"{row['files']} | {row['identical']} | {row['different']} |")
    for check in report.get("same_as", []):
        lines += ["", f"{check['side']} tree: `{check['run']}` against `{check['as']}` (another name of the same "
                  f"run): {check['identical']} of {check['files']} files identical"
                  + "".join(f"; {f['file']} {f['status']}: {_what(f)}" for f in check["not_identical"])]
    groups: dict[str, list[dict]] = {}
    for f in report["files"]:
        if f["status"] != "identical":
            groups.setdefault(f.get("explained", "**not explained**"), []).append(f)
    if groups:
        lines += ["", "| why not identical | files | runs | what differs (first file) |", "|---|---|---|---|"]
        for why, fs in groups.items():
            statuses = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in
                                 sorted({s: sum(f["status"] == s for f in fs) for s in {f["status"] for f in fs}}
                                        .items()))
            runs = ", ".join(dict.fromkeys(f["file"].split("/")[0] for f in fs))
            shown = next((f"{f['file']}: {_what(f)}" for f in fs if _what(f)), "")
            lines.append(f"| {why} | {len(fs)} ({statuses}) | {runs} | {shown} |")
    return lines


def _went(w: dict | None) -> str:
    if not w:
        return "–"
    if w["status"] == "ran":
        return f"ran ({w['seconds']:.0f} s)"
    return f"{w['status'].replace('_', ' ')}: {w.get('why', '')}".replace("|", "/")


def _what(f: dict) -> str:
    if "array" in f:
        return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in f["array"].items())
    parts = []
    if f.get("values_different"):
        shown = "; ".join(f"{v['path']}: {v['before']} → {v['after']}" for v in f["values"][:2])
        parts.append(f"{f['values_different']} values ({shown})")
    for key in ("keys_only_before", "keys_only_after"):
        if f.get(key):
            parts.append(f"{key.replace('_', ' ')}: " + ", ".join(f[key][:4]) + (" ..." if len(f[key]) > 4 else ""))
    return "; ".join(parts).replace("|", "/")


def summarise(report: dict, explanations: dict, went: dict | None = None) -> dict:
    explain(report["files"], explanations, went or {})
    counts = _counts(report["files"])
    notsame = [f for f in report["files"] if f["status"] != "identical"]
    counts["explained"] = sum("explained" in f for f in notsame)
    counts["unexplained"] = sum("explained" not in f for f in notsame)
    report["counts"] = counts
    for name, row in report["commands"].items():
        mine = [f for f in report["files"] if f["file"].split("/")[0] == name]
        row["files"] = len(mine)
        row["identical"] = sum(f["status"] == "identical" for f in mine)
        row["different"] = len(mine) - row["identical"]
    return report


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="git revision")
    p.add_argument("--after", default="HEAD", help="git revision")
    p.add_argument("--compare", nargs=2, metavar="DIR", help="compare two finished sets of runs instead")
    p.add_argument("--only", help="comma-separated command names (default: all)")
    p.add_argument("--parallel", action="store_true", help="run the before and after sides at the same time")
    p.add_argument("--keep", metavar="DIR", help="run into DIR and keep the runs (default: a temporary folder)")
    p.add_argument("--explain", metavar="FILE", help='JSON {"files": {"run[/file pattern]": "commit: why"}, '
                   '"keys": {"key path pattern": "commit: why"}}')
    p.add_argument("--reexplain", metavar="REPORT", help="a finished report (.json): explain its differences again "
                   "with --explain, nothing rerun")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(COMMANDS)
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        p.error(f"--only: unknown commands {unknown}; known: {', '.join(COMMANDS)}")
    explanations = {}
    if args.explain:
        with open(args.explain) as f:
            explanations = json.load(f)
    report = {"command": "python benchmarks/same_results.py " + " ".join(sys.argv[1:]),
              "machine": shared_machine("timings noisy; only the values are compared"),
              "schedule": "short, the same flags on both sides: every command with `" + " ".join(SCHEDULE)
              + "` appended (2 epochs per run or IMP round, the comparison's network: digits CNN at width 0.5, "
              "T = 2), " + "; ".join(f"{n} with `{' '.join(s)}` instead" for n, s in SCHEDULE_BY_COMMAND.items())
              + "; IMP 3 rounds (2 for its criterion, structured, config and digits_dvs variants); the energy "
              "and Shi methods 1 finetune epoch, the energy budget 3300 SynOps (about IMP's at 97.44 %); the "
              "documented commands' own schedules are longer",
              "load_before": load_average()}
    went = {"before": {}, "after": {}}
    if args.reexplain:
        with open(args.reexplain) as f:
            report = json.load(f)
        for f in report["files"]:
            f.pop("explained", None)
        went = {side: {name: row[side] for name, row in report["commands"].items() if row[side]} for side in went}
        report["explained_by"] = args.explain
        report["explain_command"] = "python benchmarks/same_results.py " + " ".join(sys.argv[1:])
        write_report(summarise(report, explanations, went), args.out)
        return
    if args.compare:
        report.update(before=args.compare[0], after=args.compare[1])
        report.update(compare(*args.compare))
        report["same_as"] = [{"side": side, **check} for side, runs in zip(went, args.compare)
                             for check in same_as(runs) if check["run"] in names]
    elif args.before:
        base = args.keep or tempfile.mkdtemp(prefix="same_results_")
        trees = {side: os.path.join(base, f"tree_{side}") for side in went}
        runs = {side: os.path.join(base, f"runs_{side}") for side in went}
        report.update(before=export(args.before, trees["before"]), after=export(args.after, trees["after"]))
        t0 = time.time()
        threads = [threading.Thread(target=lambda s=side: went[s].update(run_side(trees[s], runs[s], names, s)))
                   for side in went]
        if args.parallel:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            for t in threads:
                t.start()
                t.join()
        report["wall_seconds"] = round(time.time() - t0)
        report.update(compare(runs["before"], runs["after"]))
        report["same_as"] = [{"side": side, **check} for side in went for check in same_as(runs[side])]
        report["kept"] = base if args.keep else None
    else:
        p.error("give --before REV (and --after REV), or --compare DIR_A DIR_B")
    report["files"] = [f for f in report["files"] if f["file"].split("/")[0] in names]
    report["load_after"] = load_average()
    report["commands"] = {name: {"command": "python " + " ".join(COMMANDS[name] + SCHEDULE_BY_COMMAND.get(name,
                                                                                                       SCHEDULE)),
                                 "before": went["before"].get(name), "after": went["after"].get(name)}
                          for name in names}
    report["explained_by"] = args.explain
    write_report(summarise(report, explanations, went), args.out)


def write_report(report: dict, out: str) -> None:
    """``out``.json and .md; exits 1 when a difference is not explained or two names of one run differ."""
    lines = markdown(report)
    with open(out + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    aliases_differ = any(check["not_identical"] for check in report.get("same_as", []))
    sys.exit(0 if not (report["counts"]["unexplained"] or aliases_differ) else 1)


if __name__ == "__main__":
    main()

