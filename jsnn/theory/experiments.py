"""The theory experiments (paper Sec. 3-4) on a trained digits SNN, as
``train/theory.py`` runs them. Each ``run_*`` returns a JSON-able dict; ``run`` trains
the network once, runs the experiments asked for and writes ``NAME.json`` and
``NAME.png`` (``jsnn.theory.figures``) for each experiment NAME.

crisis: takes the input currents of each spiking layer on test images, perturbs them
by |delta| <= eps and counts spike flips; next to them, the crisis probability of the
clean membrane potentials and its bounds 2 eps sup f (histogram, kernel density,
Gaussian fits), over one step, T steps (carried error eps (1 - beta^t) / (1 - beta))
and a whole layer.

flips: collects SF's firing statistics, and for a sample of weights of every spiking
conv layer removes each one alone (and random groups of weights of one output
channel) and measures the fraction of (test image, position) spike trains of that
channel that change. The flip rates are compared with the SF score p, with |w| and
with SF without its density factor: Spearman correlation per layer and the share of
all measured flips caused by the lowest-scored x%. A few removals are re-measured by
re-running the whole model with the weight's mask entry set to 0.

crisis and flips share one network: the dense digits SNN trained by jsnn's own
Trainer (``train_digits``). slth needs none: it builds the wide random SNN of the
proof for random small targets, finds the proof's masks, and measures over every
binary input how often the pruned wide network's output spikes differ from the
target's, against the theorem's bound and the widths it demands.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsnn.config import TrainConfig
from jsnn.layers import unfold_time
from jsnn.metrics import log
from jsnn.models import SpikingVGG
from jsnn.neuron import LIFConfig, lif_time_major
from jsnn.objective import preprocess
from jsnn.runs.dense import DensePlan
from jsnn.runs.outputs import Outputs
from jsnn.runs.run import Run
from jsnn.runs.segment import build_trainer
from jsnn.runs.tickets import TICKET_FILE
from jsnn.sparsity.criteria import gaussian_density, magnitude, sf, sf_eligible
from jsnn.sparsity.stats import collect_statistics
from jsnn.statistics import count_test_exact, holm
from jsnn.theory import crisis, figures, slth
from jsnn.theory import flips as flips_mod
from jsnn.ticket import load_ticket
from jsnn.variables import by_layer, by_name, from_names, named_kernels

EXPERIMENTS = ("crisis", "flips", "slth")


@dataclasses.dataclass(frozen=True)
class TheoryOptions:
    """Everything the experiments take; ``train/theory.py`` has one flag per field."""

    seed: int = 0
    epochs: int = 3  # of jsnn's dense digits training (the network crisis and flips measure)
    # crisis
    images: int = 256  # test images whose potentials are measured
    eps: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
    kinds: tuple[str, ...] = ("sign", "uniform")  # perturbations: sign, uniform, constant
    kde_samples: int = 20_000  # potentials subsampled for the KDE
    # flips
    flip_images: int = 256  # test images whose spike trains are compared
    flip_weights: int = 2048  # sampled weights (or groups) per layer
    flip_groups: tuple[int, ...] = (1, 8)  # weights removed together (random, same output channel)
    flip_fractions: tuple[float, ...] = (0.1, 0.25, 0.5)
    stats_batches: int = 10  # training batches for SF's firing statistics
    flip_checks: int = 2  # weights per layer re-measured by re-running the whole masked model
    flip_keep: int = 1000  # sampled (flip rate, scores) kept in the JSON
    bootstrap: int = 300  # resamples for the SF - |w| correlation interval
    flip_chunk: int = 32  # removals simulated at once
    # slth
    width_target: int = 4  # N: the target layer is N x N
    slth_timesteps: int = 4
    u_th: float = 0.5  # threshold u_th < 1 (the proof needs it)
    slth_decay: float = 0.25
    slth_eps: tuple[float, ...] = (0.005, 0.02, 0.08)
    per_block: tuple[int, ...] = tuple(2**i for i in range(4, 16))  # candidates per weight n; width k = N n
    max_inputs: int = 8192  # enumerate all 2^(N T) binary inputs up to this many, else sample this many
    trials: int = 20  # random targets (each with its own wide layers)
    delta: float = 0.1  # failure probability for the widths


@dataclasses.dataclass
class TrainedNetwork:
    """The dense digits SNN after ``train_digits``, with what built and trained it."""

    config: Any  # jsnn.config.TrainConfig
    dataset: Any
    model: Any
    trainer: Any
    rule: Any
    state: Any
    test_accuracy: float
    train_seconds: float

    @property
    def variables(self):
        return self.state.forward_variables(self.rule)

    def test_images(self, n: int) -> jax.Array:
        """The first ``n`` test images, normalized as the model sees them."""
        d = self.dataset
        n = min(n, len(d.test_labels))
        return preprocess(jnp.asarray(d.test_images[:n]), d.mean, d.std)


class DigitsNetwork(DensePlan):
    """The dense digits SNN the theory experiments measure: a dense run under its own name, so a workdir of
    ``train/dense.py`` is not taken for it (nor it for one)."""

    name = "theory_dense"


def train_digits(workdir: str, epochs: int = 3, seed: int = 0) -> TrainedNetwork:
    """The dense digits SNN trained by jsnn's own Trainer (``epochs`` epochs of the dense preset, plain
    masked training), as a ``Run`` in ``workdir`` (its config.json, checkpoints, results and ticket): a
    rerun takes the finished network from its ticket."""
    t0 = time.time()
    config = TrainConfig(dataset="digits", epochs=epochs, seed=seed, progress=False).resolve("dense")
    plan = DigitsNetwork(config)
    run = Run(plan, config, workdir, outputs=Outputs(plots=False, cost_report=False))
    results = run.execute()
    trainer, state = run.trainer, run.state
    if state is None:  # finished before: the network is its ticket
        trainer = trainer or build_trainer(config)
        state = trainer.new_state(load_ticket(os.path.join(workdir, TICKET_FILE)).variables, {}, plan.rule, seed)
    acc = float(results["runs"][0]["test_accuracy"])
    return TrainedNetwork(config, trainer.dataset, trainer.model, trainer, plan.rule, state, acc, time.time() - t0)


def lif_currents(out: jax.Array, T: int, encoding: bool) -> jax.Array:
    """A ConvBN output as its LIF layer's time-major input [T, B, ...] (encoding layer: repeated over T)."""
    return jnp.broadcast_to(out, (T,) + out.shape) if encoding else unfold_time(out, T)


