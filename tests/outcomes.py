"""What a finished run leaves, comparable across runs: results less timings, ticket arrays as bytes.

Shared by the tests that interrupt a run and check the rerun ends where the uninterrupted run did.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np

from jsnn.runs.outputs import RunHooks
from jsnn.ticket import load_ticket
from jsnn.variables import apply_model


def untimed(tree):
    """``tree`` without the keys that hold wall-clock measurements."""
    if isinstance(tree, dict):
        return {k: untimed(v) for k, v in tree.items() if "seconds" not in k and k != "images_per_sec"}
    if isinstance(tree, list):
        return [untimed(v) for v in tree]
    return tree


def run_outcome(workdir: str, tickets: str = "*.npz"):
    """results.json's entries less timings, and the arrays of the tickets matching ``tickets`` (a glob
    under ``workdir``) as bytes."""
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    arrays = {}
    for path in sorted(glob.glob(os.path.join(workdir, tickets))):
        with np.load(path) as z:
            arrays[os.path.basename(path)] = {k: z[k].tobytes() for k in z.files if k != "__meta__"}
    return untimed(results["runs"]), arrays


def ticket_accuracy(ticket_path: str, dataset) -> float:
    """A ticket's test accuracy counted here, not by the trainer's evaluation: its model on every
    test image of ``dataset`` at once, the class of the largest time-averaged output, against the label."""
    ticket = load_ticket(ticket_path)
    x = (np.asarray(dataset.test_images, np.float32) - np.asarray(dataset.mean, np.float32)) / np.asarray(
        dataset.std, np.float32)
    logits, _, _ = apply_model(ticket.model, ticket.variables, x, train=False)
    predicted = np.argmax(np.asarray(logits, np.float64).mean(axis=0), axis=-1)
    return float(np.mean(predicted == np.asarray(dataset.test_labels)))


def crash_after_checkpoint(nth: int = 1, **where) -> RunHooks:
    """Run hooks that kill the run (KeyboardInterrupt, as a process killed without the signal guard)
    just after its ``nth`` checkpoint at ``where`` (segment, epoch, batch: those given) is written: on
    the first phase the run enters after that save (``Run`` announces the phase it goes back to)."""
    seen, armed = [], []

    def on_phase(name, at):
        if armed:
            raise KeyboardInterrupt(f"killed after the checkpoint at {where}")
        if name == "checkpoint" and all(at.get(k) == v for k, v in where.items()):
            seen.append(at)
            if len(seen) == nth:
                armed.append(True)

    return RunHooks(on_phase)
