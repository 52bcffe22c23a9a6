"""The SF criterion (paper Eq. 12-13: a weight's flip probability p = r_i |w gamma_j / sqrt(var_B,j + eps)|
N(V_th; mu_j, sigma_j^2), from its input channel's firing rate, its output channel's BN scale and variance,
and the Gaussian density of that channel's membrane potential at the threshold) and the firing statistics
it uses, against NumPy.

The statistics pass is checked against a NumPy forward pass of the network (conv, BN in evaluation mode,
the LIF update of paper Eq. 2-4: U[t] = H[t-1] + X[t], S[t] = U[t] >= V_th, H[t] = beta U[t] (1 - S[t]),
2x2 max pool), computed on all the calibration images at once.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import data as jdata
from jsnn.config import TrainConfig
from jsnn.models import build_model
from jsnn.sparsity.criteria import criterion, magnitude, sf
from jsnn.sparsity.stats import collect_statistics
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables
from tests.reference import numpy_conv_same
from tests.small_data import digits_subset

EPS = 1e-5


# ----------------------------------------------------------------------------- SF scores by hand


def gauss(x, mu, sigma):
    return math.exp(-((x - mu) ** 2) / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)


def test_sf_literal_hand_case():
    """1x1 conv, 2 inputs, 1 output; numbers chosen so the answer is written by hand.

    gamma / sqrt(var + eps) = 2 / sqrt(3 + 1) = 1, so E|dU| = r_i |w_i|:
    input 0: 0.5 * 2 = 1; input 1 is silent (r = 0): 0. With mu = V_th = 1, sigma = 1
    the density is 1 / sqrt(2 pi)."""
    weights = {"conv1": {"kernel": jnp.asarray([[[[2.0], [-3.0]]]])}}  # [1, 1, 2, 1]
    bn = {"bn": {"conv1": {"scale": jnp.asarray([2.0]), "bias": jnp.asarray([0.7])}},
          "batch_stats": {"conv1": {"mean": jnp.asarray([5.0]), "var": jnp.asarray([3.0])}}}
    stats = {"conv1": {"input_rate": np.asarray([0.5, 0.0]), "potential_mean": np.asarray([1.0]),
                       "potential_std": np.asarray([1.0])}}
    p = np.asarray(sf(weights, bn, stats, threshold=1.0, epsilon=1.0)["conv1"]["kernel"])
    assert p.shape == (1, 1, 2, 1)
    np.testing.assert_allclose(p[0, 0, :, 0], [1 / math.sqrt(2 * math.pi), 0.0], rtol=1e-6)
    assert p[0, 0, 1, 0] == 0.0  # silent input channel -> exactly 0


def _hand_sf(kernel, rate, gamma, var, mu, sigma, threshold, eps):
    """Eq. 12-13 with explicit loops over (kernel position, input channel i, output channel j)."""
    kh, kw, cin, cout = kernel.shape
    out = np.zeros(kernel.shape)
    for a in range(kh):
        for b in range(kw):
            for i in range(cin):
                for j in range(cout):
                    du = rate[i] * abs(kernel[a, b, i, j] * gamma[j] / math.sqrt(var[j] + eps))
                    out[a, b, i, j] = du * gauss(threshold, mu[j], sigma[j])
    return out


def _small_network(rng, affine=True):
    weights = {
        "conv0": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32)},  # encoding layer
        "conv1": {"kernel": rng.normal(size=(3, 3, 4, 5)).astype(np.float32)},
        "fc": {"kernel": rng.normal(size=(20, 3)).astype(np.float32), "bias": rng.normal(size=3).astype(np.float32)},
    }
    bn = {name: {"scale": rng.uniform(0.5, 2.0, c).astype(np.float32), "bias": rng.normal(size=c).astype(np.float32)}
          for name, c in (("conv0", 4), ("conv1", 5))} if affine else {}
    batch_stats = {name: {"mean": rng.normal(size=c).astype(np.float32),
                          "var": rng.uniform(0.2, 3.0, c).astype(np.float32)}
                   for name, c in (("conv0", 4), ("conv1", 5))}
    rate = np.asarray([0.3, 0.0, 0.05, 0.9])  # input channel 1 never fires
    # output channels: potential mean at, near and far from V_th; one very narrow distribution
    mu = np.asarray([1.0, 0.8, -2.0, 1.5, 0.99])
    sigma = np.asarray([0.5, 0.2, 0.3, 1.5, 0.01])
    stats = {
        "conv0": {"potential_mean": rng.normal(size=4), "potential_std": rng.uniform(0.1, 1, 4)},  # no input_rate
        "conv1": {"input_rate": rate, "potential_mean": mu, "potential_std": sigma},
        "fc": {"input_rate": rng.uniform(0, 1, 20)},  # no potential: no LIF after the classifier
    }
    return weights, {"bn": bn, "batch_stats": batch_stats}, stats


@pytest.mark.parametrize("affine,threshold", [(True, 1.0), (False, 1.0), (True, 0.6)])
def test_sf_equals_hand_computation(affine, threshold):
    rng = np.random.default_rng(0)
    weights, bn_vars, stats = _small_network(rng, affine)
    p = sf(jax.tree.map(jnp.asarray, weights), jax.tree.map(jnp.asarray, bn_vars), stats,
           threshold=threshold, epsilon=EPS)
    # only kernels are scored (no bias), in the kernels' tree structure
    assert set(p) == {"conv0", "conv1", "fc"} and all(set(v) == {"kernel"} for v in p.values())

    s = stats["conv1"]
    gamma = bn_vars["bn"]["conv1"]["scale"] if affine else np.ones(5)
    expected = _hand_sf(weights["conv1"]["kernel"].astype(np.float64), s["input_rate"], gamma,
                        bn_vars["batch_stats"]["conv1"]["var"], s["potential_mean"], s["potential_std"],
                        threshold, EPS)
    got = np.asarray(p["conv1"]["kernel"])
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-30)
    # the silent input channel: every weight from it scores exactly 0
    assert np.all(got[:, :, 1, :] == 0.0)
    # the Gaussian term matters: identical |w| and rate, different output channels rank by density
    dens = np.asarray([gauss(threshold, m, sd) for m, sd in zip(s["potential_mean"], s["potential_std"])])
    ratio = got[:, :, 0, :] / (np.abs(weights["conv1"]["kernel"][:, :, 0, :]) * s["input_rate"][0])
    np.testing.assert_allclose(ratio / ratio[..., :1], np.broadcast_to(
        (dens * gamma / np.sqrt(bn_vars["batch_stats"]["conv1"]["var"] + EPS))
        / (dens[0] * gamma[0] / np.sqrt(bn_vars["batch_stats"]["conv1"]["var"][0] + EPS)), ratio.shape), rtol=1e-4)
    # encoding layer (input is the image) and linear layer (no BN/LIF after it): |w|
    np.testing.assert_array_equal(np.asarray(p["conv0"]["kernel"]), np.abs(weights["conv0"]["kernel"]))
    np.testing.assert_array_equal(np.asarray(p["fc"]["kernel"]), np.abs(weights["fc"]["kernel"]))


def test_sf_without_running_variance_falls_back_to_magnitude():
    rng = np.random.default_rng(1)
    weights, bn_vars, stats = _small_network(rng)
    del bn_vars["batch_stats"]["conv1"]
    p = sf(weights, bn_vars, stats)
    np.testing.assert_array_equal(np.asarray(p["conv1"]["kernel"]), np.abs(weights["conv1"]["kernel"]))


def test_magnitude_criterion_is_abs_of_kernels_only():
    rng = np.random.default_rng(2)
    weights, _, _ = _small_network(rng)
    m = criterion("magnitude").score(weights)
    assert m is not None and set(m["fc"]) == {"kernel"}
    for name in ("conv0", "conv1", "fc"):
        np.testing.assert_array_equal(np.asarray(m[name]["kernel"]), np.abs(weights[name]["kernel"]))
    assert criterion("sf").score is sf and criterion("magnitude").score is magnitude
    with pytest.raises(ValueError, match="unknown criterion"):
        criterion("nope")


# ----------------------------------------------------------------------------- statistics pass vs NumPy


def numpy_bn_eval(y, scale, bias, mean, var, eps=EPS):
    return (y - mean) / np.sqrt(var + eps) * scale + bias


def numpy_lif(x, beta=0.25, v_th=1.0):
    """x [T, B, ...] -> spikes, potentials (paper Eq. 2-4: U[t] = H[t-1] + x[t], S[t] = U[t] >= v_th,
    H[t] = beta U[t] (1 - S[t]): hard reset to 0)."""
    h = np.zeros(x.shape[1:])
    spikes, potentials = [], []
    for t in range(x.shape[0]):
        u = h + x[t]
        s = (u >= v_th).astype(np.float64)
        h = beta * u * (1 - s)
        spikes.append(s)
        potentials.append(u)
    return np.stack(spikes), np.stack(potentials)


def channel_stats(u):
    axes = tuple(range(u.ndim - 1))
    return u.mean(axes), u.std(axes)


T = 2


@pytest.fixture(scope="module")
def stats_setup():
    ds = digits_subset(256, 64)
    config = TrainConfig(timesteps=T, epochs=1, batch_size=64, progress=False).resolve("imp")
    model = build_model(config, ds.num_classes)
    trainer = Trainer(config, model, ds)
    variables = init_variables(model, jax.random.key(3), (1,) + ds.image_shape)
    rng = np.random.default_rng(4)
    # non-trivial BN: random affine parameters and running statistics
    bn = jax.tree.map(lambda v: jnp.asarray(rng.uniform(0.6, 1.4, v.shape), jnp.float32), variables.bn)
    for name in bn:
        bn[name]["bias"] = jnp.asarray(rng.normal(0.2, 0.3, bn[name]["bias"].shape), jnp.float32)
    bn["conv0"]["bias"] = bn["conv0"]["bias"].at[0].set(-100.0)  # conv0 channel 0 never fires
    batch_stats = {name: {"mean": jnp.asarray(rng.normal(0, 0.3, v["mean"].shape), jnp.float32),
                          "var": jnp.asarray(rng.uniform(0.5, 2.0, v["var"].shape), jnp.float32)}
                   for name, v in variables.batch_stats.items()}
    variables = variables._replace(bn=bn, batch_stats=batch_stats)
    rule = MaskedTraining()
    state = trainer.new_state(variables, {}, rule, 0)
    return ds, config, trainer, state, rule


def numpy_statistics(ds, state, images):
    """conv0 potentials, conv1 input rate and potentials, conv2 input rate, the forward pass in NumPy."""
    w = {k: np.asarray(v["kernel"], np.float64) for k, v in state.weights.items() if "kernel" in v}
    bn = jax.tree.map(lambda a: np.asarray(a, np.float64), state.bn)
    bs = jax.tree.map(lambda a: np.asarray(a, np.float64), state.batch_stats)
    x = (images.astype(np.float64) - np.asarray(ds.mean)) / np.asarray(ds.std)

    def layer(name, inp):
        y = numpy_conv_same(inp, w[name])
        return numpy_bn_eval(y, bn[name]["scale"], bn[name]["bias"], bs[name]["mean"], bs[name]["var"])

    c0 = layer("conv0", x)  # direct encoding: the same current at every timestep
    s0, u0 = numpy_lif(np.broadcast_to(c0, (T,) + c0.shape))
    folded = s0.reshape((-1,) + s0.shape[2:])
    c1 = layer("conv1", folded)
    s1, u1 = numpy_lif(c1.reshape((T, -1) + c1.shape[1:]))
    pooled = s1.reshape((T, s1.shape[1], 4, 2, 4, 2, s1.shape[-1])).max(axis=(3, 5))
    out = {"conv0": channel_stats(u0), "conv1": channel_stats(u1)}
    rates = {"conv1": s0.mean(axis=(0, 1, 2, 3)), "conv2": pooled.mean(axis=(0, 1, 2, 3))}
    return out, rates, s0


def _check_against_numpy(got, ref_pot, ref_rate):
    for name, (mean, std) in ref_pot.items():
        np.testing.assert_allclose(got[name]["potential_mean"], mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got[name]["potential_std"], std, rtol=1e-4, atol=1e-4)
    for name, rate in ref_rate.items():
        # a spike can flip where U lies within float32 rounding of V_th: allow a handful
        np.testing.assert_allclose(got[name]["input_rate"], rate, rtol=0, atol=1e-4)


def test_statistics_over_all_batches_equal_numpy_over_all_images(stats_setup):
    ds, config, trainer, state, rule = stats_setup
    got = collect_statistics(trainer, state, rule, num_batches=100, seed=0)  # all 4 batches of 64
    # the encoding layer has no input rate (its input is the image); the classifier no potential
    assert "input_rate" not in got["conv0"] and "potential_mean" in got["conv0"]
    assert "input_rate" in got["fc"] and "potential_mean" not in got["fc"]
    ref_pot, ref_rate, s0 = numpy_statistics(ds, state, ds.train_images)
    _check_against_numpy(got, ref_pot, ref_rate)
    # the silent channel: rate exactly 0, so every conv1 weight from it has SF score exactly 0
    assert got["conv1"]["input_rate"][0] == 0.0 and s0[..., 0].sum() == 0
    assert 0.01 < got["conv1"]["input_rate"][1:].mean() < 0.99
    scores = sf(state.weights, {"bn": state.bn, "batch_stats": state.batch_stats}, got)
    k1 = np.asarray(scores["conv1"]["kernel"])
    assert np.all(k1[:, :, 0, :] == 0.0) and np.count_nonzero(k1[:, :, 1:, :]) > 0.9 * k1[:, :, 1:, :].size
    np.testing.assert_array_equal(np.asarray(scores["conv0"]["kernel"]),
                                  np.abs(np.asarray(state.weights["conv0"]["kernel"])))


def test_statistics_over_some_batches_equal_numpy_over_those_images(stats_setup):
    ds, config, trainer, state, rule = stats_setup
    got = collect_statistics(trainer, state, rule, num_batches=2, seed=5)
    order = jdata.epoch_permutation(len(ds.train_images), 5, 0)[:2 * config.batch_size]
    ref_pot, ref_rate, _ = numpy_statistics(ds, state, ds.train_images[order])
    _check_against_numpy(got, ref_pot, ref_rate)
    # and not the statistics of all the images
    all_pot, _, _ = numpy_statistics(ds, state, ds.train_images)
    assert not np.allclose(got["conv1"]["potential_mean"], all_pot["conv1"][0], rtol=1e-4, atol=1e-4)
