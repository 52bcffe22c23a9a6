"""A ticket as one file: the variables a finished level or round runs on, and how to rebuild its model.

Checkpoints hold training state (optimizer, rewind point, ...) and only the
newest few are kept; a ticket is what a finished edge-popup level, IMP round
or dense run *is*: weights, the masks its forward pass applies (edge-popup's
top-k already taken), BN variables and running statistics, plus the resolved
configuration and its results entry. Export (NIR) and the cost report read
tickets, never checkpoints.

Where the programs write them:

    dense run            WORKDIR/ticket.npz
    edge-popup level     WORKDIR/sparsity_0.50/ticket.npz
    IMP round k          WORKDIR/tickets/round_03.npz
"""
from __future__ import annotations

import dataclasses
import glob
import io
import json
import os

import numpy as np
from flax import traverse_util

from jsnn.config import TrainConfig
from jsnn.metrics import is_primary
from jsnn.variables import Variables

TICKET_FILE = "ticket.npz"
_META = "__meta__"
FORMAT = 1


class TicketError(ValueError):
    """A ticket file that is missing or unreadable; the message says what to do."""


@dataclasses.dataclass
class Ticket:
    config: TrainConfig
    num_classes: int
    variables: Variables
    info: dict  # the level's / round's results entry: method, round or sparsity_target, test_accuracy, ...
    path: str

    @property
    def model(self):
        from jsnn.run import build_model  # run imports the trainer; keep ``import jsnn.ticket`` light

        return build_model(self.config, self.num_classes)


def round_path(workdir: str, round_index: int) -> str:
    return os.path.join(workdir, "tickets", f"round_{round_index:02d}.npz")


def variables_of(state, method) -> Variables:
    """The variables a trained state's forward pass runs on (masks as the method applies them)."""
    return Variables(state.weights, method.effective_masks(state.masks, state.scores), state.bn,
                     state.batch_stats)


def save_ticket(path: str, config: TrainConfig, num_classes: int, variables: Variables, info: dict) -> None:
    """Writes the ticket atomically (temporary file and rename). Call on one process only."""
    arrays = {}
    for collection in Variables._fields:
        for key, value in traverse_util.flatten_dict(getattr(variables, collection)).items():
            arrays[f"{collection}/{'/'.join(key)}"] = np.asarray(value)
    meta = {"format": FORMAT, "config": dataclasses.asdict(config), "num_classes": num_classes, "info": info}
    arrays[_META] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)


def load_ticket(path: str) -> Ticket:
    if not os.path.isfile(path):
        raise TicketError(f"no ticket at {path}: a finished level, round or dense run writes one "
                          "(see jsnn/ticket.py for where); finish or rerun that run first")
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data[_META]).decode())
            flat = {name: np.asarray(data[name]) for name in data.files if name != _META}
    except Exception as e:  # zip / json / key errors from a damaged file
        raise TicketError(f"the ticket {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); "
                          "rerun the run that wrote it") from None
    trees: dict[str, dict] = {c: {} for c in Variables._fields}
    for name, value in flat.items():
        collection, _, rest = name.partition("/")
        trees[collection][tuple(rest.split("/"))] = value
    variables = Variables(**{c: traverse_util.unflatten_dict(t) if t else {} for c, t in trees.items()})
    return Ticket(TrainConfig(**meta["config"]), meta["num_classes"], variables, meta["info"], path)


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
        path = os.path.join(workdir, f"sparsity_{level:.2f}", TICKET_FILE)
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


def record_ticket(path: str, config: TrainConfig, num_classes: int, state, method, entry: dict,
                  dataset=None) -> dict:
    """Saves a finished level's / round's ticket (process 0) and returns its results entry, with
    what the ticket costs to run on the test set under "efficiency" (``jsnn.efficiency``)."""
    from jsnn.efficiency import ticket_entry

    variables = variables_of(state, method)
    if is_primary():
        save_ticket(path, config, num_classes, variables, entry)
    return {**entry, "efficiency": ticket_entry(config, num_classes, variables, dataset)}

