"""Flags shared by the programs in train/, and the clean exit they share.

Every flag left unset takes the preset for the dataset (jsnn/config.py), so
`--dataset cifar100` alone gives the paper's settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import sys

from jsnn.config import TrainConfig
from jsnn.layers import WEIGHT_INITS
from jsnn.compilation_cache import enable_compilation_cache
from jsnn.parallel import DISTRIBUTED_MODES, initialize_distributed
from jsnn.preemption import take_signals_back
from jsnn.surrogate import surrogate_names


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_training_flags(p: argparse.ArgumentParser, default_dataset: str = "digits") -> None:
    d = TrainConfig()
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", choices=["digits", "cifar10", "cifar100"], default=default_dataset,
                   help="digits works offline (scikit-learn's bundled 8x8 digits)")
    g.add_argument("--data-dir", help="where CIFAR lives: a tfds data dir or the python archives")
    g.add_argument("--model", choices=["digits_cnn", "vgg_small", "vgg16", "resnet19"])
    g.add_argument("--timesteps", "-T", type=int)
    g.add_argument("--width", type=float, default=d.width,
                   help="channel multiplier of the network (0.25: a quarter of the channels in every layer)")
    g = p.add_argument_group("optimisation (unset: the dataset's preset)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch, split over every local device")
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--schedule", choices=["cosine", "constant"], default=d.schedule)
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("neuron")
    g.add_argument("--surrogate", choices=surrogate_names(), default=d.surrogate)
    g.add_argument("--surrogate-width", type=float, help="alpha / width of the surrogate (family default)")
    g.add_argument("--decay", type=float, default=d.decay, help="beta, the membrane leak")
    g.add_argument("--threshold", type=float, default=d.threshold)
    g.add_argument("--reset", choices=["hard", "soft"], default=d.reset)
    g.add_argument("--no-detach-reset", dest="detach_reset", action="store_false")
    g.add_argument("--remat", action="store_true", help="recompute the LIF scan in backward (saves memory)")
    g.add_argument("--bn-affine", dest="bn_affine", action="store_true", default=None)
    g.add_argument("--no-bn-affine", dest="bn_affine", action="store_false")
    g.add_argument("--weight-init", choices=sorted(WEIGHT_INITS), default=d.weight_init)
    g = p.add_argument_group("run")
    g.add_argument("--workdir", required=False, help="checkpoints, metrics, results and plots go here")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="epochs")
    g.add_argument("--checkpoint-every-steps", type=int, default=d.checkpoint_every_steps,
                   help="also checkpoint every N steps inside an epoch, for long epochs (0: epoch ends only)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="epochs between test evaluations")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--distributed", choices=DISTRIBUTED_MODES, default="auto",
                   help="join a multi-process run: auto (JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, "
                        "or a SLURM / Open MPI / Kubernetes / Cloud TPU cluster), on, or off")


def start_run(args: argparse.Namespace) -> None:
    """Joins the distributed runtime (when launched as several processes) before anything starts JAX."""
    initialize_distributed(args.distributed)
    take_signals_back()  # the distributed runtime installs a SIGTERM handler of its own
    enable_compilation_cache()


def training_config(args: argparse.Namespace, method: str) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields}).resolve(method)


# a full disk, a quota, a file too large, a read-only or failing file system
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def run_cleanly(main) -> None:
    """Runs ``main()``; expected failures become one clear line on stderr, not a traceback.

    SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) stop training after the step in
    flight with a checkpoint at that batch (jsnn/preemption.py): one line, exit 128 + signal.
    """
    from jsnn.checkpoint import CheckpointError
    from jsnn.data import DataNotFoundError
    from jsnn.preemption import Preempted, stop_on_signals
    from jsnn.trainer import TrainingDivergedError

    try:
        with stop_on_signals():
            main()
    except Preempted as e:
        _exit(str(e), e.exit_code)
    except KeyboardInterrupt:
        _exit("\ninterrupted: rerun the same command to resume from the last checkpoint", 130)
    except (ValueError, FileNotFoundError, DataNotFoundError, CheckpointError, TrainingDivergedError) as e:
        _exit(f"error: {e}", 2 if isinstance(e, ValueError) else 1)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        _exit(f"error: cannot write {e.filename or 'to the workdir'} ({e.strerror}). What was saved before is "
              "kept: free space (or fix the directory) and rerun the same command to resume.", 1)


def _exit(line: str, code: int) -> None:
    """One line on stderr, then exit with ``code``."""
    print(line, file=sys.stderr)
    sys.exit(code)
