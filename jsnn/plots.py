"""Figures a paper would use: accuracy vs sparsity (paper Fig. 3 / Fig. 5 style), training curves."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from jsnn.metrics import is_primary


def pyplot():
    """matplotlib's pyplot on the file-only backend, imported at the first figure: a run without plots
    (``--no-plots``, a refused start, ``--help``) does not pay for importing it."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers or CI
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, title: str = "", dpi: float | str = "figure") -> str:
    """Adds ``title`` above all panels, lays out, writes ``path`` (creating its folder), closes."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if is_primary():  # one process writes each file
        fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def accuracy_vs_sparsity(curves: dict[str, Sequence[Sequence[tuple[float, float]]]], path: str, *,
                         dense_accuracy: float | None = None, x_axis: str = "sparsity",
                         title: str = "", dashed: Sequence[str] = ()) -> str:
    """One line per label; each label holds one or more runs (seeds) of (sparsity, accuracy) points.

    Several runs of a label are drawn as mean ± std at each sparsity. ``x_axis`` is
    "sparsity" (pruned %) or "remaining" (remaining %, log scale as in the paper's Fig. 5).
    Labels in ``dashed`` (controls) are drawn dashed.
    """
    plt = pyplot()
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=150)
    markers = "osD^v<>p*h"
    all_x: set[float] = set()
    for i, (label, runs) in enumerate(curves.items()):
        by_sparsity: dict[float, list[float]] = {}
        for run in runs:
            for s, acc in run:
                by_sparsity.setdefault(round(float(s), 6), []).append(100.0 * acc)
        xs = np.array(sorted(by_sparsity))
        mean = np.array([np.mean(by_sparsity[s]) for s in xs])
        std = np.array([np.std(by_sparsity[s]) for s in xs])
        xplot = 100.0 * (1.0 - xs) if x_axis == "remaining" else 100.0 * xs
        all_x.update(round(float(v), 2) for v in xplot)
        n = max(len(v) for v in by_sparsity.values())
        ax.plot(xplot, mean, marker=markers[i % len(markers)], ms=4, label=label + (f" (n={n})" if n > 1 else ""),
                ls="--" if label in dashed else "-")
        if n > 1:
            ax.fill_between(xplot, mean - std, mean + std, alpha=0.2)
    if dense_accuracy is not None:
        ax.axhline(100.0 * dense_accuracy, color="k", ls="--", lw=1, label="dense (weights trained)")
    if x_axis == "remaining":
        ax.set_xscale("log")
        ax.invert_xaxis()
        ticks = sorted(all_x)
        if len(ticks) > 10:  # keep the labels readable: every k-th point
            ticks = ticks[:: -(-len(ticks) // 10)]
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("remaining weights (%)")
    else:
        ax.set_xlabel("sparsity: weights removed (%)")
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def training_curves(records: list[dict], path: str, group_key: str | None = None, title: str = "") -> str:
    """Loss and accuracy per epoch from metrics.jsonl records, one line per group (round / level)."""
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=150)
    groups: dict = {}
    for r in records:
        groups.setdefault(r.get(group_key) if group_key else None, []).append(r)
    for g, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["epoch"])
        name = "" if g is None else f"{group_key} {g}"
        ax_loss.plot([r["epoch"] for r in rs], [r["loss"] for r in rs], label=name or None)
        test = [(r["epoch"], r["test_accuracy"]) for r in rs if "test_accuracy" in r]
        ax_acc.plot([r["epoch"] for r in rs], [100 * r["train_accuracy"] for r in rs], ls=":", alpha=0.7)
        if test:
            ax_acc.plot(*zip(*[(e, 100 * a) for e, a in test]), label=f"{name} test".strip())
    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("training loss"), ax_loss.set_yscale("log")
    ax_acc.set_xlabel("epoch"), ax_acc.set_ylabel("accuracy (%) (dotted: train)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if len(groups) > 1 and len(groups) <= 16:
        ax_acc.legend(fontsize=6)
    return save_figure(fig, path, title)


def accuracy_vs_energy(curves: dict[str, Sequence[Sequence[tuple[float, float]]]], path: str, *,
                       references: dict[str, float] | None = None, unit: float = 1e-9,
                       x_label: str = "energy per image (nJ)", title: str = "") -> str:
    """Accuracy against what a ticket costs per image (``jsnn.efficiency``): one line per label,
    each label one or more runs of (cost, accuracy) points in the same order (levels / rounds).

    Costs are divided by ``unit`` (1e-9: joules -> nJ; 1 for operation counts); several runs
    of a label are averaged point by point (cost and accuracy mean, accuracy ± std).
    ``references`` draws vertical lines, e.g. {"dense ANN": joules}.
    """
    plt = pyplot()
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=150)
    markers = "osD^v<>p*h"
    for i, (label, runs) in enumerate(curves.items()):
        length = min(len(r) for r in runs)
        cost = np.array([[r[k][0] for k in range(length)] for r in runs], float) / unit
        acc = 100.0 * np.array([[r[k][1] for k in range(length)] for r in runs], float)
        n = len(runs)
        ax.errorbar(cost.mean(0), acc.mean(0), yerr=acc.std(0) if n > 1 else None, marker=markers[i % len(markers)],
                    ms=4, capsize=2, label=label + (f" (n={n})" if n > 1 else ""))
    for j, (label, value) in enumerate((references or {}).items()):
        ax.axvline(value / unit, color="k", ls=("--", ":", "-.")[j % 3], lw=1, label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: no point hidden
    return save_figure(fig, path)
