"""The paper's theory, checked by measurement (SPEC §6; issue #7 parts 1 and 3).

    python train/theory.py --workdir /tmp/theory            # both experiments (~1-2 min, 2 CPU cores)
    python train/theory.py --workdir /tmp/theory crisis     # Eq. 6, Lemma 3.2-3.4, Theorem 3.5
    python train/theory.py --workdir /tmp/theory slth       # Lemma 4.1, Theorem 4.3

crisis: trains the digits SNN briefly (``--train_steps``), takes the input currents
of each spiking layer on test images, perturbs them by |delta| <= eps and counts
spike flips; next to them, the crisis probability of the clean membrane potentials
and its bounds 2 eps sup f (histogram, kernel density, Gaussian fits), over one
step, T steps (carried error eps (1 - beta^t) / (1 - beta)) and a whole layer.

slth: builds the wide random SNN of the proof for random small targets, finds the
proof's masks, and measures over every binary input how often the pruned wide
network's output spikes differ from the target's, against the theorem's bound and
the widths it demands. Writes ``crisis.json``/``crisis.png`` and ``slth.json``/``slth.png``.
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
    p.add_argument("experiment", nargs="?", default="all", choices=["all", "crisis", "slth"])
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
    todo = ["crisis", "slth"] if args.experiment == "all" else [args.experiment]
    for name in todo:
        res = run_crisis(args) if name == "crisis" else run_slth(args)
        with open(os.path.join(args.workdir, f"{name}.json"), "w") as f:
            json.dump(res, f, indent=1, default=float)
        (plot_crisis if name == "crisis" else plot_slth)(res, os.path.join(args.workdir, f"{name}.png"))
        print(f"{name}: {res['seconds']:.1f}s -> {args.workdir}/{name}.json, {name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
