"""Flags shared by the programs in train/, experiment config files, and the clean exit they share.

The training flags are generated from ``jsnn.config.TrainConfig``'s fields (name, type, default
and help from each field; ``--no-X`` for a setting on by default); every ``choices`` comes from
its registry (``REGISTRIES``), so a newly registered model, surrogate or criterion is a valid
choice without touching this file. Every flag left unset takes the preset for the dataset
(jsnn/config.py), so `--dataset cifar100` alone gives the paper's settings.

Experiment configs (``configs/*.py``, each a ``get_config()`` returning an
``ml_collections.ConfigDict``, as in flax's examples and big_vision)::

    python train/imp.py --config configs/sf_imp1_cifar100_resnet19.py --config.lr=0.05 --config.lif.decay=0.5

A config's keys are the flags' names (``_`` for ``-``; the neuron's settings under ``lif``, as
in ``TrainConfig``). ``--config.KEY=VALUE`` overrides one value (dots for nested keys), checked
against the type the file gives it. Precedence, lowest first: the dataset's preset, the config
file, its ``--config.KEY`` overrides, explicit flags (``--config configs/x.py --epochs 1``
runs one epoch of experiment x).

Why not ``ml_collections.config_flags`` (tried with ml_collections as pinned here): it is an absl flag.
The programs' flags are argparse's (generated from TrainConfig and the methods' options), so it would
parse with a FlagValues of its own and ``known_only=True``; there ``--config PATH`` loads (``PATH:ARG``
too), but ``--config.KEY=VALUE`` is neither applied nor refused (it comes back as an unknown argument;
without ``known_only`` it is "Unknown command line flag 'config.lr'"), because its override flags are
made for the process's own absl parse. Moving every program to absl would keep none of what this file
adds either: a file's values checked against each flag's type and registry choices, with one line
("the config's model must be one of ..."), the neuron's settings under ``lif`` mapped to their flat
flags, a file made for another method refused, and explicit flags winning over the file. So the file is
loaded and overridden here (``load_config_file``, ``override``: about 60 lines) and its values become
the parser's defaults (``config_defaults``).
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib.util
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import starting  # noqa: F401  (signals while the program is still importing: train/starting.py)

from jsnn import platform, xla_flags
from jsnn.compilation_cache import enable_compilation_cache
from jsnn.config import LIF_FIELDS, SCHEDULES, LIFSettings, TrainConfig
from jsnn.data import DatasetNames
from jsnn.host_memory import release_after_each_compile
from jsnn.layers import WEIGHT_INITS
from jsnn.models import MODELS
from jsnn.parallel import DISTRIBUTED_MODES, initialize_distributed
from jsnn.preemption import take_signals_back
from jsnn.runs.outputs import Outputs
from jsnn.runs.registry import get_method
from jsnn.sparsity import distributions
from jsnn.sparsity.criteria import CRITERIA
from jsnn.surrogate import surrogate_names

# registry name -> the names registered in it now (looked up when a parser is built)
REGISTRIES: dict[str, Callable[[], Sequence[str]]] = {
    "datasets": DatasetNames,  # its `in` takes tfds:NAME[/CONFIG] too
    "models": lambda: sorted(MODELS),
    "surrogates": surrogate_names,
    "weight_inits": lambda: sorted(WEIGHT_INITS),
    "schedules": lambda: list(SCHEDULES),
    "criteria": lambda: sorted(CRITERIA),
    "distributions": lambda: sorted(distributions.DISTRIBUTIONS),  # IMP's --scope
    "shape_distributions": lambda: sorted(distributions.SHAPE_DENSITIES),  # edge-popup's --distribution
}


def choices_of(registry: str | Sequence[str] | None) -> list[str] | None:
    """The names registered in ``registry`` now (a literal sequence is returned as a list)."""
    if registry is None:
        return None
    if isinstance(registry, str):
        names = REGISTRIES[registry]()
        return names if isinstance(names, list) else list(names)  # a list keeps its own `in` (DatasetNames)
    return list(registry)


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


GROUP_ORDER = ("data and model", "optimisation (unset: the dataset's preset)", "neuron", "run")


def config_fields() -> list[dataclasses.Field]:
    """TrainConfig's settings with the neuron's (``lif``) in its place: one flag each."""
    out = []
    for f in dataclasses.fields(TrainConfig):
        out.extend(dataclasses.fields(LIFSettings) if f.name == "lif" else [f])
    return out


def _value_type(cls, name: str) -> type:
    """``int`` for a field annotated ``int | None``, and so on."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_flag(group, field: dataclasses.Field, owner: type, default: Any = dataclasses.MISSING) -> None:
    """One flag for a configuration field (jsnn.config.setting): its type, default, help and choices."""
    meta = field.metadata
    default = field.default if default is dataclasses.MISSING else default
    names = [meta.get("flag") or "--" + field.name.replace("_", "-")] + ([meta["short"]] if "short" in meta else [])
    kwargs: dict[str, Any] = {"dest": field.name}
    if meta.get("help"):
        kwargs["help"] = meta["help"]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    value_type = _value_type(owner, field.name)
    if value_type is bool:
        if default is None:  # unset: a preset decides; --X / --no-X
            kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        else:  # --no-X turns off what is on by default, --X turns on what is off
            kwargs.update(action="store_false" if default else "store_true")
    else:
        parse = meta.get("parse") or (floats if typing.get_origin(value_type) is tuple else value_type)
        kwargs.update(type=parse, default=default, choices=choices_of(meta.get("choices")))
    group.add_argument(*names, **kwargs)


