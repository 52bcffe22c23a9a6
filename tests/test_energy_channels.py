"""Removed channels in the NIR export (jsnn/interop/channels.py): the graph without a ticket's removed
channels is smaller by exactly those channels and, run in snnTorch, gives the predictions (and, up to
float summation order, the outputs and the kept neurons' spikes) of the full graph and of jsnn."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import data as jdata
from jsnn.config import TrainConfig
from jsnn.interop import from_nir, to_nir
from jsnn.interop.channels import drop_channels, drop_removed_channels
from jsnn.interop.torch_sims import run_torch, snntorch_module
from jsnn.layers import BNConfig
from jsnn.models import SpikingResNet, build_model
from jsnn.objective import predictions
from jsnn.sparsity import gated_synops
from jsnn.variables import apply_model, by_name, from_names, init_variables

pytest.importorskip("snntorch")


def calibrated(model, variables, images):
    """BN running statistics from ``images`` (momentum 1), so every layer spikes."""
    cal = model.clone(bn=dataclasses.replace(model.bn, momentum=1.0))
    _, stats, _ = jax.jit(lambda v, x: apply_model(cal, v, x, train=True))(variables, jnp.asarray(images))
    return variables._replace(batch_stats=stats)


@pytest.fixture(scope="module")
def digits():
    return jdata.load_dataset("digits")


def with_removed(model, variables, image_shape, remove: dict, seed=0):
    """Random half masks, then ``remove`` ({producer: [channels]}) cut: fan-in and fan-out masked."""
    rng = np.random.default_rng(seed)
    groups = {g.producer: g for g in gated_synops.neuron_groups(model.layers(image_shape))}
    named = {k: (rng.random(m.shape) < 0.6).astype(np.float32) for k, m in by_name(variables.masks).items()}
    for producer, channels in remove.items():
        g = groups[producer]
        gate = np.ones(g.channels, np.float32)
        gate[channels] = 0
        named = {k: np.asarray(v) for k, v in gated_synops.gated_masks(
            {k: jnp.asarray(v) for k, v in named.items()}, {producer: jnp.asarray(gate)}, [g], fan_in=True).items()}
    return variables._replace(masks=from_names({k: jnp.asarray(v) for k, v in named.items()}))


def run_snntorch(graph, images, timesteps):
    outputs, spikes = run_torch(snntorch_module(graph), np.moveaxis(images, -1, -3), timesteps, len(images))
    return np.asarray(outputs), spikes


def test_digits_ticket_without_its_removed_channels_runs_the_same_in_snntorch(digits):
    config = TrainConfig(dataset="digits", timesteps=4).resolve("imp")
    model = build_model(config, digits.num_classes)
    images = np.asarray(jdata.normalize(digits.test_images[:120], digits.mean, digits.std))
    v = init_variables(model, jax.random.key(1), (1, 8, 8, 1))
    v = calibrated(model, v, np.asarray(jdata.normalize(digits.train_images[:256], digits.mean, digits.std)))
    remove = {"conv0": [1, 4], "conv1": [3], "conv2": [0, 7, 127]}
    v = with_removed(model, v, (8, 8, 1), remove)
    full = to_nir(model, v, (8, 8, 1), digits.mean, digits.std)
    shrunk, removed = drop_removed_channels(full, model, v.masks, (8, 8, 1))
    assert removed == remove
    # exactly those channels are gone, everywhere their spikes went
    assert shrunk.nodes["conv0"].weight.shape == (30, 1, 3, 3) and shrunk.nodes["conv0"].bias.shape == (30,)
    assert shrunk.nodes["conv0_lif"].tau.shape == (30, 8, 8)
    assert shrunk.nodes["conv1"].weight.shape == (63, 30, 3, 3)
    assert shrunk.nodes["pool0_or"].v_threshold.shape == (63, 4, 4)
    assert shrunk.nodes["conv2"].weight.shape == (125, 63, 3, 3)
    assert shrunk.nodes["fc"].weight.shape == (10, 125 * 4)
    # the deleted fc columns were the exact zeros of channels 0, 7, 127 in NIR's (C, H, W) order
    gone = np.concatenate([np.arange(c * 4, c * 4 + 4) for c in (0, 7, 127)])
    assert np.all(full.nodes["fc"].weight[:, gone] == 0)
    np.testing.assert_array_equal(np.delete(full.nodes["fc"].weight, gone, axis=1), shrunk.nodes["fc"].weight)

    out_full, spikes_full = run_snntorch(full, images, 4)
    out_shrunk, spikes_shrunk = run_snntorch(shrunk, images, 4)
    logits, _, _ = apply_model(model, v, jnp.asarray(images), train=False)
    reference = np.asarray(predictions(logits))
    np.testing.assert_array_equal(np.asarray(predictions(out_shrunk)), np.asarray(predictions(out_full)))
    np.testing.assert_array_equal(np.asarray(predictions(out_shrunk)), reference)
    assert np.max(np.abs(out_shrunk - out_full)) < 1e-4
    keep = np.setdiff1d(np.arange(64), [3])
    name = [k for k in spikes_full if k.startswith("conv1_lif")][0]
    kept_full = np.asarray(spikes_full[name])[:, :, keep]
    assert np.mean(kept_full == np.asarray(spikes_shrunk[name])) >= 0.999 and kept_full.mean() > 0.01
    # jsnn's importer reads the smaller graph as a smaller network with the same predictions
    net, nv = from_nir(shrunk)
    imported, _, _ = apply_model(net, nv, jnp.asarray(images), train=False)
    np.testing.assert_array_equal(np.asarray(predictions(imported)), reference)


def test_resnet_stem_and_block_channels(digits):
    """The stem feeds block 0's conv1 and its conv shortcut; a block's conv1 feeds conv2; fc1 feeds fc2."""
    model = SpikingResNet(num_classes=10, timesteps=3, stem_features=4, stage_features=(4, 8), stage_blocks=(2, 1),
                          hidden_features=16, bn=BNConfig(affine=True))
    v = jax.jit(lambda key: init_variables(model, key, (1, 8, 8, 1)))(jax.random.key(3))
    v = calibrated(model, v, np.asarray(jdata.normalize(digits.train_images[:128], digits.mean, digits.std)))
    remove = {"stem": [2], "stage0_block1/conv1": [0, 3], "fc1": [5]}
    v = with_removed(model, v, (8, 8, 1), remove, seed=1)
    full = to_nir(model, v, (8, 8, 1))
    shrunk, removed = drop_removed_channels(full, model, v.masks, (8, 8, 1))
    assert removed == remove
    assert shrunk.nodes["stage0_block0_shortcut"].weight.shape == (4, 3, 1, 1)
    assert shrunk.nodes["stage0_block0_conv1"].weight.shape == (4, 3, 3, 3)
    assert shrunk.nodes["stage0_block1_conv2"].weight.shape == (4, 2, 3, 3)
    assert shrunk.nodes["fc2"].weight.shape == (10, 15)
    images = np.asarray(jdata.normalize(digits.test_images[:64], digits.mean, digits.std))
    out_full, _ = run_snntorch(full, images, 3)
    out_shrunk, _ = run_snntorch(shrunk, images, 3)
    np.testing.assert_array_equal(np.asarray(predictions(out_shrunk)), np.asarray(predictions(out_full)))
    assert np.max(np.abs(out_shrunk - out_full)) < 1e-4


def test_a_channel_still_read_is_not_removed():
    with pytest.raises(ValueError, match="no conv / affine node"):
        drop_channels(to_nir(build_model(TrainConfig(dataset="digits", timesteps=2).resolve("imp"), 10),
                             init_variables(build_model(TrainConfig(dataset="digits", timesteps=2).resolve("imp"), 10),
                                            jax.random.key(0), (1, 8, 8, 1)), (8, 8, 1)), {"conv9": [0]})
