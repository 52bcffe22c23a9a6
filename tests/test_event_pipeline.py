"""The event-data pipeline downstream of the models: presets, frame flags and the run signature; dense,
edge-popup, IMP (SF statistics included) and the lottery-ticket controls on digits_dvs; the cost entry
and the NIR check of a trained ticket. Tiny frames (8 x 8, T = 2, a quarter-width network, one epoch),
built once into a temporary frame cache (one frame setting only: each costs a digits_dvs simulation).
The binarised frames' cost count (ACs) is checked in tests/test_event_models.py."""
import dataclasses
import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest

from jsnn import data as jdata
from jsnn.config import PRESETS, TrainConfig
from jsnn.interop import to_nir
from jsnn.interop.check import check_export
from jsnn.models import build_model
from jsnn.models.observe import observe
from jsnn.objective import preprocess
from jsnn.runs import edge_popup, imp
from jsnn.runs.dense import dense_signature, train_dense
from jsnn.runs.outputs import Outputs
from jsnn.runs.workdir import RunMismatchError, check_same_run, run_signature
from jsnn.sparsity.stats import collect_statistics
from jsnn.ticket import load_ticket
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables
from tests.outcomes import ticket_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "train"))
import flags  # noqa: E402  (train/flags.py, as the programs import it)

TINY = dict(dataset="digits_dvs", frame_size=8, timesteps=2, width=0.25, epochs=1, batch_size=256, progress=False)
QUIET = Outputs(plots=False)


