"""Models on event frames [B, T, H, W, C]: the first layer sees frame t at step t (no repeated image).

Against a NumPy loop over the timesteps, against the static path (frames that repeat one image give
the direct-encoding outputs), the layer description's frame input, the cost count of the frame-input
layer per step by NeuroBench's rule (against a NumPy hand count), and the NIR export run in jsnn,
snnTorch and Norse with frame t fed at step t. Tiny random uint8 frames, no dataset needed.
"""
import dataclasses
import types

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest

from jsnn.efficiency.counting import FRAMES_NOTE, measure, measure_synops
from jsnn.interop import to_nir
from jsnn.interop.check import check_export
from jsnn.interop.compare import jsnn_layer_spikes
from jsnn.interop.nir_import import graph_metadata
from jsnn.layers import BNConfig
from jsnn.models import get_model
from jsnn.models.observe import observe
from jsnn.variables import apply_model, init_variables

T, H, W, C = 3, 6, 6, 2


def frames(n, seed=0, high=3, density=0.3):
    """Random event counts [n, T, H, W, C] (uint8), about ``density`` of them nonzero."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, high + 1, (n, T, H, W, C))
    return (counts * (rng.random(counts.shape) < density)).astype(np.uint8)


def run_eval(model, variables, x):
    """Logits [T, B, classes] in eval mode (jitted: op by op, a ResNet takes a minute on 2 cores)."""
    return np.asarray(jax.jit(lambda v, y: apply_model(model, v, y, train=False)[0])(variables, jnp.asarray(x,
                                                                                                       jnp.float32)))


def tiny(plan=(3,), bn_affine=False, **kw):
    return get_model("digits_cnn", 10, timesteps=T, plan=plan, bn=BNConfig(affine=bn_affine), **kw)


def with_stats(model, variables, mean, var):
    """Running BN statistics set by hand (every conv: ``mean``, ``var``)."""
    stats = jax.tree.map(lambda x: x, variables.batch_stats)
    for path in stats:
        stats[path] = {"mean": jnp.full_like(stats[path]["mean"], mean), "var": jnp.full_like(stats[path]["var"], var)}
    return variables._replace(batch_stats=stats)


def calibrated(model, variables, x):
    """Running BN statistics = those of ``x`` (one train-mode pass, momentum 1), so the layers spike."""
    cal = model.clone(bn=dataclasses.replace(model.bn, momentum=1.0))
    _, stats, _ = jax.jit(lambda v, y: apply_model(cal, v, y, train=True))(variables, jnp.asarray(x))
    return variables._replace(batch_stats=stats)


def conv_np(x, k, pad):
    """Cross-correlation of x [B, H, W, Ci] with k [kh, kw, Ci, Co], stride 1, zero padding ``pad``."""
    kh, kw = k.shape[:2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((x.shape[0], ho, wo, k.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bhwc,co->bhwo", xp[:, i:i + ho, j:j + wo], k[i, j])
    return out


def test_first_layer_sees_frame_t_at_step_t_against_a_numpy_loop():
    """conv0 + eval BN + LIF + linear, stepped in NumPy over t with frame t as the input."""
    model = tiny()
    v = init_variables(model, jax.random.key(0), (1, T, H, W, C))
    # BN mean 1/32: every current is (4k - 1)/32 for an integer k (weights below are multiples of 1/8), so no
    # membrane potential lands within float rounding of the threshold 1
    v = with_stats(model, v, 1 / 32, 1.0)
    rng = np.random.default_rng(1)
    k0 = rng.integers(-4, 5, (3, 3, C, 3)) / 8
    kfc = rng.normal(size=(H * W * 3, 10))
    v = v._replace(weights={"conv0": {"kernel": jnp.asarray(k0, jnp.float32)},
                            "fc": {"kernel": jnp.asarray(kfc, jnp.float32), "bias": v.weights["fc"]["bias"]}})
    x = frames(4)
    logits = run_eval(model, v, x)

    lif = model.lif
    h = np.zeros((4, H, W, 3))
    want = []
    for t in range(T):
        current = (conv_np(x[:, t].astype(np.float64), k0, 1) - 1 / 32) / np.sqrt(1.0 + model.bn.epsilon)
        u = h + current
        s = (u >= lif.threshold).astype(np.float64)
        h = lif.reset_value * s + lif.decay * u * (1 - s)
        want.append(s.reshape(4, -1) @ kfc)
    want = np.stack(want)
    assert np.abs(want).max() > 0  # the layer spikes
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-4)
    # the frames differ by step, and so do the outputs: a model that repeated frame 0 would fail above
    other = run_eval(model, v, np.repeat(x[:, :1], T, axis=1))
    assert not np.allclose(other, want, atol=1e-3)


def test_frames_repeating_one_image_give_the_direct_encoding_outputs():
    """The static path is direct encoding: in eval mode, T copies of the image as frames are the same network."""
    model = tiny(plan=(4, "M", 8), bn_affine=True)
    image = np.random.default_rng(2).normal(size=(8, H, W, C)).astype(np.float32)
    v = init_variables(model, jax.random.key(1), (1, H, W, C))
    v = calibrated(model, v, image)
    static = run_eval(model, v, image)
    framed = run_eval(model, v, np.repeat(image[:, None], T, axis=1))
    assert np.abs(static).max() > 0
    np.testing.assert_allclose(framed, static, rtol=1e-5, atol=1e-5)


def test_frame_count_must_be_the_models_timesteps():
    model = tiny()
    v = init_variables(model, jax.random.key(0), (1, T, H, W, C))
    with pytest.raises(ValueError, match="4 event frames per example but the model runs 3 timesteps"):
        apply_model(model, v, jnp.zeros((2, T + 1, H, W, C)), train=False)
    with pytest.raises(ValueError, match="event frames per example but the model runs"):
        model.layers((T + 1, H, W, C))
    with pytest.raises(ValueError, match="event frames"):
        apply_model(model, v, jnp.zeros((2, 1, T, H, W, C)), train=False)


FRAME_MODELS = {
    "dvs_small": (lambda: get_model("dvs_small", 10, timesteps=2), (2, 34, 34, 2)),
    "vgg11": (lambda: get_model("vgg11", 11, timesteps=2, width=0.25), (2, 64, 64, 2)),
    "vgg11_48": (lambda: get_model("vgg11", 10, timesteps=2, width=0.25), (2, 48, 48, 2)),
    "resnet_narrow": (lambda: get_model("resnet19", 10, timesteps=2, width=0.25, stage_blocks=(2, 1, 1)),
                      (2, 15, 15, 2)),
}


@pytest.mark.parametrize("name", sorted(FRAME_MODELS))
def test_description_on_frames_matches_the_forward_pass(name):
    """The input is one frame (H, W, C) marked ``frames``; the first conv runs per step (not encoding);
    every conv / linear runs on the shapes described (traced abstractly)."""
    build, shape = FRAME_MODELS[name]
    model = build()
    layers = model.layers(shape)
    assert layers[0].kind == "input" and layers[0].frames and layers[0].out_shape == shape[1:]
    first = [layer for layer in layers if layer.kind == "conv" and layer.inputs == ("input",)]
    assert [layer.name for layer in first] == [model.encoding_layer]
    assert first[0].frames and not first[0].encoding
    assert not any(layer.encoding for layer in layers)
    assert [layer.name for layer in layers if layer.frames] == ["input", model.encoding_layer]
    # the same model on a static image still has its encoding conv
    assert [layer.name for layer in model.layers(shape[1:]) if layer.encoding] == [model.encoding_layer]

    calls = {}

    def run(variables, x):
        logits, seen = observe(model, variables, x)
        calls["c"] = [(p, c.inputs.shape[1:], c.outputs.shape[1:]) for p, c in seen.connections.items()]
        calls["first_rows"] = seen.connections[model.encoding_layer].inputs.shape[0]
        return logits

    variables = jax.eval_shape(lambda key: init_variables(model, key, (2,) + shape), jax.random.key(0))
    logits = jax.eval_shape(run, variables, jax.ShapeDtypeStruct((2,) + shape, jnp.float32))
    assert calls["c"] == [(layer.name, layer.in_shape, layer.out_shape) for layer in layers
                          if layer.kind in ("conv", "linear")]
    assert calls["first_rows"] == model.timesteps * 2  # [T*B, H, W, C]: one frame per step and example
    assert logits.shape == (model.timesteps, 2, model.num_classes)


# -- the cost count -------------------------------------------------------------------------------

def pairs_np(x, kept):
    """NeuroBench's synaptic operations of one conv call: (nonzero input, kept weight) pairs per example."""
    return conv_np((x != 0).astype(np.float64), kept.astype(np.float64), 1).sum((1, 2, 3))


