"""Checkpoints with orbax: save, find the latest, restore with clear errors.

A checkpoint is one pytree (the training state plus whatever the method
needs to continue: rewind point, pruning round, ...) and a JSON dict of
bookkeeping (epoch, round, the run's signature). Orbax writes each one to a
temporary directory and renames it into place, so a crash never leaves a
half-written checkpoint that looks complete; the newest ``keep`` are kept.

With an accelerator, a save returns once the state is copied to host memory and
orbax writes the files in the background while training goes on; the next save,
``wait`` or a restore waits for that write first, and a failed write is raised
there, naming its checkpoint, as a CheckpointError.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from jsnn.config import signature_differences

PyTree = Any


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do. Nothing is deleted."""


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, background: bool | None = None):
        """``background``: writes go on while training does (``save`` returns first); None: where the
        computation runs on an accelerator. On the CPU backend a write in the background takes its CPU time
        from the training steps on the same cores (orbax's write is CPU work, little of it waiting on the disk),
        so there ``save`` waits for it (benchmarks/results/checkpoint_overlap.json)."""
        self.directory = os.path.abspath(directory)
        self.background = jax.default_backend() != "cpu" if background is None else background
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self._writing: int | None = None  # the step whose files orbax is still writing
        self._absl_level: int | None = None

    def latest_step(self) -> int | None:
        self.wait()
        return self._manager.latest_step()

    def save(self, step: int, tree: PyTree, meta: dict) -> None:
        """Writes checkpoint ``step``; in the background (``self.background``) it returns once ``tree`` is copied
        to host memory (the device buffers may be donated by the next step). A write still in flight is
        finished first. A failed write (a full disk, say) is one CheckpointError, here or at the next
        ``save`` / ``wait``, and the checkpoints written before stay as they were."""
        self.wait()
        # host copies: device buffers may be donated by the next step (in the background: never a view of one)
        tree = jax.tree.map(np.array if self.background else np.asarray, tree)
        with self._errors_as_checkpoint_error(step):
            self._manager.save(
                step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
            )
        self._writing = step
        if not self.background:
            self.wait()
            return
        # orbax logs a failed background write with a traceback; the error reaches the user once, from wait()
        logger = logging.getLogger("absl")
        self._absl_level = logger.level if self._absl_level is None else self._absl_level
        logger.setLevel(logging.CRITICAL)

    def wait(self) -> None:
        """Returns once the write in flight (if any) is complete; raises its CheckpointError if it failed."""
        if self._writing is None:
            return
        step, self._writing = self._writing, None
        try:
            with self._errors_as_checkpoint_error(step):
                self._manager.wait_until_finished()
        finally:
            if self._absl_level is not None:
                logging.getLogger("absl").setLevel(self._absl_level)
                self._absl_level = None

    @contextlib.contextmanager
    def _errors_as_checkpoint_error(self, step: int):
        try:
            with _orbax_errors_not_logged():
                yield
        except Exception as e:  # orbax wraps the OS error in its own types
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "No space left on device" in str(e):
                reason = "No space left on device"
            raise CheckpointError(
                f"could not write the checkpoint {os.path.join(self.directory, str(step))} ({reason[:300]}). "
                "The checkpoints written before are kept: free space (or fix the directory) and rerun the "
                "same command to resume from the newest of them."
            ) from None

    def restore(self, like: PyTree | Callable[[dict], PyTree], signature: dict,
                step: int | None = None) -> tuple[PyTree, dict]:
        """Restores ``step`` (default: the latest) into the structure of ``like`` (or of
        ``like(meta)`` when what the checkpoint holds depends on its bookkeeping).

        Raises CheckpointError, deleting nothing, when the files cannot be read
        or do not belong to this run (other model, shapes or method).
        """
        self.wait()
        step = self.latest_step() if step is None else step
        where = os.path.join(self.directory, str(step))
        try:
            with _orbax_errors_not_logged():
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
                )
            tree, meta = restored["state"], restored["meta"]
        except Exception as e:  # orbax raises many types for damaged files
            raise CheckpointError(
                f"the checkpoint in {where} cannot be read ({type(e).__name__}: {str(e)[:300]}). "
                "Nothing was deleted. Move that directory aside to resume from an older checkpoint, "
                "or start over with a new --workdir."
            ) from None
        diffs = signature_differences(meta.get("signature") or {}, signature)
        if diffs:
            raise CheckpointError(
                f"the checkpoint in {where} was written by a different run ({'; '.join(diffs)}). "
                "Nothing was deleted. Rerun with the original settings to resume, or pass a new --workdir."
            )
        return _conform(tree, like(meta) if callable(like) else like, where), meta


@contextlib.contextmanager
def _orbax_errors_not_logged():
    """Orbax logs every failed background read or write with a traceback (through absl), and
    tensorstore's callback threads print 'Event loop is closed' tracebacks once it gives up; the
    error reaches the user once, as a CheckpointError. So while a checkpoint is read or written,
    absl's errors are off and the process's stderr goes to a temporary file, given back unchanged
    after success and dropped after a failure."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(0.5)  # the threads print as they wind down
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logger.setLevel(level)
            if not failed:
                captured.seek(0)
                text = captured.read()
                if text:
                    sys.stderr.write(text.decode(errors="replace"))
                    sys.stderr.flush()


def _conform(tree: PyTree, like: PyTree, where: str) -> PyTree:
    """Puts the restored leaves into ``like``'s structure, checking every shape and dtype."""
    want = jax.tree_util.tree_flatten_with_path(like)[0]
    got = dict(jax.tree_util.tree_flatten_with_path(tree)[0])
    got = {jax.tree_util.keystr(k): v for k, v in got.items()}
    leaves = []
    for path, leaf in want:
        name = jax.tree_util.keystr(path)
        if name not in got:
            raise CheckpointError(f"the checkpoint in {where} has no entry {name}; it is not from this run. "
                                  "Nothing was deleted. Use a new --workdir.")
        value = np.asarray(got[name])
        if value.shape != np.shape(leaf):
            raise CheckpointError(f"the checkpoint in {where} has {name} of shape {value.shape}, this run "
                                  f"expects {np.shape(leaf)}. Nothing was deleted. Use a new --workdir.")
        leaves.append(value.astype(np.asarray(leaf).dtype if not hasattr(leaf, "dtype") else leaf.dtype))
    return jax.tree.unflatten(jax.tree.structure(like), leaves)
