"""SET and RigL tickets through the pieces every method shares (issue 22 item 7), unchanged: a run
stopped by SIGTERM mid-epoch and rerun ends with the results and ticket bytes of an uninterrupted
run; its workdir refuses a run with other settings; the cost report measures the ticket; the NIR
export of the ticket runs in snnTorch spike for spike with jsnn.

The signal is sent from the run's own hooks (as tests/test_signal_phases.py does), so it lands at
one chosen batch. One trainer serves every run of the module, so each step compiles once.
"""
import os
import signal

import jax
import nir
import numpy as np
import pytest

from jsnn import preemption
from jsnn.config import TrainConfig
from jsnn.interop import to_nir
from jsnn.interop.check import check_export
from jsnn.interop.compare import jsnn_layer_spikes
from jsnn.models import build_model
from jsnn.objective import preprocess
from jsnn.runs import sparse_training
from jsnn.runs.outputs import Outputs, RunHooks
from jsnn.runs.report import run_report
from jsnn.runs.workdir import RunMismatchError
from jsnn.ticket import load_ticket
from jsnn.trainer import Trainer
from jsnn.variables import by_name, kernels
from tests.outcomes import run_outcome as outcome
from tests.outcomes import untimed
from tests.small_data import digits_subset

ALGORITHMS = ("set", "rigl")
STOP_AT = {"segment": 0, "epoch": 1, "batch": 2}  # inside the second epoch, after mask updates at steps 0..10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Digits (256 training images, batch 32: 8 steps an epoch; the whole test set, as the cost report
    measures it), width 0.25, T = 2, 2 epochs; SET / RigL at 80 % updating every 2 steps up to the end
    step 12; each algorithm's uninterrupted run."""
    ds = digits_subset(256, 360)
    config = TrainConfig(dataset="digits", epochs=2, timesteps=2, width=0.25, batch_size=32,
                         progress=False).resolve("sparse_training")
    trainer = Trainer(config, build_model(config, ds.num_classes), ds)
    references = {}
    for algorithm in ALGORITHMS:
        options = sparse_training.SparseTrainingOptions(algorithm=algorithm, sparsity=0.8, update_every=2)
        workdir = str(tmp_path_factory.mktemp(algorithm))
        results = sparse_training.run(config, options, workdir, trainer=trainer, outputs=Outputs(plots=False))
        references[algorithm] = (options, workdir, results, outcome(workdir))
    return config, ds, trainer, references