def test_frame_layer_operations_per_step_by_neurobench_rule():
    """The frame-input conv counted at every step: ACs at a step whose frames (in the batch) are all 0/1,
    MACs at a step holding a count > 1 (NeuroBench decides per call), against a NumPy hand count."""
    model = tiny(plan=(3,))
    v = init_variables(model, jax.random.key(3), (1, T, H, W, C))
    v = with_stats(model, v, 0.0, 0.04)  # small variance: currents large enough that the LIF layer spikes
    rng = np.random.default_rng(4)
    mask = (rng.random((3, 3, C, 3)) < 0.6).astype(np.float32)
    v = v._replace(masks={**v.masks, "conv0": {"kernel": jnp.asarray(mask)}})
    x = frames(5, seed=5, high=1)  # binary everywhere ...
    x[2, 1, 3, 3, 0] = 2  # ... but for one count of 2 at step 1
    kept = mask * (np.asarray(v.weights["conv0"]["kernel"]) != 0)
    per_step = np.stack([pairs_np(x[:, t], kept) for t in range(T)])  # [T, N]
    report = measure(model, v, x.astype(np.float32), batch_size=5)
    conv0 = report["layers"][0]
    assert conv0["layer"] == "conv0" and conv0["runs_per_image"] == T and conv0["input"] == "mixed"
    assert conv0["acs"] == per_step[[0, 2]].sum() > 0
    assert conv0["macs"] == per_step[1].sum() > 0
    # dense: every tap inside the 6x6 map (36 centres; borders lose taps) x C_in x C_out, at every step
    taps = sum(1 for o in range(W) for t in range(3) if 0 <= o + t - 1 < W) ** 2
    assert conv0["dense_ops"] == 5 * T * taps * C * 3
    assert report["encoding"] == FRAMES_NOTE
    # binarised frames: all ACs (the step with the 2 now holds a 1)
    xb = np.minimum(x, 1)
    report_b = measure(model, v, xb.astype(np.float32), batch_size=5)
    conv0 = report_b["layers"][0]
    assert conv0["input"] == "spikes" and conv0["macs"] == 0
    assert conv0["acs"] == sum(pairs_np(xb[:, t], kept).sum() for t in range(T))
    # the layer after it sees spikes: ACs only, whatever the frames held
    assert report["layers"][1]["input"] == "spikes" and report["layers"][1]["macs"] == 0
    assert report["neurons"][0]["spikes"] > 0
    # batches of 2: the count of 2 makes only its own batch's step 1 MACs
    report_2 = measure(model, v, x.astype(np.float32), batch_size=2)
    conv0 = report_2["layers"][0]
    for batch, r in ((5, report), (2, report_2)):  # the SynOps-only pass decides AC / MAC per call the same way
        assert measure_synops(model, v, x.astype(np.float32), batch_size=batch) == r["synops_per_image"]
    assert conv0["macs"] == per_step[1, 2:4].sum()
    assert conv0["acs"] == per_step.sum() - per_step[1, 2:4].sum()


