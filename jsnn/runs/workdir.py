"""The workdir contract: what a run keeps in its directory, and whose directory it is.

    WORKDIR/config.json    the resolved configuration and the run's signature (written once; ``run_record``
                           and ``run_signature`` are the one rule for each, every method's the same)
    WORKDIR/metrics.jsonl  one line per epoch
    WORKDIR/results.json   one entry per finished level / round, with its label
    WORKDIR/checkpoints/   the newest training states (``segment.RunCheckpoints``)

A workdir belongs to one configuration: a run whose signature (every setting that can change
results) differs from the one in config.json stops with one line naming each difference and
changes nothing (``RunMismatchError``).
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax

from jsnn import platform
from jsnn.config import RUN_CONTROL, signature_differences
from jsnn.metrics import read_json, read_jsonl, write_json, write_jsonl
from jsnn.runs.lock import hold_workdir, release_workdir, run_identity

METRICS, CONFIG, RESULTS, CHECKPOINTS = "metrics.jsonl", "config.json", "results.json", "checkpoints"


class RunMismatchError(ValueError):
    """A workdir, checkpoint or finished result written with other settings than this run's."""


def options_record(options) -> dict:
    """A method's options as its signature and config.json keep them: every field, less those that do not
    apply to this run (``options.unrecorded()``, where the options define it: e.g. a sparsity type left at
    unstructured, so runs of it keep the signatures they had before the field existed)."""
    if options is None:
        return {}
    unrecorded = options.unrecorded() if hasattr(options, "unrecorded") else ()
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in unrecorded}


def run_signature(method: str, config, options=None, **more) -> dict:
    """THE rule for what identifies a run: every resolved setting that can change its results. The config's
    (``TrainConfig.to_dict``, flat, less ``config.RUN_CONTROL``: where data lies, how often to checkpoint, ...),
    the method's options (``options_record``, less their ``RUN_CONTROL`` fields, e.g. IMP's round count, which
    a resumed run may extend) and what the method adds as data (``more``, e.g. an edge-popup level's
    sparsity); as JSON would store it, so a signature read back compares equal."""
    sig = {"method": method, **{k: v for k, v in config.to_dict().items() if k not in RUN_CONTROL}}
    skip = getattr(options, "RUN_CONTROL", ())
    sig.update({k: v for k, v in options_record(options).items() if k not in skip})
    sig.update({**platform.signature_fields(), **more})  # where it ran, when that can change results
    return json.loads(json.dumps(sig))


def run_record(method: str, config, options=None) -> dict:
    """THE rule for what config.json holds besides the signature: the resolved configuration (flat, as
    ``TrainConfig.to_dict``), the method's options under its name (when it has any; RUN_CONTROL fields
    included) and the devices and processes it ran on."""
    record = config.to_dict()
    fields = options_record(options)
    if fields:
        record[method] = fields
    return {**record, "devices": jax.device_count(), "processes": jax.process_count()}


def check_same_run(found: dict | None, signature: dict, where: str, keys=None) -> None:
    """Raises RunMismatchError naming every differing setting (old -> new) and what to do."""
    diffs = [] if found is None else signature_differences(found, signature, keys)
    if diffs:
        raise RunMismatchError(
            f"{where} holds a run with other settings ({'; '.join(diffs)}). Nothing was changed. "
            "Rerun with its settings to resume it or read its results, or pass a new --workdir."
        )


def claim_workdir(workdir: str, signature: dict, record: dict) -> None:
    """Makes WORKDIR this run's: holds its lock (``lock.py``: a second run on it stops with one line
    naming the holder), and a new directory gets config.json (``record`` and the signature); one
    written by a run with other settings is a RunMismatchError, and nothing is written. The lock
    is held until ``release_workdir(workdir)`` or the end of the process."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} is a file, not a directory; pass a directory for the run's files")
    found = read_json(os.path.join(workdir, CONFIG))
    check_same_run(found.get("signature") if found else None, signature, workdir)  # before: a refusal writes nothing
    hold_workdir(workdir, **run_identity(jax.process_index(), jax.process_count()))
    try:
        found = read_json(os.path.join(workdir, CONFIG))  # again, held: another first start may have written it
        check_same_run(found.get("signature") if found else None, signature, workdir)
    except RunMismatchError:
        release_workdir(workdir)
        raise
    if found is None or "signature" not in found:
        write_json(os.path.join(workdir, CONFIG), {**record, **platform.record(), "signature": signature})


__all__ = ["CONFIG", "METRICS", "RESULTS", "CHECKPOINTS", "RunMismatchError", "check_same_run", "claim_workdir",
           "drop_metrics_after", "finished_results", "options_record", "release_workdir", "run_record",
           "run_signature"]


def drop_metrics_after(path: str, keep) -> None:
    """Removes records a crashed run wrote after its last checkpoint (they are redone), and a
    last line it left cut short."""
    records = read_jsonl(path)
    kept = [r for r in records if keep(r)]
    cut_short = os.path.exists(path) and os.path.getsize(path) and not open(path, "rb").read().endswith(b"\n")
    if len(kept) != len(records) or cut_short:
        write_jsonl(path, kept)


def finished_results(workdir: str, signature: dict) -> dict | None:
    """WORKDIR's results.json if a run with this signature finished there; a RunMismatchError if
    one with other settings did; None if none has."""
    done = read_json(os.path.join(workdir, RESULTS))
    if done is None or "signature" not in done:
        return None
    check_same_run(done["signature"], signature, workdir)
    return done
