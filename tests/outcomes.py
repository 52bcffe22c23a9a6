"""What a finished run leaves, comparable across runs: results less timings, ticket arrays as bytes.

Shared by the tests that interrupt a run and check the rerun ends where the uninterrupted run did.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np


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
