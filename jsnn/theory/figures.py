"""Figures of the theory experiments (``jsnn.theory.experiments``): each takes an
experiment's result dict, as written to ``NAME.json``, and writes a PNG."""
from __future__ import annotations

import math

import numpy as np

from jsnn.plots import pyplot, save_figure


def plot_crisis(res: dict, path: str) -> None:
    """Densities of U per layer, and crisis probability, its bounds and measured flips against eps."""
    names = list(res["layers"])
    plt = pyplot()
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
        get = lambda key, rows=L["per_eps"]: np.array([r[key] for r in rows])  # noqa: E731
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
    title = (f"Crisis probability vs measured spike flips, digits SNN (test acc {res['test_accuracy']:.3f}, "
             f"T={res['timesteps']}, beta={res['decay']})")
    save_figure(fig, path, title, dpi=130)


def plot_flips(res: dict, path: str) -> None:
    """Measured flip rate against each criterion per layer, and the share of flips caused by the lowest-scored x%."""
    names = list(res["layers"])
    plt = pyplot()
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
    save_figure(fig, path, f"Does the criterion predict spike flips? digits SNN (test acc {res['test_accuracy']:.3f}, "
                           f"{res['images']} test images, T={res['timesteps']})", dpi=130)


def plot_slth(res: dict, path: str) -> None:
    """Mask existence and output disagreement of the pruned wide network against the bounds and widths, per eps."""
    eps_keys = list(res["eps"])
    plt = pyplot()
    fig, axes = plt.subplots(2, len(eps_keys), figsize=(4.2 * len(eps_keys), 7.0), squeeze=False)
    for k, e in enumerate(eps_keys):
        row = res["eps"][e]
        P = row["points"]
        x = [p["per_block"] for p in P]
        g = lambda key, rows=P: [p[key] for p in rows]  # noqa: E731
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
    save_figure(fig, path, "Strong LTH construction: pruned wide random SNN vs target ("
                           + ("all" if res["all_inputs"] else f"{res['inputs']} random") + " binary inputs)", dpi=130)
