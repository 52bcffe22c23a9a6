"""The cost report of a finished run: every ticket measured on its test set, the savings against
the run's dense SNN and the dense ANN, tables (JSON, markdown) and the accuracy-vs-energy figure.

    python train/ticket.py report --workdir runs/ep

Which tickets: every edge-popup level, IMP round or dense run the workdir holds
(``jsnn.runs.tickets.find_tickets``), plus the edge-popup sweep's dense baseline (WORKDIR/dense).
The dense SNN the savings are measured against is the run's own trained dense network:
IMP's round 0, or the sweep's dense baseline; none if the run has neither. The best ticket
is the most accurate pruned one (ties: the cheaper).
"""
from __future__ import annotations

import os
import time

from jsnn import data as jdata
from jsnn import plots
from jsnn.efficiency.counting import EnergyModel, measure_dataset
from jsnn.runs.results import entry_label
from jsnn.runs.tickets import TICKET_FILE, find_tickets
from jsnn.sparsity.gated_synops import removed_channel_counts
from jsnn.ticket import TicketError, load_ticket

DENSE = "dense (weights trained)"
SUMMARY_COLUMNS = ("ticket", "method", "sparsity", "test acc.", "ACs / image", "MACs / image", "energy / image",
                   "vs unpruned", "vs dense SNN", "vs dense ANN", "firing rate", "footprint", "report s")


def run_tickets(workdir: str) -> list[str]:
    """The tickets a run holds, edge-popup's dense baseline (WORKDIR/dense) included."""
    found = find_tickets(workdir)
    dense = os.path.join(workdir, "dense", TICKET_FILE)
    if os.path.isfile(dense):
        found.append(dense)
    return found


def _method(ticket) -> str:
    """The method's label as its run stored it (tickets written before labels: by what they hold)."""
    info = ticket.info
    if "method_label" in info:
        return info["method_label"]
    if "round" in info:
        return "IMP"
    return "edge-popup" if "sparsity_target" in info else DENSE


def _label(ticket) -> str:
    info = ticket.info
    return info["label"] if "label" in info else entry_label(info, "dense")


