"""jsnn.theory: crisis probability against analytic densities, flip counts against a
hand count, and the strong-LTH construction against an exhaustive, hand-worked case."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.neuron import LIFConfig
from jsnn.theory import crisis, slth
from tests import small_data

# ------------------------------------------------------------ crisis probability


def test_crisis_mass_uniform_matches_analytic():
    # U ~ U[0, 2] on an evenly spaced grid (a quadrature of the density 1/2):
    # P(|U - 1| <= eps) = eps, sup f = 1/2, so the bound 2 eps sup f = eps is tight.
    u = (jnp.arange(200_000) + 0.5) / 100_000.0
    for eps in (0.05, 0.1, 0.3):
        assert float(crisis.crisis_mass(u, 1.0, eps)) == pytest.approx(eps, abs=1e-4)
        sup = float(crisis.histogram_sup_density(u, 1.0, eps, bin_width=0.01))
        assert sup == pytest.approx(0.5, rel=1e-3)
        assert float(crisis.crisis_bound(sup, eps)) == pytest.approx(eps, rel=1e-3)
    # vector of eps at once
    np.testing.assert_allclose(crisis.crisis_mass(u, 1.0, jnp.array([0.1, 0.2])), [0.1, 0.2], atol=1e-4)


def test_crisis_mass_gaussian_matches_analytic():
    mu, sigma, th, eps = 0.3, 0.5, 1.0, 0.2
    exact = 0.5 * (math.erf((th + eps - mu) / (sigma * math.sqrt(2)))
                   - math.erf((th - eps - mu) / (sigma * math.sqrt(2))))
    assert float(crisis.gaussian_crisis_mass(mu, sigma, th, eps)) == pytest.approx(exact, rel=1e-5)
    # sup of the density over [0.8, 1.2] is at 0.8, the end nearest the mean
    pdf = math.exp(-((0.8 - mu) ** 2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    assert float(crisis.gaussian_sup_density(mu, sigma, th, eps)) == pytest.approx(pdf, rel=1e-5)
    assert exact <= 2 * eps * pdf
    # quantile grid of the Gaussian: empirical mass and KDE sup close to the analytic values
    from jax.scipy.special import ndtri

    u = mu + sigma * ndtri((jnp.arange(100_000) + 0.5) / 100_000)
    assert float(crisis.crisis_mass(u, th, eps)) == pytest.approx(exact, abs=1e-4)
    m, s = crisis.gaussian_fit(u)
    assert float(m) == pytest.approx(mu, abs=1e-4) and float(s) == pytest.approx(sigma, rel=1e-3)
    assert float(crisis.kde_sup_density(u[::10], th, eps)) == pytest.approx(pdf, rel=0.03)


def test_carried_error_and_union_bound():
    np.testing.assert_allclose(crisis.carried_error(0.1, 0.5, jnp.array([1, 2, 3])), [0.1, 0.15, 0.175], rtol=1e-6)
    assert float(crisis.carried_error(0.1, 0.5)) == pytest.approx(0.2)
    assert float(crisis.union_bound(0.01, 30)) == pytest.approx(0.3)
    assert float(crisis.union_bound(0.1, 30)) == 1.0


def test_flip_count_one_weight_toy_layer_matches_hand_count():
    # One neuron, one input weight w = 0.625, beta = 0.5, V_th = 1, input spikes 1,1,1,1.
    # clean (w = 0.625):   U = .625, .9375, 1.09375 (spike, reset), .625   -> S = 0,0,1,0
    # perturbed (+0.125):  U = .75, 1.125 (spike), .75, 1.125 (spike)     -> S = 0,1,0,1
    # second sample: input spikes 1,0,0,1 -> clean U = .625,.3125,.15625,.703125 (no spikes);
    #   perturbed U = .75,.375,.1875,.84375 (no spikes) -> no flips.
    cfg = LIFConfig(decay=0.5, threshold=1.0)
    s_in = jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])[:, :, None]  # [T=4, B=2, 1]
    currents = 0.625 * s_in
    delta = 0.125 * s_in  # the weight moved by +0.125: |delta| <= eps = 0.125
    r = crisis.lif_flips(currents, delta, cfg)
    np.testing.assert_array_equal(r.spikes[:, 0, 0], [0, 0, 1, 0])
    np.testing.assert_array_equal(r.perturbed_spikes[:, 0, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(r.flips[:, :, 0], [[0, 0], [1, 0], [1, 0], [1, 0]])
    np.testing.assert_array_equal(r.clean_history[:, :, 0], [[1, 1], [1, 1], [0, 1], [0, 1]])
    rep = crisis.flip_report(r, threshold=1.0, eps=0.125, decay=0.5)
    assert rep["spike_flip_fraction"] == pytest.approx(3 / 8)
    assert rep["any_flip_over_T"] == pytest.approx(1 / 2)
    # per-neuron conditional rates: t=2: 1 flip among 2 clean; t=3, t=4: 0 among 1 clean
    assert rep["neuron_flip_rate"] == pytest.approx([0.0, 0.5, 0.0, 0.0])
    # carried error at t=2 is .125 * 1.5 = .1875; clean U at t=2 = .9375 (crisis) and .3125
    assert rep["neuron_crisis_mass"][1] == pytest.approx(0.5)
    for f, c in zip(rep["neuron_flip_rate"], rep["neuron_crisis_mass"]):
        assert f <= c


def test_flips_never_exceed_crisis_neighbourhood():
    # sample by sample: a flip after an agreeing history needs |U - V_th| <= carried error
    key = jax.random.PRNGKey(0)
    cur = 0.5 + 0.4 * small_data.normal(key, (6, 512, 16))
    cfg = LIFConfig()
    for kind in ("sign", "uniform", "constant"):
        d = crisis.perturbation(jax.random.PRNGKey(1), cur.shape, 0.05, kind)
        assert float(jnp.max(jnp.abs(d))) <= 0.05 + 1e-7
        r = crisis.lif_flips(cur, d, cfg)
        for t in range(cur.shape[0]):
            eps_t = float(crisis.carried_error(0.05, cfg.decay, t + 1))
            bad = r.flips[t] & r.clean_history[t] & (jnp.abs(r.potentials[t] - cfg.threshold) > eps_t + 1e-6)
            assert not bool(jnp.any(bad))


# --------------------------------------------------------- strong LTH construction


@pytest.mark.parametrize("reset,reset_value,decay", [("hard", 0.0, 0.25), ("hard", -0.3, 0.5),
                                                      ("hard", 0.4, 0.9), ("soft", 0.0, 0.25), ("soft", 0.0, 0.6)])
def test_relay_condition_matches_exhaustive_simulation(reset, reset_value, decay):
    cfg = LIFConfig(decay=decay, threshold=0.5, reset=reset, reset_value=reset_value)
    s = slth.all_spike_trains(1, 8)  # [8, 256, 1]: every input sequence
    vs = np.linspace(-1.0, 3.0, 161)
    currents = jnp.asarray(s) * jnp.asarray(vs, jnp.float32)[None, None, :]  # [T, 256, len(vs)]
    from jsnn.neuron import lif_time_major

    out = np.asarray(lif_time_major(currents, cfg))
    relays = np.all(out == np.asarray(s), axis=(0, 1))
    np.testing.assert_array_equal(relays, slth.relay_condition(vs, cfg))


def _hand_case():
    # Target: 2 inputs, 2 outputs, u_th = 0.5, W_hat in [-1/sqrt(2), 1/sqrt(2)].
    target = np.array([[0.3, 0.6], [-0.4, 0.7]])
    # Wide layer, 3 candidates per block; block 0 = neurons 0-2 (input 0), block 1 = 3-5 (input 1).
    layer = slth.WideLayer(
        v=np.array([0.9, 0.3, 0.6, 0.55, 1.0, -0.5]),
        w=np.array([[0.1, 0.30, 0.29, 0.7, 0.605, 0.6],
                    [-0.395, 0.2, 0.1, 0.69, 0.2, 0.7]]),
        block=np.array([0, 0, 0, 1, 1, 1]),
    )
    return target, layer


def test_construction_hand_worked_masks():
    target, layer = _hand_case()
    cfg = LIFConfig(decay=0.25, threshold=0.5)
    # relays: v >= 0.5 -> neurons 0, 2, 3, 4 (1 has v = .3, 5 has v = -.5: exact out-weights but no relay)
    np.testing.assert_array_equal(slth.relay_condition(layer.v, cfg), [1, 0, 1, 1, 1, 0])
    c = slth.find_masks(target, layer, eps=0.021, config=cfg)
    # W_hat[0,0]=.3 -> neuron 2 (.29, err .01); W_hat[0,1]=.6 -> 4 (.605, err .005)
    # W_hat[1,0]=-.4 -> 0 (-.395, err .005); W_hat[1,1]=.7 -> 3 (.69, err .01)
    np.testing.assert_array_equal(c.choice, [[2, 4], [0, 3]])
    np.testing.assert_allclose(c.error, [[0.01, 0.005], [0.005, 0.01]], atol=1e-12)
    assert c.found  # every error <= eps / N = 0.0105
    m_in, m_out = slth.masks_from_construction(c, layer)
    np.testing.assert_array_equal(m_out, [[0, 0, 1, 0, 1, 0], [1, 0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(m_in, [[1, 0], [0, 0], [1, 0], [0, 1], [0, 1], [0, 0]])
    assert not slth.find_masks(target, layer, eps=0.015, config=cfg).found  # .01 > .015 / 2


def test_construction_reproduces_target_on_every_input():
    target, layer = _hand_case()
    cfg = LIFConfig(decay=0.25, threshold=0.5)
    eps, T = 0.021, 4
    c = slth.find_masks(target, layer, eps, cfg)
    s = slth.all_spike_trains(2, T)  # all 256 inputs
    want, u = slth.target_forward(s, target, cfg, return_potential=True)
    # the margin the proof needs: no target potential within eps / (1 - beta) of u_th
    margin = float(jnp.min(jnp.abs(u - cfg.threshold)))
    assert margin > float(crisis.carried_error(eps, cfg.decay))
    # the full wide layer with both masks applied: all 6 virtual neurons simulated
    m_in, m_out = slth.masks_from_construction(c, layer)
    V = slth.full_in_weights(layer, 2) * m_in
    got, virtual = slth.wide_forward(s, V, layer.w * m_out, cfg, return_virtual=True)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # the kept virtual neurons relay their inputs exactly; pruned ones never fire
    np.testing.assert_array_equal(np.asarray(virtual)[..., [0, 2]], s[..., [0, 0]])
    np.testing.assert_array_equal(np.asarray(virtual)[..., [3, 4]], s[..., [1, 1]])
    assert not np.asarray(virtual)[..., [1, 5]].any()
    # the compact pruned network gives the same output
    Vk, Wk = slth.pruned_network(c, layer)
    assert Vk.shape == (4, 2)
    np.testing.assert_array_equal(np.asarray(slth.wide_forward(s, Vk, Wk, cfg)), np.asarray(want))


def test_construction_fails_without_margin():
    # A target potential sitting exactly on the threshold: u = 0.5 at t=1 for input (1, 0),
    # an approximating weight 0.5 - 0.004 (within eps / N) flips that spike.
    target = np.array([[0.5, 0.1]])
    layer = slth.WideLayer(v=np.array([0.9, 0.8]), w=np.array([[0.496, 0.1]]), block=np.array([0, 1]))
    cfg = LIFConfig(decay=0.25, threshold=0.5)
    c = slth.find_masks(target, layer, 0.01, cfg)
    assert c.found
    s = slth.all_spike_trains(2, 2)
    Vk, Wk = slth.pruned_network(c, layer)
    assert np.any(np.asarray(slth.wide_forward(s, Vk, Wk, cfg)) != np.asarray(slth.target_forward(s, target, cfg)))


def test_mask_probability_exact_vs_monte_carlo_and_bound():
    rng = np.random.default_rng(0)
    cfg = LIFConfig(decay=0.25, threshold=0.5)
    assert slth.relay_probability(cfg) == pytest.approx(0.25)
    target = slth.sample_target(rng, 3, 3)
    eps, n = 0.3, 60
    exact = slth.mask_exists_probability(target, n, eps, cfg)
    hits = sum(slth.find_masks(target, slth.sample_wide_layer(rng, 3, 3, n), eps, cfg).found for _ in range(2000))
    assert hits / 2000 == pytest.approx(exact, abs=0.035)
    assert 1 - exact <= slth.mask_failure_union_bound(3, 3, n, eps, cfg) + 1e-12
    # near certainty the binomial weights summed to 1 + 2e-11 before the clip: a probability stays <= 1
    assert slth.mask_exists_probability(slth.sample_target(np.random.default_rng(0), 4, 4), 8192, 0.08, cfg) == 1.0
    assert slth.width_lemma41(4, 0.1, 0.1, cfg) == 4 * math.ceil(4 / (0.25 * 0.1) * math.log(40))
    assert slth.width_theorem43(4, 0.1, 0.1, cfg, density=1.0, timesteps=1) == math.inf


def test_first_rule_picks_first_candidate_within_window():
    target, layer = _hand_case()
    cfg = LIFConfig(decay=0.25, threshold=0.5)
    # eps / N = 0.1: for W_hat[0,1] = .6, relay 3 (.7, err .1) comes before 4 (.605)
    c = slth.find_masks(target, layer, eps=0.2 + 1e-9, config=cfg, rule="first")
    np.testing.assert_array_equal(c.choice, [[2, 3], [0, 3]])
    assert c.found
    V, W = slth.pruned_network(c, layer, pad_to=4)
    assert V.shape == (4, 2) and W.shape == (2, 4) and not V[3].any() and not W[:, 3].any()


def test_flip_criterion_pieces():
    from jsnn.theory import flips

    np.testing.assert_array_equal(flips.rankdata([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 6.0, 7.0, 8.0, 7.0]
    # ranks of b: 1, 2, 3.5, 5, 3.5 -> rho = 0.8207826816681233 (scipy.stats.spearmanr)
    assert flips.spearman(a, b) == pytest.approx(0.8207826816681233)
    assert flips.spearman(a, a[::-1]) == pytest.approx(-1.0)
    # weights with flip rates .0 .1 .2 .7; scores order them 2, 0, 3, 1: lowest 50% = weights 2 and 0
    assert flips.flip_capture([0.0, 0.1, 0.2, 0.7], [0.5, 3.0, 0.1, 2.0], (0.5, 1.0)) == pytest.approx([0.2, 1.0])
    # removing the one weight of the hand-counted toy neuron flips 1 of 2 samples:
    # w = .625, V_th = 1, beta = .5; sample 0 input 1,1,1,1 spikes at t=3; sample 1 (1,0,0,1) never spikes
    s_in = jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    rate = flips.removal_flip_rate(0.625 * s_in, s_in, 0.625, 1.0, LIFConfig(decay=0.5, threshold=1.0))
    assert rate == pytest.approx(0.5)


def test_conv_removal_one_weight_toy_layer_matches_hand_count():
    from jsnn.theory import flips

    # The hand-counted neuron of test_flip_count_one_weight_toy_layer_matches_hand_count as a conv layer:
    # a 1x1 image, one channel in and out, only the centre tap w = .625 non-zero, BN scale 1.
    # Removing it: sample 0 (input 1,1,1,1) loses its spike at t=3, sample 1 (1,0,0,1) never spiked -> 1/2.
    # Removing a border tap changes nothing (it only ever sees the zero padding): 0.
    cfg = LIFConfig(decay=0.5, threshold=1.0)
    s_in = jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])[:, :, None, None, None]  # [T, B, 1, 1, 1]
    kernel = jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(0.625)
    currents = 0.625 * s_in
    taps = jnp.array([[[1, 1, 0]], [[0, 1, 0]]], jnp.int32)
    rates = flips.conv_removal_flip_rates(currents, s_in, kernel, jnp.ones(1), taps, jnp.zeros(2, jnp.int32), cfg)
    np.testing.assert_allclose(rates, [0.5, 0.0])
    assert float(rates[0]) == flips.removal_flip_rate(currents[:, :, 0, 0, 0], s_in[:, :, 0, 0, 0], 0.625, 1.0, cfg)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_removal_matches_brute_force(stride):
    # removing g weights = recomputing conv(x, kernel with them zeroed) -> BN -> LIF and counting changed trains
    from jsnn.conv import conv2d
    from jsnn.neuron import lif_time_major
    from jsnn.theory import flips

    T, B, H, cin, cout = 3, 4, 6, 3, 5
    cfg = LIFConfig()
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = small_data.bernoulli(k1, 0.4, (T, B, H, H, cin)).astype(jnp.float32)
    kernel = small_data.normal(k2, (3, 3, cin, cout))
    scale, shift = jax.random.uniform(k3, (cout,), minval=0.5, maxval=2.0), 0.3

    def currents_of(k):
        y = conv2d(x.reshape((T * B, H, H, cin)), k, stride, 1)
        return (y * scale + shift).reshape((T, B) + y.shape[1:])

    cur = currents_of(kernel)
    assert float(jnp.mean(lif_time_major(cur, cfg))) > 0.05
    rng = np.random.default_rng(0)
    for g in (1, 4):
        taps, co = flips.sample_taps(rng, kernel.shape, 12, g)
        fast = np.asarray(flips.conv_removal_flip_rates(cur, x, kernel, scale, jnp.asarray(taps), jnp.asarray(co),
                                                        cfg, stride=stride, chunk=5))
        for n in range(len(co)):
            k = kernel.at[taps[n, :, 0], taps[n, :, 1], taps[n, :, 2], co[n]].set(0.0)
            s0 = lif_time_major(cur, cfg)[..., co[n]]
            s1 = lif_time_major(currents_of(k), cfg)[..., co[n]]
            assert fast[n] == pytest.approx(float(jnp.mean(jnp.any(s0 != s1, axis=0))), abs=1e-6)
        assert np.any(fast > 0)


def test_sample_taps_and_group_scores():
    from jsnn.theory import flips

    rng = np.random.default_rng(1)
    taps, co = flips.sample_taps(rng, (3, 3, 2, 4), 1000, 1)
    assert taps.shape == (72, 1, 3) and co.shape == (72,)  # every weight once when n exceeds the layer
    flat = {(int(a), int(b), int(c), int(d)) for (a, b, c), d in zip(taps[:, 0], co)}
    assert len(flat) == 72
    taps, co = flips.sample_taps(rng, (3, 3, 2, 4), 50, 5)
    assert taps.shape == (50, 5, 3) and co.shape == (50,)
    for t in taps:  # distinct weights within a group
        assert len({tuple(x) for x in t}) == 5
    scores = np.arange(72, dtype=float).reshape(3, 3, 2, 4)
    want = [sum(scores[a, b, c, co[n]] for a, b, c in taps[n]) for n in range(50)]
    np.testing.assert_allclose(flips.group_scores(scores, taps, co), want)
    lo, hi = flips.spearman_difference_interval([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6], 50)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)


def test_removal_in_digits_model_matches_masked_model():
    # layer_io gives each ConvBN's exact input and LIF current; removing a weight via the cheap delta
    # equals re-running the whole model with that weight's mask entry set to 0
    from flax import traverse_util

    from jsnn.layers import unfold_time
    from jsnn.models import get_model
    from jsnn.neuron import lif_time_major
    from jsnn.theory import flips
    from jsnn.variables import init_variables

    T = 2
    model = get_model("digits_cnn", 10, timesteps=T)
    variables = init_variables(model, jax.random.PRNGKey(0), (1, 8, 8, 1))
    images = small_data.normal(jax.random.PRNGKey(1), (6, 8, 8, 1))
    io = flips.layer_io(model, variables, images)
    assert list(io) == ["conv0", "conv1", "conv2"]
    # conv1's input is conv0's spikes
    s0 = lif_time_major(jnp.broadcast_to(io["conv0"][1], (T,) + io["conv0"][1].shape), model.lif)
    np.testing.assert_array_equal(unfold_time(io["conv1"][0], T), s0)
    rng = np.random.default_rng(0)
    eps = model.bn.epsilon
    tested = 0
    for layer, (inp, out) in io.items():
        enc = layer == model.encoding_layer
        cur = jnp.broadcast_to(out, (T,) + out.shape) if enc else unfold_time(out, T)
        x = inp if enc else unfold_time(inp, T)
        kernel = variables.weights[layer]["kernel"]
        scale = variables.bn[layer]["scale"] * jax.lax.rsqrt(variables.batch_stats[layer]["var"] + eps)
        taps, co = flips.sample_taps(rng, kernel.shape, 6, 1)
        fast = np.asarray(flips.conv_removal_flip_rates(cur, x, kernel, scale, jnp.asarray(taps), jnp.asarray(co),
                                                        model.lif))
        for n in range(len(co)):
            flat = traverse_util.flatten_dict(variables.masks)
            key = (layer, "kernel")
            flat[key] = flat[key].at[taps[n, 0, 0], taps[n, 0, 1], taps[n, 0, 2], co[n]].set(0.0)
            pruned = variables._replace(masks=traverse_util.unflatten_dict(flat))
            out1 = flips.layer_io(model, pruned, images)[layer][1]
            cur1 = jnp.broadcast_to(out1, (T,) + out1.shape) if enc else unfold_time(out1, T)
            a, b = lif_time_major(cur, model.lif)[..., co[n]], lif_time_major(cur1, model.lif)[..., co[n]]
            assert fast[n] == pytest.approx(float(jnp.mean(jnp.any(a != b, axis=0))), abs=1e-6)
            tested += fast[n] > 0
    assert tested > 0


# ------------------------------------------------------- train/theory.py end to end, at tiny settings


def _theory_program():
    import importlib.util
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "train"))  # the programs import their shared flags as `flags`
    spec = importlib.util.spec_from_file_location("theory_program", os.path.join(root, "train", "theory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def theory_network():
    """A digits SNN of two spiking conv layers of one shape (so crisis compiles its per-layer programs once
    for both: the encoding layer and one fed by spikes) at its initial weights, T = 2, on 128 training and
    12 test images, as the network crisis and flips measure: the program's own training (train_digits) is
    what the committed results run."""
    from jsnn.config import TrainConfig
    from jsnn.models import SpikingVGG
    from jsnn.theory import experiments
    from jsnn.trainer import Trainer
    from jsnn.training_rules import MaskedTraining
    from jsnn.variables import init_variables

    ds = small_data.digits_subset(128, 12)
    config = TrainConfig(timesteps=2, epochs=1, batch_size=64, progress=False).resolve("dense")
    model = SpikingVGG(num_classes=ds.num_classes, plan=(8, 8), timesteps=2, lif=config.lif.neuron())
    trainer = Trainer(config, model, ds)
    rule = MaskedTraining()
    state = trainer.new_state(init_variables(model, jax.random.key(0), (1,) + ds.image_shape), {}, rule, 0)
    acc = trainer.evaluate(state, rule)["test_accuracy"]
    return experiments.TrainedNetwork(config, ds, model, trainer, rule, state, acc, 0.0)


def _run_theory(monkeypatch, tmp_path, network, *argv):
    """train/theory.py's main() on ``argv`` with the program's training replaced by ``network``; its JSON."""
    import json
    import sys

    from jsnn.theory import experiments

    program = _theory_program()
    monkeypatch.setattr(experiments, "train_digits", lambda workdir, epochs, seed: network)
    monkeypatch.setattr(sys, "argv", ["theory.py", "--workdir", str(tmp_path), *argv])
    program.run_cleanly(program.main)
    name = argv[0]
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    res = json.loads((tmp_path / f"{name}.json").read_text())
    prov = res["provenance"]
    assert prov["command"].startswith(f"python train/theory.py --workdir {tmp_path} {name}")
    assert prov["machine"]["cores"] >= 1 and "commit" in prov
    return res


def _numpy_lif(currents, decay, threshold):
    """U and S of a hard-reset LIF layer, a NumPy loop over time: U[t] = H[t-1] + X[t], S = U >= V_th,
    H = decay U (1 - S)."""
    h = np.zeros(currents.shape[1:], currents.dtype)
    us, ss = [], []
    for x in currents:
        u = h + x
        s = (u >= threshold).astype(u.dtype)
        h = u.dtype.type(decay) * u * (1 - s)
        us.append(u)
        ss.append(s)
    return np.stack(us), np.stack(ss)


def test_theory_program_crisis_end_to_end(monkeypatch, tmp_path, theory_network):
    # a constant perturbation +eps is deterministic: the flips it causes, counted here by a NumPy LIF
    # loop over the network's currents, and the crisis mass of U, must be what the JSON says
    from jsnn.theory import experiments

    net = theory_network
    res = _run_theory(monkeypatch, tmp_path, net, "crisis", "--images", "12", "--eps", "0.05", "0.3",
                      "--kinds", "constant", "--kde_samples", "500")
    assert res["images"] == 12 and res["options"]["eps"] == [0.05, 0.3]
    currents = experiments.layer_currents(net.model, net.variables, net.test_images(12))
    assert list(res["layers"]) == list(currents)
    lif = net.model.lif
    checked = 0
    for name, cur in currents.items():
        cur = np.asarray(cur)  # f32, as the experiment computes
        u, s = _numpy_lif(cur, lif.decay, lif.threshold)
        layer = res["layers"][name]
        assert layer["width"] == cur[0, 0].size
        assert layer["firing_rate"] == pytest.approx(np.mean(u >= lif.threshold), abs=1e-6)
        for row in layer["per_eps"]:
            e = row["eps"]
            assert row["crisis_mass"] == pytest.approx(np.mean(np.abs(u - lif.threshold) <= e), abs=2e-3)
            _, s1 = _numpy_lif(cur + np.float32(e), lif.decay, lif.threshold)
            m = row["measured"]["constant"]
            assert m["flip_rate_t1"] == pytest.approx(np.mean(s[0] != s1[0]), abs=1e-6)  # no earlier step at t=1
            assert m["any_flip_over_T"] == pytest.approx(np.mean(np.any(s != s1, axis=0)), abs=1e-6)
            assert m["respects_mass_bound"]
            checked += m["any_flip_over_T"] > 0
    assert checked > 0


def test_theory_program_flips_end_to_end(monkeypatch, tmp_path, theory_network):
    # the rank statistics and flip shares of the JSON recomputed from the samples it keeps (all of them),
    # and the fast removal against the whole model re-run with the weight masked
    from scipy import stats

    res = _run_theory(monkeypatch, tmp_path, theory_network, "flips", "--flip_images", "12", "--flip_weights", "24",
                      "--flip_groups", "1", "2", "--flip_fractions", "0.5", "--stats_batches", "1",
                      "--flip_checks", "1", "--bootstrap", "20", "--flip_chunk", "8")
    assert res["criteria"] == ["sf", "magnitude", "sf_without_density"]
    for name, layer in res["layers"].items():
        assert layer["check_against_masked_model"]["max_abs_diff"] == 0.0, name
        for g, row in layer["by_group"].items():
            smp = row["sample"]
            rate = np.asarray(smp["flip_rate"])
            assert row["samples"] == len(rate) == 24
            for crit in res["criteria"]:
                score = np.asarray(smp[crit])
                rho = stats.spearmanr(score, rate).statistic
                if np.isfinite(rho):
                    assert row["spearman"][crit] == pytest.approx(rho, abs=1e-9), (name, g, crit)
                # the flips caused by the lowest-scored half (ties broken as the module does not matter
                # when the half's boundary falls between distinct scores)
                order = np.argsort(score, kind="stable")
                if score[order[11]] < score[order[12]] and rate.sum() > 0:
                    share = rate[order[:12]].sum() / rate.sum()
                    assert row["headline"][crit]["0.5"] == pytest.approx(share, abs=1e-9), (name, g, crit)
            lo, hi = row["spearman_sf_minus_sf_without_density_95ci"]
            assert lo <= hi


def test_theory_program_slth_end_to_end(monkeypatch, tmp_path):
    # the targets' potentials over every binary input, by a NumPy loop: firing rate and crisis event;
    # the count test of the masks found against its definition
    from jsnn.statistics import count_test_exact
    from jsnn.theory import experiments

    res = _run_theory(monkeypatch, tmp_path, None, "slth", "--width_target", "2", "--slth_timesteps", "3",
                      "--per_block", "4", "64", "--slth_eps", "0.05", "--trials", "5", "--max_inputs", "64")
    assert res["all_inputs"] and res["inputs"] == 2 ** 6
    rng = np.random.default_rng(res["options"]["seed"])
    targets = [slth.sample_target(rng, 2, 2) for _ in range(5)]  # run_slth's first draws
    x = slth.all_spike_trains(2, 3).astype(np.float64)  # [T, inputs, 2]
    us = np.stack([_numpy_lif(x @ t.T, res["decay"], res["threshold"])[0] for t in targets])  # [trials, T, inputs, 2]
    assert res["target_firing_rate"] == pytest.approx(np.mean(us >= res["threshold"]), abs=1e-6)
    row = res["eps"]["0.05"]
    eps_t = 0.05 * (1 - res["decay"] ** np.arange(1, 4)) / (1 - res["decay"])
    near = np.abs(us - res["threshold"]) <= eps_t[None, :, None, None]
    assert row["crisis_event"] == pytest.approx(np.mean(np.any(near, axis=(1, 3))), abs=1e-6)
    with pytest.raises(ValueError, match="unknown experiments"):  # the library entry point refuses a bad name
        experiments.run(str(tmp_path), ("nope",))
    for p in row["points"]:
        assert p["masks_found_count"] == round(5 * p["masks_found_measured"])
        assert p["masks_found_expected_count"] == pytest.approx(5 * p["masks_found_exact"])
        assert 0 <= p["masks_found_p"] <= p["masks_found_p_holm"] <= 1
        if p["masks_found_exact"] == 1.0:
            assert p["masks_found_p"] == count_test_exact(5, [1.0] * 5).pvalue == 1.0
