"""The paper's theory, checked by measurement (SPEC §6; issue #7 parts 1-3).

    python train/theory.py --workdir /tmp/theory            # all three (~3.5 min, 2 CPU cores)
    python train/theory.py --workdir /tmp/theory crisis     # Eq. 6, Lemma 3.2-3.4, Theorem 3.5
    python train/theory.py --workdir /tmp/theory flips      # does the criterion predict spike flips? (Sec. 6)
    python train/theory.py --workdir /tmp/theory slth       # Lemma 4.1, Theorem 4.3

crisis: trains the digits SNN briefly (``--train_steps``), takes the input currents
of each spiking layer on test images, perturbs them by |delta| <= eps and counts
spike flips; next to them, the crisis probability of the clean membrane potentials
and its bounds 2 eps sup f (histogram, kernel density, Gaussian fits), over one
step, T steps (carried error eps (1 - beta^t) / (1 - beta)) and a whole layer.

flips: trains the dense digits SNN with jsnn's Trainer (``--flip_epochs``), collects
SF's firing statistics, and for a sample of weights of every spiking conv layer
removes each one alone (and random groups of ``--flip_groups`` weights of one output
channel) and measures the fraction of (test image, position) spike trains of that
channel that change. The flip rates are compared with the SF score p, with |w| and
with SF without its density factor: Spearman correlation per layer and the share of
all measured flips caused by the lowest-scored x%. A few removals are re-measured by
re-running the whole model with the weight's mask entry set to 0.

slth: builds the wide random SNN of the proof for random small targets, finds the
proof's masks, and measures over every binary input how often the pruned wide
network's output spikes differ from the target's, against the theorem's bound and
the widths it demands. Writes ``NAME.json``/``NAME.png`` for each experiment NAME.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jsnn.layers import BATCH_STATS, BN, MASKS, WEIGHTS, unfold_time  # noqa: E402
from jsnn.neuron import LIFConfig, lif_time_major  # noqa: E402
from jsnn.theory import crisis, slth  # noqa: E402
from jsnn.theory import flips as flips_mod  # noqa: E402

# ------------------------------------------------------------------ experiment 1


def _digits_network(args):
    """The digits SNN, trained for ``args.train_steps`` Adam steps; returns model, variables, test images."""
    from jsnn.data import load_dataset
    from jsnn.models import get_model
    from jsnn.variables import apply_model, init_variables

    ds = load_dataset("digits")
    mean, std = np.asarray(ds.mean, np.float32), np.asarray(ds.std, np.float32)
    norm = lambda x: (np.asarray(x, np.float32) - mean) / std  # noqa: E731
    xtr, ytr, xte, yte = norm(ds.train_images), ds.train_labels, norm(ds.test_images), ds.test_labels
    model = get_model("digits_cnn", ds.num_classes, timesteps=args.timesteps)
    key = jax.random.PRNGKey(args.seed)
    variables = jax.jit(lambda k: init_variables(model, k, (1,) + xtr.shape[1:]))(key)
    tx = optax.adam(args.lr)
    opt = tx.init(variables.weights)

    @jax.jit
    def step(weights, batch_stats, opt, x, y):
        def loss_fn(w):
            logits, new_bs, _ = apply_model(model, variables._replace(weights=w, batch_stats=batch_stats), x, train=True)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y[None])), new_bs

        (loss, new_bs), g = jax.value_and_grad(loss_fn, has_aux=True)(weights)
        upd, opt = tx.update(g, opt, weights)
        return optax.apply_updates(weights, upd), new_bs, opt, loss

    rng = np.random.default_rng(args.seed)
    w, bs = variables.weights, variables.batch_stats
    for _ in range(args.train_steps):
        idx = rng.integers(0, len(xtr), args.batch)
        w, bs, opt, loss = step(w, bs, opt, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]))
    variables = variables._replace(weights=w, batch_stats=bs)
    logits, _, _ = jax.jit(lambda v, x: apply_model(model, v, x, train=False))(variables, jnp.asarray(xte))
    acc = float(jnp.mean(jnp.argmax(jnp.mean(logits, 0), -1) == yte))
    return model, variables, xte, acc


def layer_currents(model, variables, images) -> dict[str, jax.Array]:
    """Input currents (conv + BN output) of every spiking layer, time-major [T, B, H, W, C]."""
    collections = {WEIGHTS: variables.weights, MASKS: variables.masks, BATCH_STATS: variables.batch_stats}
    if variables.bn:
        collections[BN] = variables.bn
    _, state = model.apply(collections, images, train=False, capture_intermediates=True, mutable=["intermediates"])
    out = {}
    for name, val in sorted(state["intermediates"].items()):
        if name.startswith("conv") and "__call__" in val:
            x = val["__call__"][0]
            if x.shape[0] == images.shape[0]:  # encoding layer: the same current at every step
                x = jnp.broadcast_to(x, (model.timesteps,) + x.shape)
            else:
                x = unfold_time(x, model.timesteps)
            out[name] = x
    return out


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


def run_crisis(args) -> dict:
    t0 = time.time()
    model, variables, xte, acc = _digits_network(args)
    images = jnp.asarray(xte[: args.images])
    currents = jax.jit(lambda v, x: layer_currents(model, v, x))(variables, images)
    lif = model.lif
    th, beta, T = lif.threshold, lif.decay, model.timesteps
    result = {"network": "digits_cnn", "train_steps": args.train_steps, "test_accuracy": acc,
              "images": int(images.shape[0]), "timesteps": T, "threshold": th, "decay": beta,
              "eps": args.eps, "perturbations": args.kinds, "layers": {}}
    key = jax.random.PRNGKey(args.seed + 1)
    for name, cur in currents.items():
        _, u = jax.jit(lambda c: lif_time_major(c, lif, True))(cur)
        bounds = jax.device_get(layer_bounds(u, jnp.asarray(args.eps, jnp.float32), th, beta, args.kde_samples))
        mu, sd = crisis.gaussian_fit(u)
        layer = {"width": int(cur[0, 0].size), "u_mean": float(mu), "u_std": float(sd),
                 "firing_rate": float(jnp.mean(u >= th)), "per_eps": []}
        for k, eps in enumerate(args.eps):
            row = {"eps": eps, **{name_: float(v[k]) for name_, v in bounds.items()}}
            row["measured"] = {}
            for kind in args.kinds:
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
        sub = np.asarray(u).reshape(-1)[:: max(1, u.size // args.kde_samples)]
        layer["u_histogram"] = [a.tolist() for a in np.histogram(sub, bins=80)]
        result["layers"][name] = layer
    result["seconds"] = time.time() - t0
    return result


def plot_crisis(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["layers"])
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7.2), squeeze=False)
    th = res["threshold"]
    for k, name in enumerate(names):
        L = res["layers"][name]
        counts, edges = (np.asarray(a) for a in L["u_histogram"])
        ax = axes[0, k]
        ax.stairs(counts / counts.sum() / np.diff(edges), edges, fill=True, alpha=0.6)
        e = max(res["eps"])
        ax.axvspan(th - e, th + e, color="r", alpha=0.2, label=f"crisis band, eps={e}")
        ax.axvline(th, color="r")
        ax.set_title(f"{name}: U (N={L['width']}, rate {L['firing_rate']:.2f})")
        ax.set_xlabel("membrane potential U")
        ax.legend(fontsize=7)
        ax = axes[1, k]
        eps = np.array([r["eps"] for r in L["per_eps"]])
        get = lambda key: np.array([r[key] for r in L["per_eps"]])  # noqa: E731
        ax.loglog(eps, get("crisis_mass"), "k-", label="P(|U-V_th|<=eps) (empirical)")
        ax.loglog(eps, get("bound_kde"), "b--", label="2 eps sup f (KDE)")
        ax.loglog(eps, get("bound_histogram"), "c:", label="2 eps sup f (histogram)")
        ax.loglog(eps, get("bound_gaussian_per_channel"), "g-.", label="2 eps sup f (Gaussian/channel)")
        ax.loglog(eps, get("bound_T_steps_kde"), "m--", label="T steps: sum_t 2 eps_t sup f_t")
        for kind, mk in zip(res["perturbations"], "os^"):
            m = [r["measured"][kind] for r in L["per_eps"]]
            ax.loglog(eps, [x["flip_rate_t1"] for x in m], "r" + mk, label=f"flips at t=1 ({kind})")
            ax.loglog(eps, [x["any_flip_over_T"] for x in m], "m" + mk, mfc="none", label=f"any flip in T ({kind})")
        ax.set_xlabel("perturbation eps")
        ax.set_ylabel("probability per neuron")
        if k == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"Crisis probability vs measured spike flips, digits SNN (test acc {res['test_accuracy']:.3f}, "
                 f"T={res['timesteps']}, beta={res['decay']})")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------ experiment 2


def _trained_digits(args):
    """The dense digits SNN trained by jsnn's own Trainer (``--flip_epochs`` epochs of the dense preset)."""
    from jsnn.config import TrainConfig
    from jsnn.methods import MaskedTraining
    from jsnn.run import prepare
    from jsnn.variables import init_variables

    config = TrainConfig(dataset="digits", epochs=args.flip_epochs, seed=args.seed, progress=False).resolve("dense")
    dataset, model, trainer = prepare(config, os.path.join(args.workdir, "flips_dense"))
    method = MaskedTraining()
    variables = init_variables(model, jax.random.key(config.seed), (1,) + dataset.image_shape)
    state = trainer.new_state(variables, {}, method, config.seed)
    state = trainer.train_epochs(state, method, 0, data_seed=config.seed)
    return config, dataset, model, trainer, method, state


