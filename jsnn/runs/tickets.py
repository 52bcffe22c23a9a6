"""Where runs put their tickets, and recording one when a level or round finishes.

    dense run            WORKDIR/ticket.npz
    edge-popup level     WORKDIR/sparsity_0.50/ticket.npz
    IMP round k          WORKDIR/tickets/round_03.npz
    IMP rewind point     WORKDIR/tickets/rewind.npz (masks all ones: what random-mask controls rewind to)

The file format is ``jsnn.ticket``.
"""
from __future__ import annotations

import glob
import os

from jsnn.efficiency import ticket_entry
from jsnn.metrics import is_primary
from jsnn.ticket import TicketError, save_ticket
from jsnn.training_rules import masks_in_use
from jsnn.variables import Variables

TICKET_FILE = "ticket.npz"


def round_path(workdir: str, round_index: int) -> str:
    return os.path.join(workdir, "tickets", f"round_{round_index:02d}.npz")


def rewind_path(workdir: str) -> str:
    """Where a ticket run keeps its rewind point (weights, BN, statistics; masks all ones)."""
    return os.path.join(workdir, "tickets", "rewind.npz")


def level_name(sparsity: float) -> str:
    """The folder of an edge-popup level inside the sweep's workdir."""
    return f"sparsity_{sparsity:.2f}"


def level_dir(workdir: str, sparsity: float) -> str:
    """An edge-popup level's own workdir inside the sweep's."""
    return os.path.join(workdir, level_name(sparsity))


def find_tickets(workdir: str) -> list[str]:
    """Every ticket of a run: edge-popup levels by sparsity, IMP rounds in order, or the dense run."""
    found = sorted(glob.glob(os.path.join(workdir, "sparsity_*", TICKET_FILE)))
    found += sorted(glob.glob(os.path.join(workdir, "tickets", "round_*.npz")))
    if os.path.isfile(os.path.join(workdir, TICKET_FILE)):
        found.append(os.path.join(workdir, TICKET_FILE))
    return found


def select_ticket(workdir: str, level: float | None = None, round_index: int | None = None) -> str:
    """The ticket of ``--level`` (edge-popup sparsity) or ``--round`` (IMP); default the last one."""
    if level is not None:
        path = os.path.join(level_dir(workdir, level), TICKET_FILE)
    elif round_index is not None:
        path = round_path(workdir, round_index)
    else:
        found = find_tickets(workdir)
        if not found:
            raise TicketError(f"{workdir} holds no tickets; point --workdir at a finished jsnn run")
        path = found[-1]
    if not os.path.isfile(path):
        have = ", ".join(os.path.relpath(p, workdir) for p in find_tickets(workdir)) or "none"
        raise TicketError(f"no ticket at {path} (this workdir has: {have})")
    return path


def variables_of(state, rule) -> Variables:
    """The variables a trained state's forward pass runs on (masks, and per-neuron gates, as the training
    rule applies them)."""
    return Variables(state.weights, masks_in_use(rule, state.masks, state.scores), state.bn,
                     state.batch_stats, rule.effective_gates(state.scores))


def write_ticket(path: str, config, num_classes: int, state, rule, entry: dict) -> None:
    """Saves a finished level's / round's ticket, its results entry as the ticket's info (process 0)."""
    if is_primary():
        save_ticket(path, config, num_classes, variables_of(state, rule), entry)


def ticket_cost(config, num_classes: int, state, rule, dataset) -> dict:
    """What the ticket of ``state`` costs to run on the test set (``jsnn.efficiency.ticket_entry``)."""
    return ticket_entry(config, num_classes, variables_of(state, rule), dataset)