def run_report(workdir: str, tickets: list[str] | None = None, energy: EnergyModel = EnergyModel(),
               batch_size: int | None = None) -> dict:
    """Measures every ticket of ``workdir`` (or the ``tickets`` given) on its test set."""
    paths = list(tickets) if tickets else run_tickets(workdir)
    if not paths:
        raise TicketError(f"{workdir} holds no tickets; point --workdir at a finished jsnn run "
                          "(every finished edge-popup level, IMP round and dense run writes one)")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    datasets, rows = {}, []
    for path in paths:
        ticket = load_ticket(path)
        key = (ticket.config.dataset, ticket.config.data_dir, ticket.config.frame_settings())
        if key not in datasets:
            datasets[key] = jdata.load_dataset(*key[:2], frames=key[2])
        start = time.perf_counter()
        cost = measure_dataset(ticket.model, ticket.variables, datasets[key],
                               batch_size=batch_size or ticket.config.batch_size, energy=energy)
        rows.append({"ticket": os.path.relpath(path, workdir), "label": _label(ticket),
                     "method": _method(ticket), "model": ticket.config.model,
                     "dataset": ticket.config.dataset, "sparsity": cost["connection_sparsity"],
                     "recorded_test_accuracy": ticket.info.get("test_accuracy"),
                     "report_seconds": time.perf_counter() - start, "efficiency": cost,
                     # neurons the ticket removed whole (fan-in and fan-out masked): jsnn.sparsity.gated_synops
                     "removed_channels": removed_channel_counts(ticket.variables.masks, ticket.model,
                                                                datasets[key].image_shape)})
    dense = [r for r in rows if r["method"] == DENSE] or [r for r in rows if r["label"] == "round 0"]
    reference = dense[0] if dense else None
    for r in rows:
        e = r["efficiency"]["energy_per_image_j"]
        r["saving_vs_dense_snn"] = (reference["efficiency"]["energy_per_image_j"] / e) if reference and e else None
    pruned = [r for r in rows if r is not reference and r["efficiency"]["connection_sparsity"] > 0] or rows
    best = max(pruned, key=lambda r: (r["efficiency"]["test_accuracy"], -r["efficiency"]["energy_per_image_j"]))
    return {"workdir": workdir, "energy_model": rows[0]["efficiency"]["energy_model"],
            "encoding": rows[0]["efficiency"]["encoding"], "dense_snn": reference["ticket"] if reference else None,
            "best": best["ticket"], "tickets": rows}


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, "")):
        if abs(value) < factor * 1000:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _count(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _ratio(value) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def summary_rows(report: dict) -> list[list[str]]:
    out = []
    for r in report["tickets"]:
        e = r["efficiency"]
        out.append([r["label"], r["method"], f"{100 * e['connection_sparsity']:.2f} %",
                    f"{100 * e['test_accuracy']:.2f} %", _count(e["synops_per_image"]), _count(e["macs_per_image"]),
                    _si(e["energy_per_image_j"], "J"),
                    _ratio(e["saving_vs_unpruned"]), _ratio(r["saving_vs_dense_snn"]), _ratio(e["saving_vs_ann"]),
                    f"{e['firing_rate']:.3f}", f"{e['footprint_bytes'] / 1000:.1f} kB",
                    f"{r['report_seconds']:.1f}"])
    return out


def layer_rows(efficiency: dict) -> tuple[list, list, list, list]:
    conn_header = ["layer", "shape", "input", "runs / image", "kept / weights", "conn. sparsity", "ACs / image",
                   "MACs / image", "dense / image", "energy / image"]
    conn = [[layer["layer"], layer["shape"], layer["input"], layer["runs_per_image"],
             f"{layer['kept_weights']} / {layer['weights']}", f"{100 * layer['connection_sparsity']:.2f} %",
             _count(layer["acs_per_image"]), _count(layer["macs_per_image"]), _count(layer["dense_ops_per_image"]),
             _si(layer["energy_per_image_j"], "J")] for layer in efficiency["layers"]]
    lif_header = ["LIF after", "shape", "spikes / image", "firing rate", "act. sparsity", "neuron updates / image",
                  "membrane updates / image"]
    lif = [[n["lif_after"], n["shape"], _count(n["spikes_per_image"]), f"{n['firing_rate']:.4f}",
            f"{100 * n['activation_sparsity']:.2f} %", _count(n["neuron_updates_per_image"]),
            _count(n["membrane_updates_per_image"])] for n in efficiency["neurons"]]
    return conn_header, conn, lif_header, lif


def markdown(report: dict) -> str:
    em = report["energy_model"]
    lines = [f"# What the tickets of {report['workdir']} cost", "",
             f"Per test image, over its {report['tickets'][0]['efficiency']['timesteps']} timesteps. "
             f"Energy: {em['e_ac_j'] * 1e12:g} pJ per AC, {em['e_mac_j'] * 1e12:g} pJ per MAC ({em['source']}). "
             f"{report['encoding'][0].upper() + report['encoding'][1:]}. "
             "'vs unpruned': the same spikes through every weight; "
             f"'vs dense SNN': the run's trained dense network ({report['dense_snn'] or 'none in this run'}), "
             "measured; 'vs dense ANN': one pass, every weight, MACs. Footprint: kept values plus a bitmask "
             "or CSR indices, whichever is smaller. 'report s': seconds this report spent on the ticket "
             "(the first one compiles the counting pass).", ""]
    lines += _table(SUMMARY_COLUMNS[:1] + SUMMARY_COLUMNS[1:], summary_rows(report))
    for r in report["tickets"]:
        e = r["efficiency"]
        ch, conn, lh, lif = layer_rows(e)
        lines += ["", f"## {r['label']} ({r['method']}, {r['ticket']})", "",
                  f"BN {_count(e['bn_ops_per_image'])}, pooling {_count(e['pool_ops_per_image'])}, "
                  f"bias {_count(e['bias_adds_per_image'])} operations per image (not in the energy); "
                  f"footprint {e['footprint']['dense_f32_bytes']} B dense f32, {e['footprint']['bitmask_bytes']} B "
                  f"bitmask, {e['footprint']['csr_bytes']} B CSR.", ""]
        removed = r.get("removed_channels") or {}
        if any(c["removed"] for c in removed.values()):
            lines += ["Removed channels (fan-in and fan-out all masked): " + ", ".join(
                f"{layer} {c['removed']} / {c['channels']}" for layer, c in removed.items()) + ".", ""]
        lines += _table(ch, conn) + [""] + _table(lh, lif)
    return "\n".join(lines) + "\n"


def figure(reports: list[dict], path: str) -> str:
    """Accuracy against energy per image, one line per method (over every report given), the
    dense ANN as a reference line."""
    curves: dict[str, list] = {}
    for report in reports:
        points: dict[str, list] = {}
        for r in report["tickets"]:
            points.setdefault(r["method"], []).append(
                (r["efficiency"]["energy_per_image_j"], r["efficiency"]["test_accuracy"]))
        for method, run in points.items():
            curves.setdefault(method, []).append(run)  # levels / rounds in order: seeds average point by point
    first = reports[0]["tickets"][0]
    return plots.accuracy_vs_energy(curves, path,
                                    references={"dense ANN": first["efficiency"]["ann_energy_per_image_j"]},
                                    title=f"{first['model']} on {first['dataset']}")