def _lif_currents(out, T: int, encoding: bool):
    """A ConvBN output as its LIF layer's time-major input [T, B, ...] (encoding layer: repeated over T)."""
    return jnp.broadcast_to(out, (T,) + out.shape) if encoding else unfold_time(out, T)


def _removal_by_mask(model, variables, images, layer, tap, co, encoding):
    """Reference: the flip rate of one weight measured by re-running the whole model with its mask
    entry set to 0 (the slow way ``flips.conv_removal_flip_rates`` must agree with)."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(variables.masks)
    key = tuple(layer.split("/")) + ("kernel",)
    flat[key] = flat[key].at[int(tap[0]), int(tap[1]), int(tap[2]), int(co)].set(0.0)
    pruned = variables._replace(masks=traverse_util.unflatten_dict(flat))

    @jax.jit
    def spikes(v):
        out = flips_mod.layer_io(model, v, images)[layer][1]
        return lif_time_major(_lif_currents(out, model.timesteps, encoding), model.lif)[..., co]

    return float(jnp.mean(jnp.any(spikes(variables) != spikes(pruned), axis=0)))


def run_flips(args) -> dict:
    from flax import traverse_util

    from jsnn import data as jdata
    from jsnn.models import SpikingVGG
    from jsnn.sparsity.criteria import gaussian_density, magnitude, sf, sf_eligible
    from jsnn.sparsity.stats import collect_statistics

    t0 = time.time()
    config, dataset, model, trainer, method, state = _trained_digits(args)
    if not isinstance(model, SpikingVGG):
        raise ValueError("flips needs a plain spiking VGG: each ConvBN output must be its LIF layer's input")
    acc = trainer.evaluate(state, method)["test_accuracy"]
    t_train = time.time() - t0
    variables = state.forward_variables(method)
    stats = collect_statistics(trainer, state, method, num_batches=args.stats_batches)
    bn_eps, th = model.bn.epsilon, model.lif.threshold
    scores = {"sf": sf(state.weights, {"bn": state.bn, "batch_stats": state.batch_stats}, stats,
                       threshold=th, epsilon=bn_eps),
              "magnitude": magnitude(state.weights)}
    scores = {name: {"/".join(k[:-1]): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}
              for name, tree in scores.items()}
    # SF without its density factor: E|dU| = r_i |w gamma_j / sqrt(var_j + eps)| (Eq. 13), to see what
    # the crisis term N(V_th; mu_j, sigma_j^2) adds; |w| where SF has no statistics (as SF itself)
    density = {path: np.asarray(gaussian_density(th, s["potential_mean"], np.maximum(s["potential_std"], 1e-6)))
               for path, s in stats.items() if sf_eligible(stats, path)}
    scores["sf_without_density"] = {path: (p / density[path] if path in density else p)
                                    for path, p in scores["sf"].items()}
    n_img = min(args.flip_images, len(dataset.test_labels))
    images = jdata.normalize(jnp.asarray(dataset.test_images[:n_img]).astype(np.float32), dataset.mean, dataset.std)
    io = jax.jit(lambda v, x: flips_mod.layer_io(model, v, x))(variables, images)
    T = model.timesteps
    kernels_ = {"/".join(k[:-1]): v for k, v in traverse_util.flatten_dict(variables.weights).items()
                if k[-1] == "kernel"}
    masks_ = {"/".join(k[:-1]): v for k, v in traverse_util.flatten_dict(variables.masks).items()}
    bn = {"/".join(k[:-1]): {} for k in traverse_util.flatten_dict(state.batch_stats)}
    for k, v in traverse_util.flatten_dict(state.batch_stats).items():
        bn["/".join(k[:-1])][k[-1]] = v
    for k, v in traverse_util.flatten_dict(state.bn or {}).items():
        bn["/".join(k[:-1])][k[-1]] = v
    fractions = [round(x, 4) for x in np.linspace(0.0, 1.0, 41)]
    rng = np.random.default_rng(args.seed + 2)
    res = {"network": config.model, "dataset": config.dataset, "epochs": config.epochs,
           "test_accuracy": acc, "train_seconds": t_train, "images": n_img, "timesteps": T,
           "threshold": th, "decay": model.lif.decay, "stats_batches": args.stats_batches,
           "criteria": list(scores), "headline_fractions": args.flip_fractions, "groups": args.flip_groups,
           "layers": {}}
    for layer, (inp, out) in io.items():
        kernel = kernels_[layer] * masks_[layer]
        b = bn[layer]
        scale = jax.lax.rsqrt(b["var"] + bn_eps) * b.get("scale", 1.0)
        encoding = layer == model.encoding_layer  # its input is the image, the same at every step
        currents = _lif_currents(out, T, encoding)
        inputs = inp if encoding else unfold_time(inp, T)
        spikes = lif_time_major(currents, model.lif)
        entry = {"kernel_shape": list(kernel.shape), "weights": int(kernel.size), "encoding_layer": bool(encoding),
                 "firing_rate": float(jnp.mean(spikes)), "by_group": {}}
        per_channel = int(np.prod(kernel.shape[:-1]))
        for g in args.flip_groups:
            if g > 1 and 4 * g > per_channel:  # a group would be most of an output channel's weights
                continue
            taps, co = flips_mod.sample_taps(rng, kernel.shape, args.flip_weights, g)
            t1 = time.time()
            rate = np.asarray(flips_mod.conv_removal_flip_rates(
                currents, inputs, kernel, scale, jnp.asarray(taps), jnp.asarray(co), model.lif, chunk=args.flip_chunk))
            crit = {name: flips_mod.group_scores(sc[layer], taps, co) for name, sc in scores.items()}
            rep = flips_mod.criterion_report(rate, crit, fractions)
            row = {"samples": int(rate.size), "seconds": time.time() - t1,
                   "mean_flip_rate": float(rate.mean()), "zero_flip_fraction": float(np.mean(rate == 0)),
                   "flip_rate_quantiles": np.quantile(rate, [0.5, 0.9, 0.99, 1.0]).tolist(),
                   "spearman": {n: rep[n]["spearman"] for n in rep},
                   "spearman_sf_vs_magnitude": flips_mod.spearman(crit["sf"], crit["magnitude"]),
                   "spearman_sf_minus_magnitude_95ci": flips_mod.spearman_difference_interval(
                       crit["sf"], crit["magnitude"], rate, args.bootstrap, seed=args.seed),
                   "fractions": fractions,
                   "flip_share_of_lowest": {n: rep[n]["flip_share_of_lowest"] for n in rep},
                   "flip_share_oracle": flips_mod.flip_capture(rate, rate, fractions), "flip_share_random": fractions,
                   "headline": {n: {str(x): flips_mod.flip_capture(rate, crit[n], [x])[0]
                                    for x in args.flip_fractions} for n in crit},
                   "sample": {"flip_rate": rate[:args.flip_keep].tolist(),
                              **{n: np.asarray(c[:args.flip_keep]).tolist() for n, c in crit.items()}}}
            # SF's density factor N(V_th; mu_j, sigma_j^2) per sample: how much it varies, and whether
            # it predicts what E|dU| leaves unexplained (flips per unit of expected |dU|)
            dens = crit["sf"] / np.maximum(crit["sf_without_density"], 1e-30)
            ok = crit["sf_without_density"] > 0
            row["density_factor_q10_q90_over_median"] = (np.quantile(dens, [0.1, 0.9]) / np.median(dens)).tolist()
            row["spearman_density_vs_flips_per_dU"] = flips_mod.spearman(
                dens[ok], rate[ok] / crit["sf_without_density"][ok]) if not encoding else None
            row["headline"]["oracle"] = {str(x): flips_mod.flip_capture(rate, rate, [x])[0]
                                         for x in args.flip_fractions}
            entry["by_group"][str(g)] = row
        if args.flip_checks:  # a few single weights re-measured by re-running the whole masked model
            taps, co = flips_mod.sample_taps(rng, kernel.shape, args.flip_checks, 1)
            fast = np.asarray(flips_mod.conv_removal_flip_rates(
                currents, inputs, kernel, scale, jnp.asarray(taps), jnp.asarray(co), model.lif, chunk=args.flip_chunk))
            slow = [_removal_by_mask(model, variables, images, layer, t[0], c, encoding)
                    for t, c in zip(taps, co)]
            entry["check_against_masked_model"] = {"fast": fast.tolist(), "masked_model": slow,
                                                   "max_abs_diff": float(np.max(np.abs(fast - np.asarray(slow))))}
            if entry["check_against_masked_model"]["max_abs_diff"] > 0:
                print(f"warning: {layer}: removal flip rates differ from the masked model's: "
                      f"{entry['check_against_masked_model']}")
        res["layers"][layer] = entry
    res["seconds"] = time.time() - t0
    return res


def plot_flips(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["layers"])
    fig, axes = plt.subplots(2, len(names), figsize=(4.4 * len(names), 8.0), squeeze=False)
    colors = {"sf": "tab:red", "magnitude": "tab:blue", "sf_without_density": "tab:orange"}
    labels = {"sf": "SF score p", "magnitude": "|w|", "sf_without_density": "SF without density (E|dU|)"}
    for k, name in enumerate(names):
        L = res["layers"][name]
        g0 = str(res["groups"][0])
        row = L["by_group"][g0]
        ax = axes[0, k]
        smp = row["sample"]
        rate = np.asarray(smp["flip_rate"])
        for crit in res["criteria"]:
            s = np.asarray(smp[crit])
            ax.loglog(s / np.median(s[s > 0]), np.maximum(rate, 1e-5), ".", ms=3, alpha=0.5, color=colors.get(crit),
                      label=f"{labels.get(crit, crit)} (rho={row['spearman'][crit]:.2f})")
        ax.set_xlabel("criterion score / its median")
        ax.set_ylabel("measured flip rate (0 shown at 1e-5)")
        ax.set_title(f"{name} {tuple(L['kernel_shape'])}" + (" (encoding: SF = |w|)" if L["encoding_layer"] else ""),
                     fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[1, k]
        for g, st in zip(res["groups"], ("-", "--", ":", "-.")):
            if str(g) not in L["by_group"]:
                continue
            r = L["by_group"][str(g)]
            x = np.asarray(r["fractions"])
            for crit in res["criteria"]:
                ax.plot(x, r["flip_share_of_lowest"][crit], st, color=colors.get(crit), lw=2.4 if crit == "sf" else 1.2,
                        label=f"{labels.get(crit, crit)}, {g} weight(s)")
            ax.plot(x, r["flip_share_oracle"], st, color="k", lw=0.8, label=f"oracle, {g} weight(s)")
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8, label="random")
        ax.set_xlabel("fraction x of sampled weights pruned, lowest score first")
        ax.set_ylabel("share of all measured flips they cause")
        if k == len(names) - 1:
            ax.legend(fontsize=6)
    fig.suptitle(f"Does the criterion predict spike flips? digits SNN (test acc {res['test_accuracy']:.3f}, "
                 f"{res['images']} test images, T={res['timesteps']})")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------ experiment 3


def run_slth(args) -> dict:
    t0 = time.time()
    n = args.width_target
    T = args.slth_timesteps
    cfg = LIFConfig(decay=args.slth_decay, threshold=args.u_th)
    c_th = slth.relay_probability(cfg)
    rng = np.random.default_rng(args.seed)
    if 2 ** (n * T) <= args.max_inputs:  # every binary input (uniform spike inputs, rate 1/2)
        inputs = jnp.asarray(slth.all_spike_trains(n, T))
    else:  # a uniform sample of them
        inputs = jnp.asarray(rng.integers(0, 2, (T, args.max_inputs, n)).astype(np.float32))
    targets = [slth.sample_target(rng, n, n) for _ in range(args.trials)]

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
    res = {"n_in": n, "n_out": n, "timesteps": T, "threshold": args.u_th, "decay": args.slth_decay,
           "C_th": c_th, "trials": args.trials, "inputs": int(inputs.shape[1]),
           "all_inputs": 2 ** (n * T) <= args.max_inputs, "delta": args.delta,
           "per_block": args.per_block, "target_firing_rate": float(jnp.mean(u_all >= args.u_th)), "eps": {}}
    for eps in args.slth_eps:
        eps_t = np.array([float(crisis.carried_error(eps, cfg.decay, t + 1)) for t in range(T)])
        near = jnp.abs(u_all - args.u_th) <= jnp.asarray(eps_t)[None, :, None, None]  # [trials, T, inputs, n]
        crisis_event = float(jnp.mean(jnp.any(near, axis=(1, 3))))  # P(some (i, t) in its crisis band)
        crisis_union = float(jnp.mean(jnp.sum(jnp.mean(near, axis=2), axis=(1, 2))))  # sum_{i,t} P(...)
        # the paper's density constant C: sup of the density of target U (pooled) near u_th
        dens = float(crisis.kde_sup_density(u_all.reshape(-1)[:: max(1, u_all.size // 200_000)], args.u_th,
                                            float(eps_t[-1])))
        crisis_theorem = n * float(np.sum(2 * eps_t * dens))
        row = {"crisis_event": crisis_event, "crisis_union": crisis_union, "crisis_theorem": crisis_theorem,
               "density_C": dens,
               "width_lemma41": slth.width_lemma41(n, eps, args.delta, cfg),
               "width_union": slth.width_union(n, n, eps, args.delta, cfg),
               "width_theorem43": slth.width_theorem43(n, eps, args.delta, cfg, dens, 1, T),
               "points": []}
        for per_block in args.per_block:
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
            row["points"].append({
                "per_block": per_block, "k": n * per_block,
                "masks_found_measured": float(np.mean(found)),
                "masks_found_exact": float(np.mean(p_exist)),
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
    res["seconds"] = time.time() - t0
    return res


def plot_slth(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps_keys = list(res["eps"])
    fig, axes = plt.subplots(2, len(eps_keys), figsize=(4.2 * len(eps_keys), 7.0), squeeze=False)
    for k, e in enumerate(eps_keys):
        row = res["eps"][e]
        P = row["points"]
        x = [p["per_block"] for p in P]
        g = lambda key: [p[key] for p in P]  # noqa: E731
        ax = axes[0, k]
        ax.semilogx(x, g("masks_found_measured"), "ko", label="masks exist (measured)")
        ax.semilogx(x, g("masks_found_exact"), "k-", label="masks exist (exact formula)")
        ax.semilogx(x, g("masks_found_union_bound"), "b--", label="proof's lower bound")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"eps = {e} (N={res['n_in']}, T={res['timesteps']}, u_th={res['threshold']})")
        ax.set_xlabel("candidates per weight n (k = N n)")
        ax = axes[1, k]
        floor = 0.5 / (res["inputs"] * res["trials"])
        clip = lambda v: np.maximum(np.asarray(v, float), floor)  # noqa: E731
        ax.loglog(x, clip(g("disagree_measured")), "ro-", label="P(output spikes differ), proof's mask")
        ax.loglog(x, clip(g("disagree_measured_closest")), "s-", color="orange", mfc="none",
                  label="same, closest candidate")
        ax.loglog(x, clip(g("disagree_bound_event")), "k-", label="bound: P(no mask)+P(crisis event)")
        ax.loglog(x, clip(g("disagree_bound_union")), "b--", label="bound: + union over (i,t)")
        ax.loglog(x, clip(g("disagree_bound_theorem")), "g:", label="bound: Thm 4.3 form (2 C eps_t N T)")
        for key, st, lab in (("width_lemma41", "k", "Lemma 4.1 width"), ("width_union", "b", "union-bound width"),
                             ("width_theorem43", "g", "Thm 4.3 width")):
            if math.isfinite(row[key]):
                ax.axvline(row[key] / res["n_in"], color=st, alpha=0.4, lw=1, label=f"{lab} (delta={res['delta']})")
        ax.set_xlabel("candidates per weight n (k = N n)")
        ax.set_ylim(floor * 0.8, 1.5)
        if k == 0:
            axes[0, k].legend(fontsize=7)
            ax.legend(fontsize=6)
    fig.suptitle("Strong LTH construction: pruned wide random SNN vs target ("
                 + ("all" if res["all_inputs"] else f"{res['inputs']} random") + " binary inputs)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---------------------------------------------------------------------- program


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", default="all", choices=["all", "crisis", "flips", "slth"])
    p.add_argument("--workdir", required=True, help="folder for the JSON results and PNG figures")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("crisis (experiment 1)")
    g.add_argument("--train_steps", type=int, default=60, help="Adam steps on digits before measuring (0: random)")
    g.add_argument("--batch", type=int, default=64)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--timesteps", type=int, default=4)
    g.add_argument("--images", type=int, default=256, help="test images whose potentials are measured")
    g.add_argument("--eps", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.3])
    g.add_argument("--kinds", nargs="+", default=["sign", "uniform"], help="perturbations: sign, uniform, constant")
    g.add_argument("--kde_samples", type=int, default=20_000, help="potentials subsampled for the KDE")
    g = p.add_argument_group("flips (experiment 2)")
    g.add_argument("--flip_epochs", type=int, default=3, help="epochs of jsnn's dense digits training")
    g.add_argument("--flip_images", type=int, default=256, help="test images whose spike trains are compared")
    g.add_argument("--flip_weights", type=int, default=2048, help="sampled weights (or groups) per layer")
    g.add_argument("--flip_groups", type=int, nargs="+", default=[1, 8],
                   help="weights removed together (random, same output channel)")
    g.add_argument("--flip_fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    g.add_argument("--stats_batches", type=int, default=10, help="training batches for SF's firing statistics")
    g.add_argument("--flip_checks", type=int, default=2,
                   help="weights per layer re-measured by re-running the whole masked model")
    g.add_argument("--flip_keep", type=int, default=1000, help="sampled (flip rate, scores) kept in the JSON")
    g.add_argument("--bootstrap", type=int, default=300, help="resamples for the SF - |w| correlation interval")
    g.add_argument("--flip_chunk", type=int, default=32, help="removals simulated at once")
    g = p.add_argument_group("slth (experiment 3)")
    g.add_argument("--width_target", type=int, default=4, help="N: target layer is N x N")
    g.add_argument("--slth_timesteps", type=int, default=4)
    g.add_argument("--u_th", type=float, default=0.5, help="threshold u_th < 1 (the proof needs it)")
    g.add_argument("--slth_decay", type=float, default=0.25)
    g.add_argument("--slth_eps", type=float, nargs="+", default=[0.005, 0.02, 0.08])
    g.add_argument("--per_block", type=int, nargs="+", default=[2**i for i in range(4, 16)],
                   help="candidates per weight n; width k = N n")
    g.add_argument("--max_inputs", type=int, default=8192,
                   help="enumerate all 2^(N T) binary inputs up to this many, else sample this many")
    g.add_argument("--trials", type=int, default=20, help="random targets (each with its own wide layers)")
    g.add_argument("--delta", type=float, default=0.1, help="failure probability for the widths")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    todo = ["crisis", "flips", "slth"] if args.experiment == "all" else [args.experiment]
    runs = {"crisis": (run_crisis, plot_crisis), "flips": (run_flips, plot_flips), "slth": (run_slth, plot_slth)}
    for name in todo:
        run, plot = runs[name]
        res = run(args)
        with open(os.path.join(args.workdir, f"{name}.json"), "w") as f:
            json.dump(res, f, indent=1, default=float)
        plot(res, os.path.join(args.workdir, f"{name}.png"))
        print(f"{name}: {res['seconds']:.1f}s -> {args.workdir}/{name}.json, {name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
