"""One configuration: TrainConfig is the source of the flags, their choices come from the registries,
experiment configs (configs/*.py) load with --config.KEY overrides, old files still load, and the run
signature keeps today's keys. ``import jsnn`` leaves XLA_FLAGS alone."""
import argparse
import dataclasses
import importlib
import os
import re
import sys
from pathlib import Path

import pytest

from jsnn import config as C
from jsnn.config import LIFSettings, TrainConfig
from jsnn.runs.workdir import run_signature
from tests.programs import run_together

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train"))  # the programs import their shared flags as `flags`

import flags  # noqa: E402

# Every training flag of today's programs: option strings -> (dest, default). Literal: a change here is a
# change of the command line.
TODAY = {
    ("--dataset",): ("dataset", "digits"),
    ("--data-dir",): ("data_dir", None),
    ("--model",): ("model", None),
    ("--timesteps", "-T"): ("timesteps", None),
    ("--width",): ("width", 1.0),
    ("--precision",): ("precision", "f32"),
    ("--frames-by",): ("frames_by", None),
    ("--frame-size",): ("frame_size", None),
    ("--binarize", "--no-binarize"): ("binarize", None),
    ("--epochs",): ("epochs", None),
    ("--batch-size",): ("batch_size", None),
    ("--lr",): ("lr", None),
    ("--momentum",): ("momentum", 0.9),
    ("--weight-decay",): ("weight_decay", 5e-4),
    ("--schedule",): ("schedule", "cosine"),
    ("--seed",): ("seed", 0),
    ("--surrogate",): ("surrogate", "atan"),
    ("--surrogate-width",): ("surrogate_width", None),
    ("--decay",): ("decay", 0.25),
    ("--threshold",): ("threshold", 1.0),
    ("--reset",): ("reset", "hard"),
    ("--no-detach-reset",): ("detach_reset", True),
    ("--remat",): ("remat", False),
    ("--bn-affine", "--no-bn-affine"): ("bn_affine", None),
    ("--weight-init",): ("weight_init", "kaiming_normal"),
    ("--workdir",): ("workdir", None),
    ("--checkpoint-every",): ("checkpoint_every", 1),
    ("--checkpoint-every-steps",): ("checkpoint_every_steps", 0),
    ("--checkpoint-min-seconds",): ("checkpoint_min_seconds", 30.0),
    ("--keep-checkpoints",): ("keep_checkpoints", 3),
    ("--eval-every",): ("eval_every", 1),
    ("--no-progress",): ("progress", True),
    ("--no-plots",): ("plots", True),
    ("--no-cost-report",): ("cost_report", True),
    ("--distributed",): ("distributed", "auto"),
    ("--platform",): ("platform", None),
    ("--deterministic",): ("deterministic", False),
    ("--config",): ("config", None),
}

# the config's keys in a run signature (workdir.run_signature) before the LIF settings were nested: existing
# workdirs resume only if these stay the same.
SIGNATURE_KEYS = ["dataset", "model", "timesteps", "batch_size", "epochs", "lr", "momentum", "weight_decay",
                  "schedule", "seed", "surrogate", "surrogate_width", "decay", "threshold", "reset", "detach_reset",
                  "remat", "bn_affine", "weight_init", "width"]

# A config as every ticket and config.json written before the nesting holds it (dataclasses.asdict).
FLAT = {"dataset": "digits", "data_dir": None, "model": "digits_cnn", "timesteps": 4, "batch_size": 64, "epochs": 8,
        "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine", "seed": 0, "surrogate": "atan",
        "surrogate_width": None, "decay": 0.25, "threshold": 1.0, "reset": "soft", "detach_reset": True,
        "remat": False, "bn_affine": True, "weight_init": "kaiming_normal", "width": 1.0, "checkpoint_every": 1,
        "checkpoint_every_steps": 0, "checkpoint_min_seconds": 30.0, "keep_checkpoints": 3, "eval_every": 1,
        "progress": False}


def training_parser(default_dataset="digits"):
    p = argparse.ArgumentParser()
    flags.add_training_flags(p, default_dataset)
    return p


def actions(parser):
    return {tuple(a.option_strings): a for a in parser._actions if a.option_strings and a.dest != "help"}


def test_flags_are_todays():
    assert {k: (a.dest, a.default) for k, a in actions(training_parser()).items()} == TODAY
    args = flags.parse_args(training_parser(), ["-T", "3", "--no-detach-reset", "--no-bn-affine", "--no-progress",
                                                "--remat"])
    assert (args.timesteps, args.detach_reset, args.bn_affine, args.progress, args.remat) == (3, False, False, False,
                                                                                              True)
    assert flags.parse_args(training_parser(), ["--bn-affine"]).bn_affine is True
    assert flags.parse_args(training_parser("cifar100"), []).dataset == "cifar100"


