"""What the tickets of a finished run cost to run: synaptic operations, energy, firing, footprint.

    python train/ticket.py report --workdir runs/ep                  # every level / round of the run
    python train/ticket.py report --workdir runs/imp --ticket runs/imp/tickets/round_04.npz
    python train/ticket.py report --workdir runs/ep --e-ac 0.03e-12 --e-mac 0.2e-12   # 8-bit int, 45 nm
    python train/ticket.py report --workdir runs/ep --workdir runs/imp --out fig_dir  # methods side by side

Measures every ticket on its test set (jsnn.efficiency: exact counts, one jitted pass per
batch), prints the summary and each ticket's per-layer table, and writes
OUT/efficiency.json, OUT/efficiency.md and OUT/accuracy_vs_energy.png (OUT = --out, default
the workdir; several workdirs need --out and share one figure, one curve per method).
Energy per operation defaults to Horowitz 2014's 45 nm 32-bit float figures.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flags import run_cleanly  # noqa: E402

from jsnn.efficiency.counting import E_AC_J, E_MAC_J  # noqa: E402


def positive_joules(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected energy in joules, e.g. 0.9e-12; got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"energy per operation must be a finite number >= 0 (joules), got {text}")
    return value


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="the cost of every ticket of a finished run")
    r.add_argument("--workdir", required=True, action="append",
                   help="a finished edge-popup, IMP or dense run (repeatable: methods side by side)")
    r.add_argument("--ticket", action="append", help="measure only this ticket file (repeatable; one workdir)")
    r.add_argument("--e-ac", type=positive_joules, default=E_AC_J,
                   help=f"joules per accumulate (spike input), default {E_AC_J:g} (Horowitz 2014, 45 nm, fp32)")
    r.add_argument("--e-mac", type=positive_joules, default=E_MAC_J,
                   help=f"joules per multiply-accumulate (real input), default {E_MAC_J:g}")
    r.add_argument("--batch-size", type=int, help="images per jitted pass (default: the run's batch size)")
    r.add_argument("--out", help="where to write efficiency.json/.md and the figure (default: the workdir)")
    args = p.parse_args()

    from jsnn.efficiency import EnergyModel
    from jsnn.metrics import write_json
    from jsnn.runs import report as R

    if len(args.workdir) > 1 and not args.out:
        raise ValueError("several --workdir need --out (the folder for the shared tables and figure)")
    if len(args.workdir) > 1 and args.ticket:
        raise ValueError("--ticket goes with a single --workdir")
    for w in args.workdir:
        if not os.path.isdir(w):
            raise FileNotFoundError(f"--workdir {w} does not exist; point it at a finished jsnn run")
    energy = EnergyModel(args.e_ac, args.e_mac)
    reports = [R.run_report(w, args.ticket, energy, args.batch_size) for w in args.workdir]
    out = args.out or args.workdir[0]
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "efficiency.json"), reports[0] if len(reports) == 1 else {"runs": reports})
    text = "\n".join(R.markdown(r) for r in reports)
    with open(os.path.join(out, "efficiency.md"), "w") as f:
        f.write(text)
    figure = R.figure(reports, os.path.join(out, "accuracy_vs_energy.png"))
    print(text)
    for report in reports:
        best = next(t for t in report["tickets"] if t["ticket"] == report["best"])
        e = best["efficiency"]
        vs_dense = f"{best['saving_vs_dense_snn']:.2f}x" if best["saving_vs_dense_snn"] else "no dense run here"
        print(f"{report['workdir']}: best ticket {best['label']} ({best['method']}): accuracy "
              f"{100 * e['test_accuracy']:.2f} %, {e['energy_per_image_j'] * 1e9:.4g} nJ per image; saving "
              f"{vs_dense} against the dense SNN, {e['saving_vs_ann']:.2f}x against the dense ANN")
    print(f"wrote {os.path.join(out, 'efficiency.json')}, {os.path.join(out, 'efficiency.md')}, {figure}")

if __name__ == "__main__":
    run_cleanly(main)
