"""Methods as plug-ins: a method written outside jsnn/runs runs through the one Run, registered by name.

The method here is a small but real one, "fixed random sparsity": a random mask with exactly the
kept count of a density in every layer, drawn once, and the weights trained under it (two
segments, each denser mask nested in the previous one, to exercise ``next_segment``).
"""
import ast
import dataclasses
import inspect
import json
import math

import jax
import numpy as np
import pytest

import jsnn.runs.run
from jsnn.runs import registry
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.run import Plan, Run
from jsnn.runs.tickets import round_path
from jsnn.runs.workdir import run_signature
from jsnn.sparsity import connection_penalty
from jsnn.sparsity import masks as M
from jsnn.ticket import load_ticket
from jsnn.training_rules import MaskedTraining
from jsnn.variables import Variables, by_name, from_names, init_variables
from tests.test_shi import shi_case


@dataclasses.dataclass(frozen=True)
class FixedRandomOptions:
    densities: tuple[float, ...] = (0.5, 0.25)


class FixedRandomPlan(Plan):
    """Segment k trains the weights under a random mask of density ``densities[k]`` in every layer. It writes
    only what differs from ``Plan``'s defaults: its names, its segments, its start, its entry and the
    next segment's state."""

    name = "fixed_random"
    rule = MaskedTraining()

    def __init__(self, config, options):
        super().__init__(config, options)
        self.segments = len(options.densities)
        self.label = f"fixed random ({', '.join(map(str, options.densities))})"

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
        return run.new_state(Variables(v.weights, masks, v.bn, v.batch_stats), {}, self.rule)

    def entry(self, run, state, segment):
        return {**super().entry(run, state, segment), "density_target": self.options.densities[segment]}

    def next_segment(self, run, state, segment):
        masks = self._masks(state.masks, self.options.densities[segment])
        weights = jax.tree.map(np.asarray, state.weights)
        state = state.replace(masks=jax.tree.map(jax.numpy.asarray, masks), weights=weights)
        return run.fresh_optimizer(state, self.rule, self.config.seed + segment)

    def results_fields(self):
        return {"densities": list(self.options.densities)}


def names_in_code(module) -> set[str]:
    """Every name, attribute, argument, definition, imported module and string in ``module``'s code
    (docstrings and comments left out)."""
    tree = ast.parse(inspect.getsource(module))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.arg, ast.FunctionDef, ast.ClassDef)):
            names.add(node.arg if isinstance(node, ast.arg) else node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            names.add(node.value)
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names), *(a.name for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


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


def test_a_method_registered_from_outside_runs_through_the_one_run(setup, registered, tmp_path, capsys, monkeypatch):
    config, trainer = setup
    plan = FixedRandomPlan(config, FixedRandomOptions())
    assert plan.signature == run_signature("fixed_random", config, FixedRandomOptions())
    assert "fixed_random" in registry.METHODS and registry.get_method("fixed_random") is registered
    # the run code names no method: not this one, nor any jsnn registers (their names, modules, plans)
    named = names_in_code(jsnn.runs.run)
    for name, entry in registry.METHODS.items():
        module = inspect.getmodule(entry.run)
        plans = {n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Plan) and v is not Plan}
        found = named & {name, module.__name__, *plans}
        assert not found, f"jsnn/runs/run.py names the method {name!r}: {sorted(found)}"
    phases = []
    # the run hands the C heap's free memory back as it enters some phases (jsnn/host_memory.py)
    monkeypatch.setattr(jsnn.runs.run, "release_free_memory", lambda: phases.append("release"))
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
    # where a segment starts or ends: twice an evaluation and a cost report, preparing and pruning; not each epoch
    released = [phases[i + 1] for i, name in enumerate(phases) if name == "release"]
    assert sorted(released) == sorted(["prepare", "evaluate", "evaluate", "cost_report", "cost_report", "prune"])
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


@pytest.fixture(scope="module")
def sparse_setup(digits_sparse_training):
    """test_energy's and test_sparse_training's session setup (192 / 64 digits, T = 2, batch 64, 2 epochs):
    their runs compiled its steps already."""
    config, _, trainer = digits_sparse_training
    return config, trainer


def cheap_cases(digits_imp, digits_edge_popup, sparse_setup):
    """{method: (config, trainer, options)} of every method registered in jsnn, each on a small setup whose
    steps other tests compile too (the session's trainers, or the compilation cache): a method added to the
    registry without a line here fails ``test_every_registered_method_runs_through_run_method``."""
    from jsnn.runs import dense, edge_popup, energy, imp, sparse_training

    on_imp, on_popup = (digits_imp[1], digits_imp[3]), (digits_edge_popup[1], digits_edge_popup[3])
    return {"dense": (*on_imp, dense.DenseOptions()),
            "imp": (*on_imp, imp.IMPOptions(rounds=2)),
            "edge_popup": (*on_popup, edge_popup.EdgePopupOptions(sparsities=(0.5,))),
            # test_sparse_training's and test_energy's runs
            "sparse_training": (*sparse_setup, sparse_training.SparseTrainingOptions(algorithm="rigl", sparsity=0.9,
                                                                                     update_every=3)),
            "energy": (*sparse_setup, energy.EnergyOptions(synops_budget=20000, finetune_epochs=1, mask_lr=0.05)),
            # the sparse-training setup at Shi et al.'s TrainConfig presets (its trainer: the same data and steps)
            "shi": (shi_case(sparse_setup[0])[0], sparse_setup[1], shi_case(sparse_setup[0])[1])}