def add_option_flags(p: argparse.ArgumentParser, options: type, title: str, description: str | None = None) -> None:
    """One flag per field of a method's options dataclass (its ``setting`` metadata), as for TrainConfig's;
    fields without a group of their own go under ``title``."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        name = f.metadata.get("group", title)
        if name not in groups:
            groups[name] = p.add_argument_group(name, description if not groups else None)
        add_config_flag(groups[name], f, options)


def options_of(args: argparse.Namespace, options: type):
    """The method's options dataclass from its flags (``add_option_flags``)."""
    return options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options)})


def add_training_flags(p: argparse.ArgumentParser, default_dataset: str = "digits") -> None:
    groups = {name: p.add_argument_group(name) for name in GROUP_ORDER}
    for f in config_fields():
        owner = LIFSettings if f.name in LIF_FIELDS else TrainConfig
        add_config_flag(groups[f.metadata["group"]], f, owner, default_dataset if f.name == "dataset" else f.default)
    g = groups["run"]
    g.add_argument("--workdir", required=False, help="checkpoints, metrics, results and plots go here")
    g.add_argument("--no-plots", dest="plots", action="store_false",
                   help="write no figures (results, tickets and metrics are the same)")
    g.add_argument("--no-cost-report", dest="cost_report", action="store_false",
                   help="skip each ticket's test-set cost pass (no \"efficiency\" entries; train/ticket.py report "
                        "measures the tickets later)")
    g.add_argument("--distributed", choices=DISTRIBUTED_MODES, default="auto",
                   help="join a multi-process run: auto (JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, "
                        "or a SLURM / Open MPI / Kubernetes / Cloud TPU cluster), on, or off")
    g.add_argument("--platform", choices=platform.PLATFORMS, default=None,
                   help="stop at once unless JAX computes there (a GPU host without jsnn[cuda12] falls back to the "
                        "CPU); cpu also keeps a GPU host's run on its CPU (docs/gpu.md)")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU kernels (XLA_FLAGS; in the run signature): bit-exact reruns and resumes "
                        "on a GPU, at a cost (docs/gpu.md)")
    add_config_file_flag(p)


def add_config_file_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH[:ARG]",
                   help="an experiment config: a .py file whose get_config() returns an ml_collections ConfigDict "
                        "(configs/); --config.KEY=VALUE overrides one of its values (--config.lif.decay=0.5). "
                        "Explicit flags win over the file")


