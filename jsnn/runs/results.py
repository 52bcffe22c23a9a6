"""Reading finished runs back: their labels, and the figures that compare runs.

Every results.json names its method ("label") and every entry its level or round ("label") and
method ("method_label"), as the run wrote them; nothing here rebuilds a run's options to name it.
Results written before labels were stored fall back to the method's name.
"""
from __future__ import annotations

import os

from jsnn import plots
from jsnn.metrics import read_json
from jsnn.runs.workdir import RESULTS


def read_results(workdir: str) -> dict:
    results = read_json(os.path.join(workdir, RESULTS))
    if not results:
        raise FileNotFoundError(f"{workdir} has no {RESULTS}; point at a finished jsnn run")
    return results


def entry_label(entry: dict, default: str) -> str:
    """How tables name one results entry (or a ticket's info, which carries it): its round, its level (its
    sparsity target), else ``default``."""
    if "round" in entry:
        return f"round {entry['round']}"
    if "sparsity_target" in entry:
        return f"sparsity {entry['sparsity_target']:.2f}"
    return default


def run_label(results: dict) -> str:
    return results.get("label") or results.get("criterion") or results.get("method", "?")


def entries_figure(curves: dict[str, list[list[dict]]], path: str, title: str = "") -> str | None:
    """Accuracy against energy per image from results entries: one line per label, each label a
    list of runs (seeds), each run its results entries (levels / rounds) in order. Entries without
    an "efficiency" entry (no cost pass) are left out; None when no entry has one."""
    points = {label: [[(e["efficiency"]["energy_per_image_j"], e["test_accuracy"]) for e in run if "efficiency" in e]
                      for run in runs] for label, runs in curves.items()}
    points = {label: [r for r in runs if r] for label, runs in points.items()}
    points = {label: runs for label, runs in points.items() if runs}
    if not points:
        return None
    ann = next(e["efficiency"]["ann_energy_per_image_j"] for runs in curves.values() for run in runs for e in run
               if "efficiency" in e)
    return plots.accuracy_vs_energy(points, path, references={"dense ANN": ann}, title=title)


def compare_plot(workdirs: list[str], path: str, title: str = "IMP criteria") -> str:
    """Overlays finished runs (paper Fig. 5 style): one line per label, mean ± std over seeds;
    accuracy against energy per image beside it (PATH_energy.png). Controls are drawn dashed."""
    curves: dict[str, list] = {}
    entries: dict[str, list] = {}
    dashed = []
    for w in workdirs:
        r = read_results(w)
        label = run_label(r)
        curves.setdefault(label, []).append([(x["sparsity"], x["test_accuracy"]) for x in r["runs"]])
        entries.setdefault(label, []).append(r["runs"])
        if r.get("control") in ("reinit", "random") and label not in dashed:  # retrained tickets are not controls
            dashed.append(label)
    entries_figure(entries, os.path.splitext(path)[0] + "_energy.png", title=title)
    return plots.accuracy_vs_sparsity(curves, path, x_axis="remaining", title=title, dashed=dashed)