def test_flags_are_generated_from_the_config_fields():
    """One flag per setting (the neuron's included), its default the field's, its help the field's."""
    by_dest = {a.dest: a for a in actions(training_parser()).values()}
    fields = flags.config_fields()
    assert {f.name for f in fields} == set(by_dest) - {"workdir", "distributed", "config", "plots", "cost_report",
                                                      "platform", "deterministic"}
    # files of image runs leave the frame settings out, and f32 runs the precision
    assert {f.name for f in fields} == set(FLAT) | set(C.FRAME_FIELDS) | {"precision"}
    for f in fields:
        assert by_dest[f.name].default == f.default
        assert by_dest[f.name].help == f.metadata.get("help")
    # the resulting config: the flags' values, the unset ones from the preset
    config = flags.training_config(flags.parse_args(training_parser(), ["--decay", "0.5", "--reset", "soft"]), "imp")
    assert config == TrainConfig(decay=0.5, reset="soft").resolve("imp")
    assert config.lif == LIFSettings(decay=0.5, reset="soft")


def test_choices_come_from_the_registries(monkeypatch):
    """Each flag's choices are the names its registry holds now, read from the registry's own module (not
    through train/flags.py's lookup under test): each of them parses, a name no registry holds does not."""
    from jsnn.data import DATASET_NAMES, TFDS_PREFIX
    from jsnn.layers import WEIGHT_INITS
    from jsnn.models import MODELS
    from jsnn.sparsity.criteria import CRITERIA
    from jsnn.surrogate import _SURROGATES

    monkeypatch.setitem(MODELS, "my_net", MODELS["digits_cnn"])
    monkeypatch.setitem(CRITERIA, "my_criterion", next(iter(CRITERIA.values())))
    by_dest = {a.dest: a for a in actions(training_parser()).values()}
    assert "my_net" in by_dest["model"].choices
    assert flags.parse_args(training_parser(), ["--model", "my_net"]).model == "my_net"
    assert "my_criterion" in flags.choices_of("criteria")
    registered = {"dataset": set(DATASET_NAMES) | {TFDS_PREFIX + "NAME[/CONFIG]"}, "model": set(MODELS),
                  "surrogate": set(_SURROGATES), "weight_init": set(WEIGHT_INITS), "schedule": set(C.SCHEDULES)}
    for dest, names in registered.items():
        assert set(by_dest[dest].choices) == names, dest
        for name in names - {TFDS_PREFIX + "NAME[/CONFIG]"}:
            assert getattr(flags.parse_args(training_parser(), [f"--{dest.replace('_', '-')}", name]), dest) == name
        with pytest.raises(SystemExit):
            flags.parse_args(training_parser(), [f"--{dest.replace('_', '-')}", "no_such_name"])


def test_old_flat_config_dicts_still_load():
    config = TrainConfig.from_dict(FLAT)
    assert config == TrainConfig(**FLAT)  # load_ticket's TrainConfig(**meta["config"])
    assert config.lif == LIFSettings(reset="soft") and config.reset == "soft"
    assert config.to_dict() == FLAT and list(config.to_dict()) == list(FLAT)  # files keep their layout and order
    nested = dataclasses.asdict(config)
    assert nested["lif"]["reset"] == "soft" and TrainConfig.from_dict(nested) == TrainConfig(**nested) == config
    # a workdir's config.json: the record, its signature and other keys
    record = {**FLAT, "signature": run_signature("imp", config), "imp": {"rounds": 3}, "processes": 1}
    assert TrainConfig.from_dict(record) == config
    assert dataclasses.replace(config, decay=0.5).lif.decay == 0.5 and config.decay == 0.25


def test_signature_keys_are_unchanged():
    assert list(run_signature("imp", TrainConfig())) == ["method", *SIGNATURE_KEYS]  # a CPU run's
    config = TrainConfig.from_dict(FLAT)
    assert run_signature("imp", config) == {"method": "imp", **{k: FLAT[k] for k in SIGNATURE_KEYS}}


def test_lif_settings_defaults_are_the_neurons():
    from jsnn.neuron import LIFConfig
    from jsnn.surrogate import Surrogate

    assert LIFSettings().neuron() == LIFConfig()
    settings = LIFSettings(surrogate="rectangle", surrogate_width=0.5, decay=0.5, threshold=0.7, reset="soft",
                           detach_reset=False, remat=True)
    assert settings.neuron() == LIFConfig(decay=0.5, threshold=0.7, reset="soft", detach_reset=False,
                                          surrogate=Surrogate("rectangle", 0.5), remat=True)