# ------------------------------------------------------------------ experiment config files

def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``get_config()`` of the file ``PATH`` (``PATH:ARG`` calls ``get_config(ARG)``, as ml_collections does)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"--config {path}: no such file")
    module_spec = importlib.util.spec_from_file_location(f"jsnn_experiment_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config {path}: the file defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"--config {path}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _parse_as(kind: type | None, current: Any, text: str) -> Any:
    if text.lower() == "none":
        return None
    if kind is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in _TRUE
    if kind in (tuple, list):
        element = type(current[0]) if current else float
        return kind(element(v) for v in text.split(",") if v.strip())
    if kind in (int, float, str):
        return kind(text)
    return text  # a field the file leaves untyped (None without a placeholder)


def override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets ``config.KEY`` (dots for nested keys) from the text of ``--config.KEY=VALUE``, as the type it has."""
    *parents, leaf = key.split(".")
    node = config
    try:
        for name in parents:
            node = node[name]
        ref = node.get_ref(leaf)
    except (KeyError, AttributeError, TypeError):
        raise ValueError(f"--config.{key}: the config has no field {key!r}") from None
    kind = ref.get_type()
    try:
        node[leaf] = _parse_as(kind, node[leaf], text)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--config.{key}={text}: expected {getattr(kind, '__name__', kind)} ({e})") from None


def split_config_args(argv: Sequence[str]) -> tuple[str | None, list[tuple[str, str]], list[str]]:
    """(--config PATH, [(KEY, VALUE) of each --config.KEY=VALUE], the other arguments)."""
    path, overrides, rest = None, [], []
    it = iter(argv)
    for arg in it:
        if arg == "--config" or arg.startswith("--config="):
            path = arg.partition("=")[2] if "=" in arg else next(it, None)
            if not path:
                raise ValueError("--config needs a path")
        elif arg.startswith("--config."):
            key, eq, value = arg[len("--config."):].partition("=")
            if not eq:
                value = next(it, None)
                if value is None:
                    raise ValueError(f"--config.{key} needs a value")
            overrides.append((key, value))
        else:
            rest.append(arg)
    if overrides and path is None:
        raise ValueError("--config.KEY=VALUE overrides a config file's value: give the file with --config PATH")
    return path, overrides, rest


def _coerce(action: argparse.Action, value: Any) -> Any:
    """A config file's value as its flag would give it (type and choices checked)."""
    if value is None:
        return None
    if action.nargs == 0:  # --X / --no-X
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
    kind = action.type
    if isinstance(value, str):
        value = kind(value) if kind is not None else value
    elif kind in (None, str):
        raise ValueError(f"must be a string, got {value!r}")
    elif isinstance(value, (list, tuple)):  # e.g. --sparsity 0.1,0.3: the flag's own parser checks the items
        value = kind(",".join(str(v) for v in value))
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    elif kind is float:
        value = float(value)
    elif kind is int and not isinstance(value, int):
        raise ValueError(f"must be an integer, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"must be one of {list(action.choices)}, got {value!r}")
    return value


def config_defaults(parser: argparse.ArgumentParser, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """{flag dest: value} for each value of the config (the neuron's under ``lif``), checked against its flag."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    # a key may also be the flag's own name where it is not the field's (``sparsity`` for --sparsity)
    by_flag = {o[2:].replace("-", "_"): a for a in actions.values() for o in a.option_strings if o.startswith("--")}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "lif" and isinstance(value, ml_collections.ConfigDict):
            for k, v in value.items():
                if k not in LIF_FIELDS:
                    raise ValueError(f"the config's lif.{k} is no neuron setting; they are {list(LIF_FIELDS)}")
                flat[k] = v
        elif key != "method":
            flat[key] = value
    out = {}
    for key, value in flat.items():
        action = actions.get(key) or by_flag.get(key)
        if action is None:
            raise ValueError(f"the config's {key!r} is no flag of this program")
        try:
            out[action.dest] = _coerce(action, value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            raise ValueError(f"the config's {key} {e}") from None
    return out


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
               method: str | None = None) -> argparse.Namespace:
    """``parser.parse_args`` with ``--config PATH`` and ``--config.KEY=VALUE`` (see the module docstring).

    ``method``: the program's method; a config whose ``method`` names another is refused.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        path, overrides, rest = split_config_args(argv)
        if path is not None:
            config = load_config_file(path)
            for key, text in overrides:
                override(config, key, text)
            wanted = config.get("method")
            if method is not None and wanted is not None and wanted != method:
                raise ValueError(f"--config {path} is a {wanted} experiment; this program runs {method}"
                                 + (" (a file with several names one: PATH:" + method + ")" if ":" not in path else ""))
            parser.set_defaults(**config_defaults(parser, config))
    except ValueError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)
    args.config = path
    return args


# ------------------------------------------------------------------ start-up and exit

def start_run(args: argparse.Namespace) -> None:
    """Sets jsnn's XLA flag and joins the distributed runtime (when launched as several processes),
    before anything starts JAX's backend."""
    xla_flags.configure()
    platform.configure(getattr(args, "platform", None), getattr(args, "deterministic", False))
    initialize_distributed(args.distributed)
    take_signals_back()  # the distributed runtime installs a SIGTERM handler of its own
    enable_compilation_cache()
    release_after_each_compile()  # the compiler's working memory back to the system: jsnn/host_memory.py
    platform.require(getattr(args, "platform", None))


def run_outputs(args: argparse.Namespace) -> Outputs:
    """What the run writes besides results and tickets (``--no-plots``, ``--no-cost-report``)."""
    return Outputs(plots=args.plots, cost_report=args.cost_report)


def training_config(args: argparse.Namespace, preset: str) -> TrainConfig:
    """The TrainConfig of the flags, its unset fields from ``PRESETS[preset]`` (``TrainConfig.resolve``)."""
    names = {f.name for f in config_fields()}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names}).resolve(preset)


