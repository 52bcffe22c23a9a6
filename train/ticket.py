"""What the tickets of a finished run cost to run: synaptic operations, energy, firing, footprint.

    python train/ticket.py report --workdir runs/ep                  # every level / round of the run
    python train/ticket.py report --workdir runs/imp --ticket runs/imp/tickets/round_04.npz
    python train/ticket.py report --workdir runs/ep --e-ac 0.03e-12 --e-mac 0.2e-12   # 8-bit int, 45 nm

Measures every ticket on its test set (jsnn.efficiency: exact counts, one jitted pass per
batch), prints the summary and each ticket's per-layer table, and writes
OUT/efficiency.json, OUT/efficiency.md and OUT/accuracy_vs_energy.png (OUT = --out, default
the workdir). Energy per operation defaults to Horowitz 2014's 45 nm 32-bit float figures.
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
    r.add_argument("--workdir", required=True, help="a finished edge-popup, IMP or dense run")
    r.add_argument("--ticket", action="append", help="measure only this ticket file (repeatable)")
    r.add_argument("--e-ac", type=positive_joules, default=E_AC_J,
                   help=f"joules per accumulate (spike input), default {E_AC_J:g} (Horowitz 2014, 45 nm, fp32)")
    r.add_argument("--e-mac", type=positive_joules, default=E_MAC_J,
                   help=f"joules per multiply-accumulate (real input), default {E_MAC_J:g}")
    r.add_argument("--batch-size", type=int, help="images per jitted pass (default: the run's batch size)")
    r.add_argument("--out", help="where to write efficiency.json/.md and the figure (default: the workdir)")
    args = p.parse_args()

    from jsnn.efficiency import EnergyModel
    from jsnn.efficiency import report as R
    from jsnn.metrics import write_json

    if not os.path.isdir(args.workdir):
        raise FileNotFoundError(f"--workdir {args.workdir} does not exist; point it at a finished jsnn run")
    report = R.run_report(args.workdir, args.ticket, EnergyModel(args.e_ac, args.e_mac), args.batch_size)
    out = args.out or args.workdir
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "efficiency.json"), report)
    text = R.markdown(report)
    with open(os.path.join(out, "efficiency.md"), "w") as f:
        f.write(text)
    figure = R.figure(report, os.path.join(out, "accuracy_vs_energy.png"))
    print(text)
    best = next(t for t in report["tickets"] if t["ticket"] == report["best"])
    e = best["efficiency"]
    vs_dense = f"{best['saving_vs_dense_snn']:.2f}x" if best["saving_vs_dense_snn"] else "no dense run here"
    print(f"best ticket {best['label']} ({best['method']}): accuracy {100 * e['test_accuracy']:.2f} %, "
          f"{e['energy_per_image_j'] * 1e9:.4g} nJ per image; saving {vs_dense} against the dense SNN, "
          f"{e['saving_vs_ann']:.2f}x against the dense ANN")
    print(f"wrote {os.path.join(out, 'efficiency.json')}, {os.path.join(out, 'efficiency.md')}, {figure}")


if __name__ == "__main__":
    run_cleanly(main)