def test_presets_live_in_config():
    assert C.option_presets("imp", "cifar100") == {"rewind_epoch": 20}
    assert C.option_presets("imp", "digits") == {"rewind_epoch": 2}
    assert C.option_presets("edge_popup", "cifar10") == {"sparsities": (0.1, 0.3, 0.5, 0.7, 0.9)}
    assert C.option_presets("edge_popup", "digits") == {"sparsities": (0.5,)}
    assert C.option_presets("energy", "cifar10") == {"mask_lr": 1e-4, "finetune_epochs": 75}
    assert C.option_presets("energy", "nmnist") == {"mask_lr": 0.01, "finetune_epochs": 5}  # no entry: digits'
    assert C.METHOD_PRESETS["imp"]["cifar"] == {"rewind_epoch": 20}


def write_config(tmp_path, body):
    path = tmp_path / "exp.py"
    path.write_text("import ml_collections\nfrom ml_collections.config_dict import placeholder\n\n"
                    "def get_config():\n    config = ml_collections.ConfigDict()\n"
                    + "".join(f"    {line}\n" for line in body) + "    return config\n")
    return str(path)


def test_config_file_with_overrides(tmp_path):
    path = write_config(tmp_path, ["config.method = 'dense'", "config.epochs = 5", "config.lr = 0.2",
                                   "config.model = 'vgg_small'",
                                   "config.lif = ml_collections.ConfigDict(dict(decay=0.5, threshold=1.0, "
                                   "surrogate_width=placeholder(float)))"])
    argv = ["--config", path, "--config.lr=0.05", "--config.lif.threshold", "0.8", "--config.lif.surrogate_width=2",
            "-T", "2"]
    config = flags.training_config(flags.parse_args(training_parser(), argv, method="dense"), "dense")
    assert config == TrainConfig(epochs=5, lr=0.05, model="vgg_small", timesteps=2, decay=0.5, threshold=0.8,
                                 surrogate_width=2.0).resolve("dense")
    # explicit flags win over the file and its overrides
    args = flags.parse_args(training_parser(), ["--config", path, "--config.epochs=7", "--epochs", "1"])
    assert args.epochs == 1 and args.config == path


@pytest.mark.parametrize("argv, words", [
    (["--config.lr=0.1"], "give the file with --config"),
    (["--config", "{path}", "--config.lr=fast"], "--config.lr=fast: expected float"),
    (["--config", "{path}", "--config.epochs=1.5"], "--config.epochs=1.5: expected int"),
    (["--config", "{path}", "--config.nothing=1"], "has no field 'nothing'"),
    (["--config", "{path}", "--config.lif.nothing=1"], "has no field 'lif.nothing'"),
    (["--config", "no/such/file.py"], "no such file"),
])
def test_config_file_errors_are_one_line(tmp_path, capsys, argv, words):
    path = write_config(tmp_path, ["config.epochs = 5", "config.lr = 0.2",
                                   "config.lif = ml_collections.ConfigDict(dict(decay=0.5))"])
    with pytest.raises(SystemExit) as e:
        flags.parse_args(training_parser(), [a.format(path=path) for a in argv])
    assert e.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("body, words", [
    (["config.model = 'resnet99'"], "the config's model must be one of"),
    (["config.epochs = 2.5"], "the config's epochs must be an integer"),
    (["config.momentum = 'high'"], "the config's momentum could not convert"),
    (["config.remat = 1"], "the config's remat must be true or false"),
    (["config.colour = 'red'"], "'colour' is no flag of this program"),
    (["config.lif = ml_collections.ConfigDict(dict(colour=1))"], "lif.colour is no neuron setting"),
    (["config.method = 'imp'"], "is a imp experiment; this program runs dense"),
])
def test_config_file_values_are_checked_against_the_flags(tmp_path, capsys, body, words):
    with pytest.raises(SystemExit):
        flags.parse_args(training_parser(), ["--config", write_config(tmp_path, body)], method="dense")
    assert words in capsys.readouterr().err


def test_config_values_are_validated_by_train_config(tmp_path):
    path = write_config(tmp_path, ["config.lif = ml_collections.ConfigDict(dict(threshold=-1.0))"])
    with pytest.raises(ValueError, match="--threshold"):
        flags.training_config(flags.parse_args(training_parser(), ["--config", path]), "dense")


