"""Export a jsnn ticket to NIR, and check it spike for spike in jsnn, snnTorch and Norse.

    python train/export.py --workdir runs/ep                     # the last ticket of the run
    python train/export.py --workdir runs/ep --level 0.5 --out ticket.nir
    python train/export.py --workdir runs/imp --round 3 --check jsnn,snntorch,norse

Writes the NIR file (default: beside the ticket, ``.nir``), prints its size next to
the ticket's and the run's checkpoint, and, with ``--check``, runs the exported graph
on the test set in each simulator named and reports the fraction of
(image, layer, neuron, t) spikes and of predictions that agree with the jsnn ticket
(also written to ``OUT.check.json``). The simulators need ``pip install -e ".[nir]"``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flags import run_cleanly  # noqa: E402

from jsnn.interop.nir_export import NIR_DT  # noqa: E402

SIMULATORS = ("jsnn", "snntorch", "norse")


def directory_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def checkpoint_size(ticket_path: str, workdir: str) -> tuple[str, int] | None:
    """The newest orbax checkpoint (one step folder) of the run that wrote the ticket."""
    for folder in (os.path.dirname(ticket_path), workdir):
        ckpt = os.path.join(folder, "checkpoints")
        if os.path.isdir(ckpt):
            steps = [d for d in os.listdir(ckpt) if d.isdigit() and os.path.isdir(os.path.join(ckpt, d))]
            if steps:
                step = os.path.join(ckpt, max(steps, key=int))
                return step, directory_size(step)
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a finished jsnn run (edge-popup, IMP or dense)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--level", type=float, help="edge-popup sparsity level, e.g. 0.5")
    which.add_argument("--round", type=int, help="IMP round")
    p.add_argument("--out", help="the NIR file to write (default: beside the ticket, .nir)")
    p.add_argument("--dt", type=float, default=NIR_DT,
                   help="LIF time step the parameters are written for (snnTorch 1.0 assumes 1e-4)")
    p.add_argument("--check", default="",
                   help=f"comma-separated simulators to run the exported graph in: {', '.join(SIMULATORS)}")
    p.add_argument("--check-images", type=int, help="check on the first N test images (default: all)")
    p.add_argument("--soft-reset-as-hard", action="store_true",
                   help="export a soft-reset ticket with NIR's hard reset (not the same neuron; --check measures "
                        "the agreement left)")
    p.add_argument("--data-dir", help="where CIFAR lives (for the image statistics and the check)")
    p.add_argument("--drop-removed-channels", action="store_true",
                   help="leave out the channels the ticket removed whole (fan-in and fan-out all masked, e.g. by "
                        "sparse_training.py --algorithm energy); --check then checks the full graph and compares "
                        "the smaller one with it in snnTorch")
    args = p.parse_args()
    checks = [c for c in args.check.split(",") if c]
    unknown = sorted(set(checks) - set(SIMULATORS))
    if unknown:
        raise ValueError(f"--check {','.join(unknown)}: choose from {', '.join(SIMULATORS)}")
    if not os.path.isdir(args.workdir):
        raise FileNotFoundError(f"--workdir {args.workdir} does not exist; point it at a finished jsnn run")

    import nir

    from jsnn import data as jdata
    from jsnn.interop import to_nir
    from jsnn.metrics import log, write_json
    from jsnn.runs.tickets import select_ticket
    from jsnn.ticket import load_ticket

    ticket_path = select_ticket(args.workdir, args.level, args.round)
    ticket = load_ticket(ticket_path)
    dataset = jdata.load_dataset(ticket.config.dataset, args.data_dir or ticket.config.data_dir,
                                 frames=ticket.config.frame_settings())
    graph = to_nir(ticket.model, ticket.variables, dataset.image_shape, dataset.mean, dataset.std, dt=args.dt,
                   soft_reset_as_hard=args.soft_reset_as_hard)
    full = graph
    if args.drop_removed_channels:
        from jsnn.interop.channels import drop_removed_channels

        graph, removed = drop_removed_channels(graph, ticket.model, ticket.variables.masks, dataset.image_shape)
        log(f"removed channels left out: {', '.join(f'{k} {len(v)}' for k, v in removed.items()) or 'none'}")
    out = args.out or os.path.splitext(ticket_path)[0] + ".nir"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    nir.write(out, graph)
    sizes = {"nir_bytes": os.path.getsize(out), "ticket_bytes": os.path.getsize(ticket_path)}
    ckpt = checkpoint_size(ticket_path, args.workdir)
    log(f"wrote {out}: {len(graph.nodes)} nodes, {sizes['nir_bytes'] / 1024:.1f} KiB "
        f"(ticket {ticket_path}: {sizes['ticket_bytes'] / 1024:.1f} KiB"
        + (f"; orbax checkpoint {ckpt[0]}: {ckpt[1] / 1024:.1f} KiB)" if ckpt else ")"))
    if ckpt:
        sizes["checkpoint_bytes"] = ckpt[1]
    if not checks:
        return
    from jsnn.interop.check import check_export

    report = check_export(ticket.model, ticket.variables, full if graph is not full else nir.read(out), dataset,
                          checks, max_images=args.check_images)
    if graph is not full:
        from jsnn.interop.channels import compare_in_snntorch

        report["without_removed_channels"] = compare_in_snntorch(full, nir.read(out), dataset, args.check_images)
        log(f"without the removed channels, in snnTorch: "
            f"{report['without_removed_channels']['prediction_agreement']:.2%} of the full graph's predictions")
    report.update(sizes=sizes, ticket=ticket_path, nir=out, info=ticket.info)
    for name, r in report["simulators"].items():
        log(f"{name}: {r['spike_agreement']:.6%} of {r['spikes']} spikes agree, "
            f"{r['prediction_agreement']:.2%} of {r['images']} predictions, "
            f"accuracy {r['accuracy']:.4f} (jsnn ticket {report['jsnn_accuracy']:.4f})")
    write_json(out + ".check.json", report)


if __name__ == "__main__":
    run_cleanly(main)
