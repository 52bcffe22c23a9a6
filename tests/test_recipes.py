"""The recipes of published runs (configs/*.py with PUBLISHED, docs/reproduce.md): each loads through its
program as the command in docs/reproduce.md gives it, with the paper's values, and takes one training step of
the recipe's method on made-up data.

Every recipe's full-width network at the recipe's batch and image is checked by ``jax.eval_shape`` (shapes
only, nothing computed). The recipes on the testbed networks (Shi et al.'s, energy pruning) take one real
step at the recipe's image shape, T and classes, with the width cut to a sliver and a batch of 2 (the full
networks at the recipes' batches are minutes of CPU per step), the ImageNet one at 32 x 32; the recipes on
jsnn's own networks (IMP, edge-popup) trace their step at full width and the recipe's batch."""
import ast
import dataclasses
import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import data as jdata
from jsnn import parallel
from jsnn.models import build_model
from jsnn.runs import edge_popup as edge_popup_run
from jsnn.runs import energy as energy_run
from jsnn.runs import shi as shi_run
from jsnn.runs.run import Run
from jsnn.sparsity.score_masks import init_scores
from jsnn.trainer import Trainer, create_state, make_optimizer, make_train_step
from jsnn.training_rules import MaskedTraining
from jsnn.variables import apply_model, init_variables, kernels

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train"))
import flags  # noqa: E402

# recipe -> (program, method, overrides a run must give, classes, image shape of one example)
RECIPES = {
    "shi_energy_cifar10_cifar10net.py": ("shi", "shi", [], 10, (32, 32, 3)),
    "shi_energy_cifar10dvs_vggsnn.py": ("energy", "energy", ["--config.synops_budget=1e6"], 10, (10, 48, 48, 2)),
    "shi_energy_imagenet_sew_resnet18.py": ("energy", "energy", ["--config.synops_budget=1e9"], 1000, (224, 224, 3)),
    "imp_cifar10_resnet19.py": ("imp", "imp", [], 10, (32, 32, 3)),
    "imp_cifar100_resnet19.py": ("imp", "imp", [], 100, (32, 32, 3)),
    "sf_imp1_cifar100_resnet19.py": ("imp", "imp", [], 100, (32, 32, 3)),
    "edge_popup_cifar100_vgg16.py": ("edge_popup", "edge_popup", [], 100, (32, 32, 3)),
}
SLIVER = 1 / 32  # width of the network that takes the real step
REAL_STEP_T = 2  # its timesteps: the recipes' 4 to 10 unrolled over T only multiply the step's tracing
# the real step's image where the recipe's is big, and its event frames (one per timestep)
REDUCED = {"shi_energy_imagenet_sew_resnet18.py": (32, 32, 3),
           "shi_energy_cifar10dvs_vggsnn.py": (REAL_STEP_T, 48, 48, 2)}