@pytest.fixture(scope="module", autouse=True)
def frame_cache(tmp_path_factory):
    """A frame cache of this module's own (the frames are built once, then read)."""
    before = os.environ.get("JSNN_CACHE_DIR")
    os.environ["JSNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("frames"))
    yield
    if before is None:
        os.environ.pop("JSNN_CACHE_DIR")
    else:
        os.environ["JSNN_CACHE_DIR"] = before


def test_presets_take_the_frames_t_and_record_the_frames():
    for method in PRESETS:
        for name in jdata.EVENT_DATASETS:
            config = TrainConfig(dataset=name).resolve(method)
            frames = jdata.default_frame_settings(name)
            assert config.timesteps == frames.timesteps and config.frame_settings() == frames, (method, name)
            assert config.to_dict()["frames"] == frames.to_json()
            assert run_signature(method, config)["frames"] == frames.to_json()
    assert TrainConfig(dataset="dvs_gesture").resolve("imp").model == "vgg11"
    assert TrainConfig(dataset="cifar10_dvs").resolve("edge_popup").model == "vgg11"
    # cifar10_dvs is no CIFAR: its own presets (the CIFAR ones would give resnet19 at T = 5)
    assert TrainConfig(dataset="cifar10_dvs").resolve("dense").timesteps == 10
    # images: no frame settings, and their files hold no frame keys (as before event data)
    images = TrainConfig(dataset="digits").resolve("imp")
    assert images.frame_settings() is None
    assert not {"frames", "frames_by", "frame_size", "binarize"} & set(images.to_dict())


def test_frame_flags_map_into_frame_settings():
    p = flags.argparse.ArgumentParser()
    flags.add_training_flags(p)
    args = p.parse_args(["--dataset", "digits_dvs", "--frames-by", "count", "--frame-size", "12", "--binarize",
                         "-T", "5"])
    config = flags.training_config(args, "edge_popup")
    assert config.frame_settings() == jdata.FrameSettings(timesteps=5, slicing="count", size=(12, 12), binarise=True)
    assert config.to_dict()["frames"] == {"timesteps": 5, "slicing": "count", "size": [12, 12], "crop": None,
                                          "filter_time": 0, "binarise": True}
    # the choices come from the registries: every event dataset is a --dataset
    assert set(jdata.EVENT_DATASETS) <= set(flags.choices_of("datasets"))
    args = p.parse_args(["--dataset", "digits", "--frame-size", "12"])
    with pytest.raises(ValueError, match="--frame-size set how event data becomes frames; digits is images"):
        flags.training_config(args, "imp")


def program(name):
    spec = importlib.util.spec_from_file_location(f"event_program_{name}", os.path.join(ROOT, "train", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolved(name, argv):
    """(TrainConfig, resolved options) the program would run for ``argv`` (as tests/test_config.py)."""
    args = flags.parse_args(program(name).parser(), argv, method=name)
    return flags.method_settings(args, name)


@pytest.mark.parametrize("config_file, dataset", [("digits_dvs.py", "digits_dvs"),
                                                  ("dvs_gesture_vgg11.py", "dvs_gesture"),
                                                  ("cifar10_dvs_vgg11.py", "cifar10_dvs")])
def test_event_experiment_configs_are_the_presets(config_file, dataset):
    for name in ("dense", "imp", "edge_popup"):
        path = f"{ROOT}/configs/{config_file}" + ("" if name == "dense" else f":{name}")
        assert resolved(name, ["--config", path]) == resolved(name, ["--dataset", dataset]), (config_file, name)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dense"))
    config = TrainConfig(**TINY).resolve("dense")
    return config, workdir, train_dense(config, workdir, outputs=QUIET)


def test_dense_on_frames_cost_entry_and_workdir_of_other_frames_refused(dense_run):
    config, workdir, entry = dense_run
    dataset = jdata.load_dataset(config.dataset, frames=config.frame_settings())
    assert entry["test_accuracy"] == pytest.approx(ticket_accuracy(os.path.join(workdir, "ticket.npz"), dataset))
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["frames"] == config.frame_settings().to_json() and saved["frame_size"] == 8
    cost = entry["efficiency"]
    first = cost["layers"][0]
    # event counts (sum-pooled 34x34 -> 8x8: many pixels hold more than one event): MACs, at each of the T steps
    assert first["layer"] == "conv0" and first["runs_per_image"] == 2 and first["input"] == "real"
    assert first["macs"] > 0 and first["acs"] == 0
    assert cost["layers"][1]["input"] == "spikes"
    assert cost["encoding"].startswith("event frames")
    # a workdir of other frames is refused, as for any other setting (checked as the claim checks it; a
    # rerun would first build the other frames)
    other = dataclasses.replace(config, frame_size=7)
    with pytest.raises(RunMismatchError, match="frame_size 8 -> 7"):
        check_same_run(saved["signature"], dense_signature(other), workdir)


def test_sf_statistics_on_frames_against_the_observed_layers(dense_run):
    """The SF criterion's firing statistics on event frames: potentials of the frame-input layer's LIF (its
    currents differ per step) and the input rate of the next conv, against what the model computes."""
    config = dense_run[0]
    dataset = jdata.load_dataset(config.dataset, frames=config.frame_settings())
    model = build_model(config, dataset.num_classes)
    trainer = Trainer(config, model, dataset)
    rule = MaskedTraining()
    state = trainer.new_state(init_variables(model, jax.random.key(0), (1,) + dataset.image_shape), {}, rule, 0)
    stats = collect_statistics(trainer, state, rule, num_batches=1, seed=0)
    images, _ = next(iter(jdata.train_batches(dataset.train_images, dataset.train_labels, config.batch_size, 0,
                                               epoch=0)))
    _, seen = observe(model, state.forward_variables(rule), preprocess(images, dataset.mean, dataset.std))
    u = np.asarray(seen.neurons["conv0"].potentials, np.float64)  # [T, B, H, W, C]
    assert u.shape[:2] == (2, config.batch_size)
    assert not np.allclose(u[0], u[1])  # frame t at step t: the currents differ per step
    u = u.reshape(-1, u.shape[-1])
    np.testing.assert_allclose(stats["conv0"]["potential_mean"], u.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["conv0"]["potential_std"], u.std(0), rtol=1e-3, atol=1e-5)
    assert "input_rate" not in stats["conv0"]  # its input is frames, not spikes: SF keeps |w| there
    spikes = np.asarray(seen.connections["conv1"].inputs, np.float64)
    np.testing.assert_allclose(stats["conv1"]["input_rate"], spikes.reshape(-1, spikes.shape[-1]).mean(0),
                               rtol=1e-5)


def test_imp_sf_and_the_controls_on_frames(tmp_path):
    config = TrainConfig(**TINY).resolve("imp")
    ticket_dir = str(tmp_path / "imp")
    options = imp.IMPOptions(rounds=2, criterion="sf", calibration_batches=2).resolve(config)
    imp.run(config, options, ticket_dir, outputs=QUIET)
    rounds = json.load(open(os.path.join(ticket_dir, "results.json")))["runs"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["sparsity"] == pytest.approx(0.25, abs=0.01)
    ticket = load_ticket(os.path.join(ticket_dir, "tickets", "round_01.npz"))
    assert ticket.config.frame_settings() == config.frame_settings()
    for control in ("reinit", "random"):
        out = str(tmp_path / control)
        opts = dataclasses.replace(options, control=control, ticket_dir=ticket_dir)
        imp.run(config, opts, out, outputs=Outputs(plots=False, cost_report=False))
        runs = json.load(open(os.path.join(out, "results.json")))["runs"]
        assert runs[-1]["sparsity"] == pytest.approx(rounds[1]["sparsity"], abs=1e-3), control


def test_edge_popup_on_frames_and_its_nir_check(tmp_path):
    """An edge-popup ticket on frames exported to NIR gives the same predictions in jsnn and snnTorch,
    frame t fed at step t."""
    config = TrainConfig(**TINY).resolve("edge_popup")
    workdir = str(tmp_path / "ep")
    edge_popup.run(config, edge_popup.EdgePopupOptions(sparsities=(0.5,)), workdir, outputs=QUIET)
    level = json.load(open(os.path.join(workdir, "results.json")))["runs"][0]
    assert level["efficiency"]["layers"][0]["runs_per_image"] == 2
    ticket = load_ticket(os.path.join(workdir, "sparsity_0.50", "ticket.npz"))
    dataset = jdata.load_dataset(config.dataset, frames=ticket.config.frame_settings())
    assert dataset.image_shape == (2, 8, 8, 2)
    graph = to_nir(ticket.model, ticket.variables, dataset.image_shape, dataset.mean, dataset.std)
    report = check_export(ticket.model, ticket.variables, graph, dataset, ["jsnn", "snntorch"], batch_size=360)
    assert report["jsnn_accuracy"] == pytest.approx(level["test_accuracy"])
    for sim, r in report["simulators"].items():
        assert r["prediction_agreement"] == 1.0 and r["spike_agreement"] >= 0.999, (sim, r)