@pytest.fixture(autouse=True)
def no_stale_stop_request():
    preemption.clear()
    yield
    preemption.clear()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sigterm_mid_epoch_then_rerun_equals_uninterrupted_and_claim_refuses_other_settings(setup, tmp_path,
                                                                                            algorithm):
    config, ds, trainer, references = setup
    options, _, reference_results, reference = references[algorithm]
    assert reference_results["runs"][0]["mask_updates"] == 7  # steps 0, 2, .., 12 of 16 (end step 0.75 * 16)
    workdir = str(tmp_path / "w")
    sent = []

    def on_phase(name, where):
        if not sent and name == "batch" and all(where.get(k) == v for k, v in STOP_AT.items()):
            sent.append(where)
            os.kill(os.getpid(), signal.SIGTERM)

    with preemption.stop_on_signals():
        with pytest.raises(preemption.Preempted, match="stopped by SIGTERM after "):
            sparse_training.run(config, options, workdir, trainer=trainer, outputs=Outputs(plots=False),
                                hooks=RunHooks(on_phase))
    assert sent and not os.path.exists(os.path.join(workdir, "results.json"))
    preemption.clear()

    # the interrupted workdir is this run's: other settings are refused, naming the difference, and nothing changes
    before = sorted(os.listdir(workdir))
    other = sparse_training.SparseTrainingOptions(algorithm=algorithm, sparsity=0.7, update_every=2)
    with pytest.raises(RunMismatchError, match="sparsity"):
        sparse_training.run(config, other, workdir, trainer=trainer, outputs=Outputs(plots=False))
    assert sorted(os.listdir(workdir)) == before

    phases = []
    sparse_training.run(config, options, workdir, trainer=trainer, outputs=Outputs(plots=False),
                        hooks=RunHooks(lambda n, w: phases.append((n, w))))
    first_batch = next(w for n, w in phases if n == "batch")
    assert (first_batch["epoch"], first_batch["batch"]) >= (1, 0)  # resumed inside epoch 2, not from the start
    results, tickets = outcome(workdir)
    assert results == reference[0]
    assert tickets.keys() == reference[1].keys() == {"ticket.npz"}
    for k, arrays in tickets.items():
        assert arrays.keys() == reference[1][k].keys()
        for name in arrays:
            assert arrays[name] == reference[1][k][name], name
    # a finished run refuses other settings too
    with pytest.raises(RunMismatchError, match="algorithm"):
        sparse_training.run(config, sparse_training.SparseTrainingOptions(
            algorithm="rigl" if algorithm == "set" else "set", sparsity=0.8, update_every=2), workdir,
            trainer=trainer, outputs=Outputs(plots=False))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost_report_measures_the_ticket(setup, algorithm):
    config, ds, trainer, references = setup
    _, workdir, results, _ = references[algorithm]
    entry = results["runs"][0]
    ticket = load_ticket(os.path.join(workdir, "ticket.npz"))
    masks = [np.asarray(m) for m in jax.tree.leaves(ticket.variables.masks)]
    kept, total = sum(int(m.sum()) for m in masks), sum(m.size for m in masks)
    report = run_report(workdir)
    (row,) = report["tickets"]
    cost = row["efficiency"]
    assert row["method"] == results["label"] and row["ticket"] == "ticket.npz"
    assert cost["kept_weights"] == kept and cost["total_weights"] == total
    assert cost["connection_sparsity"] == pytest.approx(1 - kept / total) == pytest.approx(entry["sparsity"])
    assert cost["test_accuracy"] == pytest.approx(entry["test_accuracy"])  # the counting pass is the evaluation
    assert cost["synops_per_image"] > 0 and cost["synops_per_image"] < cost["unpruned_synops_per_image"]
    assert untimed(cost) == untimed(entry["efficiency"])  # the run's own cost pass measured the same ticket


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nir_export_runs_in_snntorch_spike_for_spike(setup, tmp_path, algorithm):
    config, ds, trainer, references = setup
    _, workdir, _, _ = references[algorithm]
    ticket = load_ticket(os.path.join(workdir, "ticket.npz"))
    path = str(tmp_path / "ticket.nir")
    nir.write(path, to_nir(ticket.model, ticket.variables, ds.image_shape, ds.mean, ds.std))
    graph = nir.read(path)
    # pruned connections are exactly zero in the exported graph (NIR weights are [out, in(, kh, kw)])
    masks, weights = by_name(ticket.variables.masks), by_name(kernels(ticket.variables.weights))
    for name in ("conv1", "conv2"):  # BN folded in: scaled per output channel, zeros where the mask is 0
        w = np.asarray(graph.nodes[name].weight)
        m = np.asarray(masks[name]).transpose(3, 2, 0, 1)
        assert np.all(w[m == 0] == 0) and 0 < np.count_nonzero(w) <= m.sum(), name
    # the linear layer: its input features reordered to NIR's flatten order, the values themselves unchanged
    fc = np.asarray(graph.nodes["fc"].weight)
    kernel = np.asarray(weights["fc"]) * np.asarray(masks["fc"])
    np.testing.assert_array_equal(np.sort(fc.ravel()), np.sort(kernel.T.ravel()))
    assert 0 < np.count_nonzero(fc) <= np.asarray(masks["fc"]).sum()
    report = check_export(ticket.model, ticket.variables, graph, ds, ["jsnn", "snntorch"], batch_size=120,
                          max_images=120)
    # the layers really spike (the agreement is not between silent networks)
    images = np.asarray(preprocess(ds.test_images[:64], ds.mean, ds.std))
    _, spikes, _ = jsnn_layer_spikes(ticket.model, ticket.variables, images, report["lif_layers"])
    for name, s in spikes.items():
        assert 0 < np.mean(s) < 0.9, (name, np.mean(s))
    for sim, r in report["simulators"].items():
        assert r["images"] == 120 and r["spikes"] > 0, sim
        assert r["prediction_agreement"] == 1.0, (sim, r)
        assert r["spike_agreement"] >= 0.999, (sim, r)
        if r["spikes_agree"] < r["spikes"]:  # a disagreement starts within float rounding of the threshold
            assert r["origin_flips"] > 0 and r["origin_max_distance_to_threshold"] < 1e-5, (sim, r)