# ------------------------------------------------------------------ a program over the method registry

def method_parser(method: str, description: str | None, default_dataset: str = "digits") -> argparse.ArgumentParser:
    """The flags of a program that runs ``method`` (jsnn/runs/registry.py): its options' then TrainConfig's."""
    entry = get_method(method)
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_option_flags(p, entry.options, entry.name, entry.summary)
    add_training_flags(p, default_dataset)
    return p


def begin(parser: argparse.ArgumentParser, argv: Sequence[str] | None, method: str):
    """What a program's main does first: (args, config, options) from ``argv`` (``parse_args``), the process
    started (``start_run``)."""
    args = parse_args(parser, argv, method=method)
    start_run(args)
    return (args, *method_settings(args, method))


def method_settings(args: argparse.Namespace, method: str) -> tuple[TrainConfig, Any]:
    """(TrainConfig at the method's presets, the method's options resolved against it) from the flags."""
    entry = get_method(method)
    config = training_config(args, entry.preset)
    options = options_of(args, entry.options)
    return config, options.resolve(config)


# a full disk, a quota, a file too large, a read-only or failing file system
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def run_cleanly(main) -> None:
    """Runs ``main()``; expected failures become one clear line on stderr, not a traceback.

    Sets jsnn's XLA flag first (jsnn/xla_flags.py): no JAX computation has run yet.
    SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) stop training after the step in
    flight with a checkpoint at that batch (jsnn/preemption.py): one line, exit 128 + signal.
    """
    from jsnn.checkpoint import CheckpointError
    from jsnn.data import DataNotFoundError
    from jsnn.preemption import Preempted, stop_on_signals
    from jsnn.trainer import TrainingDivergedError

    xla_flags.configure()
    try:
        with stop_on_signals(until_exit=True):  # until the process exits: no silent kill at its end
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