def test_import_jsnn_sets_only_its_cpu_convolution_flag():
    """import jsnn puts its one flag first (jsnn/xla_flags.py), keeps the user's others, and leaves a user's
    own setting of that flag alone."""
    from jsnn.xla_flags import CPU_CONV_FLAG

    code = ("import os, jsnn, jsnn.config, jsnn.models, jsnn.trainer, jsnn.xla_flags\n"
            "print(repr(os.environ.get('XLA_FLAGS')))")
    mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    envs = ({}, {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}, {"XLA_FLAGS": mine})
    want = [CPU_CONV_FLAG, f"{CPU_CONV_FLAG} --xla_cpu_enable_fast_math=false", mine]
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JSNN_KEEP_XLA_FLAGS")}
    outs = run_together([[sys.executable, "-c", code]] * len(envs), timeout=120, cwd=ROOT,
                        envs=[{**base, "JAX_PLATFORMS": "cpu", **env} for env in envs])
    for flags_wanted, out in zip(want, outs, strict=True):
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == repr(flags_wanted)


def test_configuration_and_start_up_use_no_private_jax_module():
    sources = [ROOT / "jsnn" / "__init__.py", ROOT / "jsnn" / "config.py", ROOT / "jsnn" / "xla_flags.py",
               *(ROOT / "train").glob("*.py"), *(ROOT / "configs").glob("*.py")]
    assert not [str(p) for p in sources if "jax._src" in p.read_text()]


def program(name):
    """train/NAME.py as a module (its parser and option building; main is not run)."""
    spec = importlib.util.spec_from_file_location(f"train_program_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolved(name, argv):
    """(TrainConfig, resolved options) the program would run for ``argv``."""
    args = flags.parse_args(program(name).parser(), argv, method=name)
    return flags.method_settings(args, name)


@pytest.mark.parametrize("name, config_file, same_as", [
    ("imp", "imp_cifar100_resnet19.py", []),
    ("imp", "sf_imp1_cifar100_resnet19.py", ["--criterion", "sf"]),
    ("imp", "sf_imp2_cifar100_resnet19.py", ["--criterion", "sf", "--dns"]),
    ("edge_popup", "edge_popup_cifar100_vgg16.py", ["--dataset", "cifar100"]),
    ("dense", "digits.py", []),
    ("imp", "digits.py:imp", ["--dataset", "digits"]),
    ("edge_popup", "digits.py:edge_popup", []),
])
def test_experiment_configs_are_the_presets(name, config_file, same_as):
    """Each paper experiment's config file runs what the program's presets run."""
    assert resolved(name, ["--config", f"{ROOT}/configs/{config_file}"]) == resolved(name, same_as)


def test_experiment_config_overrides_and_flags():
    path = f"{ROOT}/configs/sf_imp2_cifar100_resnet19.py"
    config, options = resolved("imp", ["--config", path, "--config.rounds=5", "--config.lif.decay=0.5",
                                       "--config.lr", "0.05", "--epochs", "30", "--rewind-epoch", "3"])
    expected = TrainConfig(dataset="cifar100", lr=0.05, epochs=30, decay=0.5).resolve("imp")
    assert config == expected and config.lif.decay == 0.5
    assert (options.rounds, options.rewind_epoch, options.criterion, options.dns) == (5, 3, "sf", True)
    _, ep = resolved("edge_popup", ["--config", f"{ROOT}/configs/edge_popup_cifar100_vgg16.py",
                                    "--config.sparsity=0.5,0.9"])
    assert ep.sparsities == (0.5, 0.9)


def test_program_choices_come_from_the_registries(monkeypatch):
    from jsnn.sparsity import distributions
    from jsnn.sparsity.criteria import CRITERIA

    monkeypatch.setitem(CRITERIA, "my_criterion", CRITERIA["magnitude"])
    monkeypatch.setitem(distributions.DISTRIBUTIONS, "my_scope", distributions.DISTRIBUTIONS["uniform"])
    args = flags.parse_args(program("imp").parser(), ["--criterion", "my_criterion", "--scope", "my_scope"])
    assert (args.criterion, args.scope) == ("my_criterion", "my_scope")
    by_dest = {a.dest: a for a in program("edge_popup").parser()._actions}
    assert list(by_dest["distribution"].choices) == sorted(distributions.SHAPE_DENSITIES)


@pytest.mark.parametrize("field, value, message", [
    ("checkpoint_min_seconds", -1.0, "--checkpoint-min-seconds must be >= 0"),
    ("checkpoint_every_steps", -2, "--checkpoint-every-steps must be >= 0"),
    ("checkpoint_every", 0, "--checkpoint-every must be >= 1"),
])
def test_checkpoint_cadences_are_checked(field, value, message):
    config = dataclasses.replace(TrainConfig(), epochs=1, batch_size=1, timesteps=1, lr=0.1)
    config.validate()
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(config, **{field: value}).validate()