def test_every_registered_method_runs_through_run_method(digits_imp, digits_edge_popup, sparse_setup, tmp_path):
    """Each method of the registry, called as the programs call it (``run_method(name, config, options,
    workdir)``), trains on a small digits setup and writes its results; its options and its TrainConfig preset
    are the entry's."""
    cases = cheap_cases(digits_imp, digits_edge_popup, sparse_setup)
    assert set(cases) == set(registry.METHODS), "a registered method has no case here"
    for name, entry in registry.METHODS.items():
        config, trainer, options = cases[name]
        assert isinstance(options, entry.options) and entry.summary
        # the setup is the entry's preset (explicit settings aside)
        assert config == dataclasses.replace(config, model=None, lr=None, bn_affine=None).resolve(entry.preset)
        results = registry.run_method(name, config, options, str(tmp_path / name), trainer=trainer,
                                      outputs=Outputs(plots=False, cost_report=False))
        with open(tmp_path / name / "results.json") as f:
            assert json.load(f) == json.loads(json.dumps(results)), name
        runs = results["runs"]
        assert results["method"] == name and [e["label"] for e in runs] == LABELS[name], name
        for e in runs:
            assert set(e) >= {"test_accuracy", "test_loss", "method_label"}, (name, e)
        if name == "energy":  # the search, then the ticket within the budget
            assert runs[1]["synops_per_image"] <= 20000 and runs[1]["within_budget"]
        elif name == "shi":  # the search, then the finetuned ticket with its per-position neuron gates
            check_shi_ticket(results, tmp_path / name)
        if name in ("energy", "shi"):  # the log's lr: the cosine the weights follow over search and finetune
            check_logged_learning_rate(config, options, trainer.steps_per_epoch, tmp_path / name)
        else:
            assert [e["sparsity"] for e in runs] == pytest.approx(SPARSITY[name], abs=2e-3), name


# each case's entries and their measured sparsity: dense; IMP's rounds 0 and 1 (25 % of the weights, global);
# edge-popup's level; RigL at 0.9; the energy search and its finetuned ticket
LABELS = {"dense": ["dense"], "imp": ["round 0", "round 1"], "edge_popup": ["sparsity 0.50"],
          "sparse_training": ["sparsity 0.90"], "energy": ["round 0", "round 1"], "shi": ["round 0", "round 1"]}
SPARSITY = {"dense": [0.0], "imp": [0.0, 0.25], "edge_popup": [0.5], "sparse_training": [0.9]}


def check_logged_learning_rate(config, options, steps_per_epoch: int, workdir) -> None:
    """Each epoch's ``learning_rate`` in metrics.jsonl is lr * (1 + cos(pi * step / total)) / 2 at the epoch's last
    step, total the steps of the search's --epochs and the finetune's epochs together (the schedule the weights'
    optimizer steps with; the TrainConfig's own would reach 0 at the search's end)."""
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    total = (config.epochs + options.resolve(config).finetune_epochs) * steps_per_epoch
    steps = [(i + 1) * steps_per_epoch for i in range(len(records))]
    assert len(records) == config.epochs + options.resolve(config).finetune_epochs
    expected = [config.lr * (1 + math.cos(math.pi * min(step, total) / total)) / 2 for step in steps]
    assert [r["learning_rate"] for r in records] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert records[config.epochs - 1]["learning_rate"] > 0  # the search ends before the schedule does


def check_shi_ticket(results: dict, workdir) -> None:
    """Shi et al.'s run: its ticket holds binary per-position gates after conv1 and conv2 (not after the first conv
    or the classifier), and its entry's connection and neuron fractions are the ticket's."""
    search, final = results["runs"]
    assert [search["phase"], final["phase"]] == ["search", "finetune"]
    assert results["usage_constants"]["c_n"] == {"conv1": 128 * 9, "conv2": 10}
    ticket = load_ticket(str(workdir / "ticket.npz"))
    gates = by_name(ticket.variables.gates)
    assert {k: g.shape for k, g in gates.items()} == {"conv1": (8, 8, 64), "conv2": (4, 4, 128)}
    assert all(set(np.unique(g)) <= {0.0, 1.0} for g in gates.values())
    assert final["neuron_fraction"] == pytest.approx(sum(g.sum() for g in gates.values())
                                                     / sum(g.size for g in gates.values()))
    conn, total = connection_penalty.connections(ticket.model.layers((8, 8, 1)), by_name(ticket.variables.masks), gates)
    assert final["connection_fraction"] == pytest.approx(conn / total) and 0 < conn < total
    assert final["sparsity"] == pytest.approx(M.sparsity_of(ticket.variables.masks))