# -- NIR ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("binarise", [False, True])
def test_nir_export_feeds_frame_t_at_step_t(tmp_path, binarise):
    """A frame-input ticket (pruned, affine BN) exported to NIR, read back, and run in jsnn and snnTorch
    (Norse: binarised only, to save time) with frame t at step t: the same predictions and (up to
    threshold rounding) the same spikes."""
    model = tiny(plan=(4, "M", 6), bn_affine=True)
    x = frames(40, seed=6, high=3, density=0.4)
    if binarise:
        x = np.minimum(x, 1)
    x = x.astype(np.float32)
    v = init_variables(model, jax.random.key(7), (1, T, H, W, C))
    rng = np.random.default_rng(8)
    v = v._replace(masks=jax.tree.map(lambda m: jnp.asarray(rng.random(m.shape) < 0.6, jnp.float32), v.masks),
                   bn=jax.tree.map(lambda p: jnp.asarray(rng.uniform(0.8, 1.5, p.shape), jnp.float32), v.bn))
    v = calibrated(model, v, x)
    graph = to_nir(model, v, (T, H, W, C), (0.0, 0.0), (1.0, 1.0))
    path = str(tmp_path / "frames.nir")
    nir.write(path, graph)
    graph = nir.read(path)
    assert tuple(np.asarray(graph.nodes["input"].input_type["input"])) == (C, H, W)  # one frame
    assert graph_metadata(graph)["encoding"].startswith("frames:")
    dataset = types.SimpleNamespace(test_images=x, test_labels=np.arange(len(x)) % 10, mean=(0.0, 0.0),
                                    std=(1.0, 1.0))
    simulators = ["jsnn", "snntorch"] + (["norse"] if binarise else [])
    report = check_export(model, v, graph, dataset, simulators, batch_size=20)
    assert sorted(report["simulators"]) == sorted(simulators)
    assert report["timesteps"] == T and report["lif_layers"] == ["conv0_lif", "conv1_lif"]
    for sim, r in report["simulators"].items():
        assert r["prediction_agreement"] == 1.0, (sim, r)
        assert r["spike_agreement"] >= 0.999, (sim, r)
        if r["spikes_agree"] < r["spikes"]:
            assert r["origin_max_distance_to_threshold"] < 1e-5, (sim, r)
    # the check is not between silent networks, and the steps differ
    assert float(np.std(run_eval(model, v, x), axis=0).max()) > 0
    _, spikes, _ = jsnn_layer_spikes(model, v, x, report["lif_layers"])
    for name, s in spikes.items():
        assert 0.01 < s.mean() < 0.9, (name, s.mean())