def _program(name):
    spec = importlib.util.spec_from_file_location(f"train_program_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name[:-3]}", ROOT / "configs" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _published_files():
    """Every configs/*.py that records a published run (a PUBLISHED dict), read without running it."""
    out = {}
    for path in sorted((ROOT / "configs").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PUBLISHED" for t in node.targets):
                out[path.name] = ast.literal_eval(node.value)
    return out


def test_every_published_recipe_is_tested_and_in_reproduce_md():
    published = _published_files()
    assert sorted(published) == sorted(RECIPES)
    page = (ROOT / "docs" / "reproduce.md").read_text()
    for name, p in published.items():
        assert set(p) == {"paper", "setting", "reported", "source", "command", "data"}, name
        assert f"configs/{name}" in p["command"], name
        # the page quotes each recipe's number and command as the file has them
        assert p["reported"] in page and p["command"] in page, name


def _parse(name):
    """(TrainConfig, the method's options, program args) of the recipe's command, as its program builds them."""
    program, method, overrides, _, _ = RECIPES[name]
    prog = _program(program)
    args = flags.parse_args(prog.parser(), ["--config", str(ROOT / "configs" / name), *overrides], method=method)
    return (*flags.method_settings(args, method), args)


def _made_up(config, classes, image_shape, n=2):
    """An ArrayDataset of ``n`` random uint8 examples of ``image_shape`` (event counts for frames)."""
    rng = np.random.default_rng(0)
    high = 4 if len(image_shape) == 4 else 256
    images = rng.integers(0, high, (n,) + image_shape).astype(np.uint8)
    labels = np.arange(n, dtype=np.int32) % classes
    frames = len(image_shape) == 4
    channels = image_shape[-1]
    return jdata.ArrayDataset(name=config.dataset, train_images=images, train_labels=labels, test_images=images,
                              test_labels=labels, num_classes=classes, mean=(float(high) / 2,) * channels,
                              std=(float(high) / 4,) * channels,
                              augment=jdata.AugmentConfig(crop_padding=0, flip=False),
                              timesteps=image_shape[0] if frames else None)


def _one_step(trainer, rule, state, optimizer):
    train = trainer.jitted_steps(rule, optimizer)[0]
    d = trainer.dataset
    state, m = train(state, *parallel.put_batch(trainer.mesh, *jdata.shard_for_process(d.train_images,
                                                                                         d.train_labels)),
                     trainer.stop_flags())
    return state, float(m["loss"])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads_and_takes_one_step(name):
    program, method, overrides, classes, image_shape = RECIPES[name]
    recipe = _recipe(name)
    values = recipe.get_config()
    config, options, args = _parse(name)
    # the program runs the recipe's values
    for key in ("model", "timesteps", "epochs", "batch_size", "lr", "weight_decay", "schedule", "width"):
        assert getattr(config, key) == values[key], (name, key)
    assert dataclasses.asdict(config.lif) == {**dict(values.lif), "surrogate_width": config.lif.surrogate_width}
    # the full network at the recipe's batch and image: shapes only
    model = build_model(config, classes)
    full = (values.batch_size,) + image_shape
    variables = jax.eval_shape(lambda key: init_variables(model, key, (1,) + image_shape), jax.random.key(0))
    logits = jax.eval_shape(lambda v, x: apply_model(model, v, x, train=True)[0], variables,
                            jax.ShapeDtypeStruct(full, jnp.float32))
    assert logits.shape == (config.timesteps, values.batch_size, classes)
    if method not in ("energy", "shi"):
        # IMP's and edge-popup's recipes run jsnn's own networks (Res-SNN-19, SNN-VGG-16), whose steps the
        # suite compiles elsewhere: their step at full width and the recipe's batch, traced (shapes only)
        if method == "edge_popup":
            assert options.sparsities == tuple(values.sparsity)
            m = edge_popup_run.edge_popup_rule(model, variables.weights, options.sparsities[0], options)
        else:  # IMP's rounds: masked training (the first round dense)
            assert options.rounds == values.rounds
            m = MaskedTraining()
        dataset = _made_up(config, classes, image_shape, n=values.batch_size)
        optimizer = make_optimizer(config, 1)
        step = make_train_step(model, m, optimizer, dataset, dataset.augment)

        def one_step(key, images, labels):
            v = init_variables(model, key, (1,) + image_shape)
            scores = init_scores(key, kernels(v.weights)) if method == "edge_popup" else {}
            return step(create_state(v, scores, m, optimizer, 0), images, labels, jnp.zeros((1,), jnp.float32))

        state, metrics = jax.eval_shape(one_step, jax.random.key(0), dataset.train_images, dataset.train_labels)
        assert metrics["loss"].shape == () and state.step.shape == ()
        assert jax.tree.map(lambda x: x.shape, state.weights) == jax.tree.map(lambda x: x.shape, variables.weights)
        return
    # the energy and Shi recipes run the testbed networks: one real step, at a sliver of the width and a batch of 2
    assert (options.finetune_epochs, options.optimizer) == (values.finetune_epochs, values.optimizer)
    if method == "shi":  # the paper's settings of the method itself
        assert (options.penalty_lambda, options.mask_lr, options.mask_init, options.beta0, options.beta1) == (
            values.penalty_lambda, values.mask_lr, values.mask_init, values.beta0, values.beta1)
    small = dataclasses.replace(config, width=SLIVER, batch_size=2, timesteps=REAL_STEP_T, progress=False)
    dataset = _made_up(small, classes, REDUCED.get(name, image_shape))
    model = build_model(small, classes)
    plan = (shi_run.ShiPlan if method == "shi" else energy_run.EnergyPlan)(small, options)
    run = Run(plan, small, "unused: no file is written", trainer=Trainer(small, model, dataset))
    run.optimizer = plan.optimizer(run.trainer)  # what Run.execute sets before setup
    state = plan.setup(run)
    state, loss = _one_step(run.trainer, plan.search, state, run.optimizer)
    assert np.isfinite(loss) and loss > 0, name
    assert int(state.step) == 1