def layer_currents(model, variables, images) -> dict[str, jax.Array]:
    """Input currents (conv + BN output) of every spiking layer, time-major [T, B, H, W, C]."""
    io = flips_mod.layer_io(model, variables, images)
    return {name: lif_currents(out, model.timesteps, name == model.encoding_layer)
            for name, (_, out) in io.items()}


# ------------------------------------------------------------------ crisis (Eq. 6, Lemma 3.2-3.4, Theorem 3.5)


@functools.partial(jax.jit, static_argnames=("th", "beta", "kde_samples"))
def layer_bounds(u: jax.Array, eps: jax.Array, th: float, beta: float, kde_samples: int) -> dict:
    """Density estimates of one layer's potentials U [T, B, ..., C] and the crisis
    bounds they give, for every perturbation size in ``eps`` (one row per eps)."""
    T = u.shape[0]
    u_flat = u.reshape(-1)
    sub = u_flat[:: max(1, u_flat.size // kde_samples)]
    bin_width = crisis.freedman_diaconis_width(sub) * (sub.size / u_flat.size) ** (1 / 3)  # FD width for all of U
    bw = crisis.silverman_bandwidth(sub)
    u_t = u.reshape(T, -1)
    subs_t = u_t[:, :: max(1, u_t.shape[1] // kde_samples)]
    bws_t = jax.vmap(crisis.silverman_bandwidth)(subs_t)
    mu, sd = crisis.gaussian_fit(u_flat)
    mu_c, sd_c = crisis.gaussian_fit(u.reshape(-1, u.shape[-1]), axis=0)  # per channel (SF's assumption)
    kde_sup = lambda x, e, b: crisis.kde_sup_density(x, th, e, b)  # noqa: E731

    def one(e):
        eps_t = crisis.carried_error(e, beta, jnp.arange(1, T + 1))
        return {
            # one step (Lemma 3.2-3.3), U pooled over neurons and timesteps
            "crisis_mass": crisis.crisis_mass(u_flat, th, e),
            "bound_histogram": crisis.crisis_bound(crisis.histogram_sup_density(u_flat, th, e, bin_width), e),
            "bound_kde": crisis.crisis_bound(kde_sup(sub, e, bw), e),
            "gaussian_mass": crisis.gaussian_crisis_mass(mu, sd, th, e),
            "bound_gaussian": crisis.crisis_bound(crisis.gaussian_sup_density(mu, sd, th, e), e),
            "gaussian_per_channel_mass": jnp.mean(crisis.gaussian_crisis_mass(mu_c, sd_c, th, e)),
            "bound_gaussian_per_channel": jnp.mean(crisis.crisis_bound(
                crisis.gaussian_sup_density(mu_c, sd_c, th, e), e)),
            # T steps (Lemma 3.4): sum over t of the bound at the carried error eps_t
            "eps_over_1_minus_beta": crisis.carried_error(e, beta),
            "bound_T_steps_kde": jnp.sum(2 * eps_t * jax.vmap(kde_sup)(subs_t, eps_t, bws_t)),
            "bound_T_steps_mass": jnp.sum(jax.vmap(lambda x, et: crisis.crisis_mass(x, th, et))(u_t, eps_t)),
        }

    return jax.lax.map(one, eps)


def run_crisis(net: TrainedNetwork, opts: TheoryOptions = TheoryOptions()) -> dict:
    """Crisis probability and its bounds against measured spike flips, per spiking layer of ``net``."""
    t0 = time.time()
    model, variables = net.model, net.variables
    images = net.test_images(opts.images)
    currents = jax.jit(lambda v, x: layer_currents(model, v, x))(variables, images)
    lif = model.lif
    th, beta, T = lif.threshold, lif.decay, model.timesteps
    result = {"network": net.config.model, "dataset": net.config.dataset, "epochs": net.config.epochs,
              "test_accuracy": net.test_accuracy, "train_seconds": net.train_seconds,
              "images": int(images.shape[0]), "timesteps": T, "threshold": th, "decay": beta,
              "eps": list(opts.eps), "perturbations": list(opts.kinds), "layers": {}}
    key = jax.random.PRNGKey(opts.seed + 1)
    for name, cur in currents.items():
        _, u = jax.jit(lambda c: lif_time_major(c, lif, True))(cur)
        bounds = jax.device_get(layer_bounds(u, jnp.asarray(opts.eps, jnp.float32), th, beta, opts.kde_samples))
        mu, sd = crisis.gaussian_fit(u)
        layer = {"width": int(cur[0, 0].size), "u_mean": float(mu), "u_std": float(sd),
                 "firing_rate": float(jnp.mean(u >= th)), "per_eps": []}
        for k, eps in enumerate(opts.eps):
            row = {"eps": eps, **{name_: float(v[k]) for name_, v in bounds.items()}}
            row["measured"] = {}
            for kind in opts.kinds:
                key, sk = jax.random.split(key)
                r = crisis.lif_flips(cur, crisis.perturbation(sk, cur.shape, eps, kind), lif)
                rep = crisis.flip_report(r, th, eps, beta)
                row["measured"][kind] = {
                    "flip_rate_t1": rep["neuron_flip_rate"][0],
                    "flip_rate_per_t": rep["neuron_flip_rate"],
                    "crisis_mass_per_t": rep["neuron_crisis_mass"],
                    "any_flip_over_T": rep["any_flip_over_T"],
                    "spike_flip_fraction": rep["spike_flip_fraction"],
                    "layer_flip_rate_per_t": rep["layer_flip_rate"],
                    "layer_union_bound_per_t": rep["layer_union_bound"],
                    "respects_mass_bound": all(f <= c + 1e-9 for f, c in zip(rep["neuron_flip_rate"],
                                                                               rep["neuron_crisis_mass"])
                                               if f is not None),
                }
            layer["per_eps"].append(row)
        sub = np.asarray(u).reshape(-1)[:: max(1, u.size // opts.kde_samples)]
        layer["u_histogram"] = [a.tolist() for a in np.histogram(sub, bins=80)]
        result["layers"][name] = layer
    result["seconds"] = time.time() - t0
    return result


# ------------------------------------------------------------------ flips (Sec. 6)


def removal_by_mask(model, variables, images, layer, tap, co, encoding):
    """Reference: the flip rate of one weight measured by re-running the whole model with its mask
    entry set to 0 (the slow way ``flips.conv_removal_flip_rates`` must agree with)."""
    named = by_name(variables.masks)
    named[layer] = named[layer].at[int(tap[0]), int(tap[1]), int(tap[2]), int(co)].set(0.0)
    pruned = variables._replace(masks=from_names(named))

    @jax.jit
    def spikes(v):
        out = flips_mod.layer_io(model, v, images)[layer][1]
        return lif_time_major(lif_currents(out, model.timesteps, encoding), model.lif)[..., co]

    return float(jnp.mean(jnp.any(spikes(variables) != spikes(pruned), axis=0)))


def run_flips(net: TrainedNetwork, opts: TheoryOptions = TheoryOptions()) -> dict:
    """Measured spike-flip rates of weight removals against the SF score, |w| and SF without density."""
    t0 = time.time()
    config, model, trainer, rule, state = net.config, net.model, net.trainer, net.rule, net.state
    if not isinstance(model, SpikingVGG):
        raise ValueError("flips needs a plain spiking VGG: each ConvBN output must be its LIF layer's input")
    variables = state.forward_variables(rule)
    stats = collect_statistics(trainer, state, rule, num_batches=opts.stats_batches)
    bn_eps, th = model.bn.epsilon, model.lif.threshold
    scores = {"sf": sf(state.weights, {"bn": state.bn, "batch_stats": state.batch_stats}, stats,
                       threshold=th, epsilon=bn_eps),
              "magnitude": magnitude(state.weights)}
    scores = {name: {path: np.asarray(v) for path, v in by_name(tree).items()} for name, tree in scores.items()}
    # SF without its density factor: E|dU| = r_i |w gamma_j / sqrt(var_j + eps)| (Eq. 13), to see what
    # the crisis term N(V_th; mu_j, sigma_j^2) adds; |w| where SF has no statistics (as SF itself)
    density = {path: np.asarray(gaussian_density(th, s["potential_mean"], np.maximum(s["potential_std"], 1e-6)))
               for path, s in stats.items() if sf_eligible(stats, path)}
    scores["sf_without_density"] = {path: (p / density[path] if path in density else p)
                                    for path, p in scores["sf"].items()}
    images = net.test_images(opts.flip_images)
    n_img = int(images.shape[0])
    io = jax.jit(lambda v, x: flips_mod.layer_io(model, v, x))(variables, images)
    T = model.timesteps
    kernels_, masks_ = named_kernels(variables.weights), by_name(variables.masks)
    bn = by_layer(state.batch_stats)
    for path, leaves in by_layer(state.bn or {}).items():
        bn[path].update(leaves)
    fractions = [round(x, 4) for x in np.linspace(0.0, 1.0, 41)]
    rng = np.random.default_rng(opts.seed + 2)
    res = {"network": config.model, "dataset": config.dataset, "epochs": config.epochs,
           "test_accuracy": net.test_accuracy, "train_seconds": net.train_seconds, "images": n_img, "timesteps": T,
           "threshold": th, "decay": model.lif.decay, "stats_batches": opts.stats_batches,
           "criteria": list(scores), "headline_fractions": opts.flip_fractions, "groups": opts.flip_groups,
           "layers": {}}
    for layer, (inp, out) in io.items():
        kernel = kernels_[layer] * masks_[layer]
        b = bn[layer]
        scale = jax.lax.rsqrt(b["var"] + bn_eps) * b.get("scale", 1.0)
        encoding = layer == model.encoding_layer  # its input is the image, the same at every step
        currents = lif_currents(out, T, encoding)
        inputs = inp if encoding else unfold_time(inp, T)
        spikes = lif_time_major(currents, model.lif)
        entry = {"kernel_shape": list(kernel.shape), "weights": int(kernel.size), "encoding_layer": bool(encoding),
                 "firing_rate": float(jnp.mean(spikes)), "by_group": {}}
        per_channel = int(np.prod(kernel.shape[:-1]))
        for g in opts.flip_groups:
            if g > 1 and 4 * g > per_channel:  # a group would be most of an output channel's weights
                continue
            taps, co = flips_mod.sample_taps(rng, kernel.shape, opts.flip_weights, g)
            t1 = time.time()
            rate = np.asarray(flips_mod.conv_removal_flip_rates(
                currents, inputs, kernel, scale, jnp.asarray(taps), jnp.asarray(co), model.lif, chunk=opts.flip_chunk))
            crit = {name: flips_mod.group_scores(sc[layer], taps, co) for name, sc in scores.items()}
            rep = flips_mod.criterion_report(rate, crit, fractions)
            row = {"samples": int(rate.size), "seconds": time.time() - t1,
                   "mean_flip_rate": float(rate.mean()), "zero_flip_fraction": float(np.mean(rate == 0)),
                   "flip_rate_quantiles": np.quantile(rate, [0.5, 0.9, 0.99, 1.0]).tolist(),
                   "spearman": {n: rep[n]["spearman"] for n in rep},
                   "spearman_sf_vs_magnitude": flips_mod.spearman(crit["sf"], crit["magnitude"]),
                   "spearman_sf_minus_magnitude_95ci": flips_mod.spearman_difference_interval(
                       crit["sf"], crit["magnitude"], rate, opts.bootstrap, seed=opts.seed),
                   "spearman_sf_minus_sf_without_density_95ci": flips_mod.spearman_difference_interval(
                       crit["sf"], crit["sf_without_density"], rate, opts.bootstrap, seed=opts.seed),
                   "fractions": fractions,
                   "flip_share_of_lowest": {n: rep[n]["flip_share_of_lowest"] for n in rep},
                   "flip_share_oracle": flips_mod.flip_capture(rate, rate, fractions), "flip_share_random": fractions,
                   "headline": {n: {str(x): flips_mod.flip_capture(rate, crit[n], [x])[0]
                                    for x in opts.flip_fractions} for n in crit},
                   "sample": {"flip_rate": rate[:opts.flip_keep].tolist(),
                              **{n: np.asarray(c[:opts.flip_keep]).tolist() for n, c in crit.items()}}}
            # SF's density factor N(V_th; mu_j, sigma_j^2) per sample: how much it varies, and whether
            # it predicts what E|dU| leaves unexplained (flips per unit of expected |dU|)
            dens = crit["sf"] / np.maximum(crit["sf_without_density"], 1e-30)
            ok = crit["sf_without_density"] > 0
            row["density_factor_q10_q90_over_median"] = (np.quantile(dens, [0.1, 0.9]) / np.median(dens)).tolist()
            row["spearman_density_vs_flips_per_dU"] = flips_mod.spearman(
                dens[ok], rate[ok] / crit["sf_without_density"][ok]) if not encoding else None
            row["headline"]["oracle"] = {str(x): flips_mod.flip_capture(rate, rate, [x])[0]
                                         for x in opts.flip_fractions}
            entry["by_group"][str(g)] = row
        if opts.flip_checks:  # a few single weights re-measured by re-running the whole masked model
            taps, co = flips_mod.sample_taps(rng, kernel.shape, opts.flip_checks, 1)
            fast = np.asarray(flips_mod.conv_removal_flip_rates(
                currents, inputs, kernel, scale, jnp.asarray(taps), jnp.asarray(co), model.lif, chunk=opts.flip_chunk))
            slow = [removal_by_mask(model, variables, images, layer, t[0], c, encoding)
                    for t, c in zip(taps, co)]
            entry["check_against_masked_model"] = {"fast": fast.tolist(), "masked_model": slow,
                                                   "max_abs_diff": float(np.max(np.abs(fast - np.asarray(slow))))}
            if entry["check_against_masked_model"]["max_abs_diff"] > 0:
                log(f"warning: {layer}: removal flip rates differ from the masked model's: "
                      f"{entry['check_against_masked_model']}")
        res["layers"][layer] = entry
    res["seconds"] = time.time() - t0
    return res


# ------------------------------------------------------------------ slth (Lemma 4.1, Theorem 4.3)


def run_slth(opts: TheoryOptions = TheoryOptions()) -> dict:
    """Masks of the proof's wide random layer for random targets, and how often the pruned network disagrees."""
    t0 = time.time()
    n = opts.width_target
    T = opts.slth_timesteps
    cfg = LIFConfig(decay=opts.slth_decay, threshold=opts.u_th)
    c_th = slth.relay_probability(cfg)
    rng = np.random.default_rng(opts.seed)
    if 2 ** (n * T) <= opts.max_inputs:  # every binary input (uniform spike inputs, rate 1/2)
        inputs = jnp.asarray(slth.all_spike_trains(n, T))
    else:  # a uniform sample of them
        inputs = jnp.asarray(rng.integers(0, 2, (T, opts.max_inputs, n)).astype(np.float32))
    targets = [slth.sample_target(rng, n, n) for _ in range(opts.trials)]

    @jax.jit
    def disagree(V, W, want):
        got = slth.wide_forward(inputs, V, W, cfg)
        return jnp.any(got != want, axis=(0, 2))  # [inputs]

    outs, us = [], []
    for tgt in targets:
        s, u = slth.target_forward(inputs, tgt, cfg, return_potential=True)
        outs.append(s)
        us.append(u)
    u_all = jnp.stack(us)  # [trials, T, inputs, n]
    res = {"n_in": n, "n_out": n, "timesteps": T, "threshold": opts.u_th, "decay": opts.slth_decay,
           "C_th": c_th, "trials": opts.trials, "inputs": int(inputs.shape[1]),
           "all_inputs": 2 ** (n * T) <= opts.max_inputs, "delta": opts.delta,
           "per_block": opts.per_block, "target_firing_rate": float(jnp.mean(u_all >= opts.u_th)), "eps": {}}
    for eps in opts.slth_eps:
        eps_t = np.array([float(crisis.carried_error(eps, cfg.decay, t + 1)) for t in range(T)])
        near = jnp.abs(u_all - opts.u_th) <= jnp.asarray(eps_t)[None, :, None, None]  # [trials, T, inputs, n]
        crisis_event = float(jnp.mean(jnp.any(near, axis=(1, 3))))  # P(some (i, t) in its crisis band)
        crisis_union = float(jnp.mean(jnp.sum(jnp.mean(near, axis=2), axis=(1, 2))))  # sum_{i,t} P(...)
        # the paper's density constant C: sup of the density of target U (pooled) near u_th
        dens = float(crisis.kde_sup_density(u_all.reshape(-1)[:: max(1, u_all.size // 200_000)], opts.u_th,
                                            float(eps_t[-1])))
        crisis_theorem = n * float(np.sum(2 * eps_t * dens))
        row = {"crisis_event": crisis_event, "crisis_union": crisis_union, "crisis_theorem": crisis_theorem,
               "density_C": dens,
               "width_lemma41": slth.width_lemma41(n, eps, opts.delta, cfg),
               "width_union": slth.width_union(n, n, eps, opts.delta, cfg),
               "width_theorem43": slth.width_theorem43(n, eps, opts.delta, cfg, dens, 1, T),
               "points": []}
        for per_block in opts.per_block:
            found, dis_first, dis_closest, exact_nets, p_exist = [], [], [], [], []
            for trial, tgt in enumerate(targets):
                layer = slth.sample_wide_layer(rng, n, n, per_block)
                p_exist.append(slth.mask_exists_probability(tgt, per_block, eps, cfg))
                for rule, store in (("first", dis_first), ("closest", dis_closest)):
                    c = slth.find_masks(tgt, layer, eps, cfg, rule=rule)
                    V, W = slth.pruned_network(c, layer, pad_to=n * n)
                    d = disagree(jnp.asarray(V), jnp.asarray(W), outs[trial])
                    store.append(float(jnp.mean(d)))
                    if rule == "first":
                        found.append(c.found)
                        exact_nets.append(not bool(jnp.any(d)))
            p_fail = 1.0 - float(np.mean(p_exist))
            # the targets whose masks were found, a count of independent trials of known probabilities
            # p_exist: its exact two-sided test (Poisson binomial)
            test = count_test_exact(int(np.sum(found)), p_exist)
            row["points"].append({
                "per_block": per_block, "k": n * per_block,
                "masks_found_measured": float(np.mean(found)),
                "masks_found_exact": float(np.mean(p_exist)),
                "masks_found_count": test.count, "masks_found_expected_count": test.expected,
                "masks_found_p": test.pvalue,
                "masks_found_union_bound": 1.0 - slth.mask_failure_union_bound(n, n, per_block, eps, cfg),
                "disagree_measured": float(np.mean(dis_first)),
                "disagree_measured_closest": float(np.mean(dis_closest)),
                "equivalent_on_all_inputs": float(np.mean(exact_nets)),
                "disagree_bound_event": min(1.0, p_fail + crisis_event),
                "disagree_bound_union": min(1.0, p_fail + crisis_union),
                "disagree_bound_theorem": min(1.0, slth.mask_failure_union_bound(n, n, per_block, eps, cfg)
                                              + crisis_theorem),
            })
        res["eps"][str(eps)] = row
    # Holm's adjustment over every (eps, width) cell's count test: one family
    points = [p for row in res["eps"].values() for p in row["points"]]
    for p, adjusted in zip(points, holm([p["masks_found_p"] for p in points])):
        p["masks_found_p_holm"] = float(adjusted)
    res["seconds"] = time.time() - t0
    return res


# ---------------------------------------------------------------------- all of them


def run(workdir: str, experiments=EXPERIMENTS, opts: TheoryOptions = TheoryOptions(),
        provenance: dict | None = None) -> dict:
    """Runs ``experiments`` (names from ``EXPERIMENTS``), writing WORKDIR/NAME.json and NAME.png
    for each; crisis and flips share one network, trained once (in WORKDIR/digits_dense).
    ``provenance`` (the command, commit and machine; ``train/theory.py`` gives it) and the options
    are recorded in each JSON. Returns {NAME: result}."""
    unknown = set(experiments) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"unknown experiments {sorted(unknown)}; choose from {EXPERIMENTS}")
    os.makedirs(workdir, exist_ok=True)
    net = None
    if {"crisis", "flips"} & set(experiments):
        net = train_digits(os.path.join(workdir, "digits_dense"), opts.epochs, opts.seed)
        log(f"trained {net.config.model} on {net.config.dataset} for {net.config.epochs} epochs: "
            f"test accuracy {net.test_accuracy:.4f} ({net.train_seconds:.1f}s)")
    runs = {"crisis": (lambda: run_crisis(net, opts), figures.plot_crisis),
            "flips": (lambda: run_flips(net, opts), figures.plot_flips),
            "slth": (lambda: run_slth(opts), figures.plot_slth)}
    results = {}
    for name in experiments:
        experiment, plot = runs[name]
        res = results[name] = experiment()
        res["options"] = dataclasses.asdict(opts)
        if provenance is not None:
            res["provenance"] = provenance
        with open(os.path.join(workdir, f"{name}.json"), "w") as f:
            json.dump(res, f, indent=1, default=float)
        plot(res, os.path.join(workdir, f"{name}.png"))
        log(f"{name}: {res['seconds']:.1f}s -> {workdir}/{name}.json, {name}.png")
    return results
