"""What a run writes for people and programs: metrics.jsonl (and its TensorBoard event files), config.json,
results.json, a progress bar."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

import jax
from tqdm.auto import tqdm

from jsnn import tensorboard


def _jsonl_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


def _replace_file(path: str, text: str) -> None:
    """Writes via a temporary file and a rename, so a reader never sees half a file (process 0 only)."""
    if not is_primary():
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def append_jsonl(path: str, record: dict) -> None:
    if not is_primary():
        return
    with open(path, "a") as f:
        f.write(_jsonl_line(record))


def append_epoch(path: str, record: dict) -> None:
    """One epoch's metrics: a line of ``path`` (metrics.jsonl) and the same numbers in the TensorBoard
    event files of its folder (``jsnn.tensorboard``), process 0 only."""
    if not is_primary():
        return
    append_jsonl(path, record)
    tensorboard.write_record(os.path.dirname(os.path.abspath(path)), record)


def read_jsonl(path: str) -> list[dict]:
    """The records of a .jsonl file; a last line cut short (the disk filled, the process was
    killed mid-write) is left out: it is redone on resume."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    records = [json.loads(line) for line in lines[:-1] if line.strip()]
    if lines[-1].strip():
        try:
            records.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            pass
    return records


def write_jsonl(path: str, records: list[dict]) -> None:
    """Rewrites a .jsonl file atomically."""
    _replace_file(path, "".join(_jsonl_line(r) for r in records))


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` atomically, keys sorted."""
    _replace_file(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str, default: Any = None) -> Any:
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def progress(iterable: Iterable, total: int, description: str, enabled: bool = True, initial: int = 0):
    """A progress bar on stderr; plain iteration when disabled or not on a terminal in CI."""
    return tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True,
                disable=not enabled, file=sys.stderr, mininterval=1.0, initial=initial)


def is_primary() -> bool:
    """Whether this process writes the run's files and log lines: process 0 of a multi-process run.

    Asked lazily, at write time: the programs join the distributed runtime first
    (parallel.initialize_distributed), and asking earlier would start a backend.
    """
    return jax.process_index() == 0


def log(message: str) -> None:
    """One line on stdout, from process 0 only."""
    if is_primary():
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()
