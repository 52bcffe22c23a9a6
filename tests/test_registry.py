"""Methods as plug-ins: a method written outside jsnn/runs runs through the one Run, registered by name.

The method here is a small but real one, "fixed random sparsity": a random mask with exactly the
kept count of a density in every layer, drawn once, and the weights trained under it (two
segments, each denser mask nested in the previous one, to exercise ``next_segment``).
"""
import dataclasses
import inspect
import json

import jax
import numpy as np
import pytest

import jsnn.runs.run
from jsnn.methods import MaskedTraining
from jsnn.runs import registry
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Plan, Run
from jsnn.runs.tickets import round_path
from jsnn.runs.workdir import run_signature
from jsnn.sparsity import masks as M
from jsnn.ticket import load_ticket
from jsnn.variables import Variables, by_name, from_names, init_variables


@dataclasses.dataclass(frozen=True)
class FixedRandomOptions:
    densities: tuple[float, ...] = (0.5, 0.25)


class FixedRandomPlan:
    """Segment k trains the weights under a random mask of density ``densities[k]`` in every layer."""

    name = "fixed_random"

    def __init__(self, config, options):
        self.config, self.options = config, options
        self.signature = run_signature(self.name, config, options)
        self.segments = len(options.densities)
        self.label = f"fixed random ({', '.join(map(str, options.densities))})"
        self.method = MaskedTraining()

    def _masks(self, like, density):
        key = jax.random.key(self.config.seed + 1)
        out = {}
        for i, (name, m) in enumerate(by_name(like).items()):
            order = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
            flat = np.zeros(m.size, np.float32)
            flat[order[:round(m.size * density)]] = 1  # a prefix of one order: denser masks nest sparser ones
            out[name] = flat.reshape(m.shape)
        return from_names(out)

    def setup(self, run):
        v = init_variables(run.model, jax.random.key(self.config.seed), (1,) + run.dataset.image_shape)
        masks = self._masks(v.masks, self.options.densities[0])
        return run.trainer.new_state(Variables(v.weights, masks, v.bn, v.batch_stats), {}, self.method,
                                     self.config.seed)

    def training(self):
        return self.method

    def restore(self, run, state, extra, meta):
        pass

    def checkpoint_like(self, state, meta):
        return {}

    def checkpoint_extra(self):
        return {}

    def checkpoint_info(self):
        return {}

    def segment_label(self, segment):
        return {"round": segment}

    def train(self, run, state, start, partial_epoch):
        return run.train_segment(state, start, partial_epoch)

    def entry(self, run, state, segment):
        return {"round": segment, "sparsity": run.trainer.sparsity(state, self.method),
                "density_target": self.options.densities[segment]}

    def ticket_path(self, run, segment):
        return round_path(run.workdir, segment)

    def next_segment(self, run, state, segment):
        masks = self._masks(state.masks, self.options.densities[segment])
        weights = jax.tree.map(np.asarray, state.weights)
        state = state.replace(masks=jax.tree.map(jax.numpy.asarray, masks), weights=weights)
        return run.trainer.fresh_optimizer(state, self.method, self.config.seed + segment)

    def results_fields(self):
        return {"densities": list(self.options.densities)}

    def figures(self, run, results):
        pass


def run_fixed_random(config, options, workdir, *, trainer=None, outputs=Outputs(), hooks=RunHooks()):
    return Run(FixedRandomPlan(config, options), config, workdir, trainer=trainer, outputs=outputs,
               hooks=hooks).execute()


@pytest.fixture
def registered():
    entry = registry.register_method(registry.MethodEntry("fixed_random", FixedRandomOptions, run_fixed_random,
                                                          preset="imp", summary="a test plug-in"))
    yield entry
    registry.METHODS.pop("fixed_random")


@pytest.fixture(scope="module")
def setup(digits_imp):
    """The session's small digits IMP setup (tests/small_data.py): 256 images, T = 2, batch 64, 2 epochs."""
    _, config, _, trainer = digits_imp
    return config, trainer


def test_a_method_registered_from_outside_runs_through_the_one_run(setup, registered, tmp_path, capsys):
    config, trainer = setup
    assert isinstance(FixedRandomPlan(config, FixedRandomOptions()), Plan)
    assert "fixed_random" in registry.METHODS and registry.get_method("fixed_random") is registered
    # nothing in the run code names the method
    assert "fixed_random" not in inspect.getsource(jsnn.runs.run)
    phases = []
    results = registry.run_method("fixed_random", config, FixedRandomOptions(), str(tmp_path), trainer=trainer,
                                  outputs=Outputs(plots=False),
                                  hooks=RunHooks(on_phase=lambda name, where: phases.append(name)))
    assert results["method"] == "fixed_random" and results["label"] == "fixed random (0.5, 0.25)"
    assert [r["label"] for r in results["runs"]] == ["round 0", "round 1"]
    assert [r["sparsity"] for r in results["runs"]] == pytest.approx([0.5, 0.75], abs=2e-3)
    # what the Run adds for every method: the ticket with its labels, its cost pass, results.json, phases
    for k, density in enumerate((0.5, 0.25)):
        ticket = load_ticket(round_path(str(tmp_path), k))
        assert ticket.info["method_label"] == results["label"] and ticket.info["label"] == f"round {k}"
        kept, total = M.count_kept(ticket.variables.masks)
        assert abs(kept - total * density) <= len(by_name(ticket.variables.masks))  # per-layer rounding
        assert "efficiency" in results["runs"][k] and "efficiency" not in ticket.info
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["runs"] == results["runs"]
    for phase in ("prepare", "train", "batch", "epoch_end", "checkpoint", "evaluate", "ticket", "cost_report",
                  "results", "prune"):
        assert phase in phases, phase
    assert "plots" not in phases  # Outputs(plots=False)
    # rerunning it finds it finished
    capsys.readouterr()
    again = registry.run_method("fixed_random", config, FixedRandomOptions(), str(tmp_path), trainer=trainer)
    assert again == results and "already complete" in capsys.readouterr().out


def test_run_method_checks_its_options_and_names(setup, tmp_path):
    config, trainer = setup
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        registry.run_method("nope", config, FixedRandomOptions(), str(tmp_path))
    with pytest.raises(TypeError, match="takes IMPOptions"):
        registry.run_method("imp", config, FixedRandomOptions(), str(tmp_path))
    assert {"dense", "edge_popup", "imp"} <= set(registry.METHODS)
