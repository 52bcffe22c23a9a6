"""The ticket file format: the variables a finished level or round runs on, and how to rebuild its model.

Checkpoints hold training state (optimizer, rewind point, ...) and only the
newest few are kept; a ticket is what a finished edge-popup level, IMP round
or dense run *is*: weights, the masks its forward pass applies (edge-popup's
top-k already taken), BN variables and running statistics, plus the resolved
configuration and its results entry (with its labels). Export (NIR) and the
cost report read tickets, never checkpoints. Where runs put them:
``jsnn.runs.tickets``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
from flax import traverse_util

from jsnn.config import TrainConfig
from jsnn.models import build_model
from jsnn.variables import Variables

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
        return build_model(self.config, self.num_classes)


def save_ticket(path: str, config: TrainConfig, num_classes: int, variables: Variables, info: dict) -> None:
    """Writes the ticket atomically (temporary file and rename). Call on one process only."""
    arrays = {}
    for collection in Variables._fields:
        for key, value in traverse_util.flatten_dict(getattr(variables, collection)).items():
            arrays[f"{collection}/{'/'.join(key)}"] = np.asarray(value)
    meta = {"format": FORMAT, "config": config.to_dict(), "num_classes": num_classes, "info": info}
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
                          "(see jsnn/runs/tickets.py for where); finish or rerun that run first")
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
    return Ticket(TrainConfig.from_dict(meta["config"]), meta["num_classes"], variables, meta["info"], path)
