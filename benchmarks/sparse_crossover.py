"""The sparsity lever, measured: when does a sparse formulation of a ticket's conv beat the dense one?

    python -m benchmarks.sparse_crossover              # the whole grid -> results/sparse_crossover.{json,md,png}
    python -m benchmarks.sparse_crossover --quick      # seconds: one small layer, two sparsities, one rate
    python -m benchmarks.sparse_crossover --layers early --rates 0.1 --out mine

For SNN-VGG-16's conv layers at CIFAR shape (batch x T folded: 32 x 5 = 160 images by default),
each formulation computes conv3x3(spikes, kernel * mask) with padding 1 and is compared with
jsnn's own dense path, ``jsnn.conv.conv2d`` (what inference runs; XLA's Eigen convolution under
the XLA flag jsnn's programs set, or the im2col matmul on 2x2 maps):

  dense        ``jsnn.conv.conv2d`` on the masked kernel (the reference; its time does not depend
               on the mask or the spikes)
  channels     (a) compressed kernel: the input channels whose weights are all pruned are dropped
               from the spikes, the output channels whose weights are all pruned are not computed
               (zeros put back), then ``conv2d`` on the smaller kernel
  xla_scatter  (b) event-driven in XLA: ``nonzero`` of the spikes (capacity = the exact count),
               each active input scatters its kept weights (ELL over input channels, padded to the
               longest) into the output with ``.at[].add``, in chunks under ``lax.scan``
  ffi_dense    (c) C++ kernel through ``jax.ffi`` (``jsnn/sparse_inference/kernel.py``),
               event-driven over active inputs, full weight rows (work ∝ firing rate)
  ffi_ell      (c) the same kernel with only the kept weights of each (tap, input channel) row
               (ELL, padded to the longest row; work ∝ firing rate x kept weights per row)

Masks: unstructured random at each weight sparsity, plus per layer the density ERK gives that
layer in a whole-VGG-16 ticket at 95 % and 98 % (``jsnn.sparsity.distributions.erk_densities``;
still random inside the layer). Spikes: Bernoulli(rate) per value, independent. Real spike
maps are spatially and channel-wise correlated (and some channels are silent), which this does
not model. Every sparse output is checked against the dense conv's: max |diff| / max |dense|
<= ``TOLERANCE`` (binary inputs make every output a sum of selected weights; only the summation
order differs). Timing: jitted, warm-up calls, then the median of ``--repeats`` calls, 2 threads.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 1e-5
# name -> (H = W of the input map, Cin, Cout): SNN-VGG-16's plan at 32x32 (jsnn/models/vgg.py)
LAYERS = {
    "early_32x32_64": (32, 64, 64),
    "middle_8x8_256": (8, 256, 256),
    "late_4x4_512": (4, 512, 512),
    "late_2x2_512": (2, 512, 512),
}
SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
RATES = (0.05, 0.1, 0.2)
ERK_TICKETS = (0.95, 0.98)  # whole-network sparsities whose ERK per-layer density is measured too
FORMULATIONS = ("channels", "xla_scatter", "ffi_dense", "ffi_ell")
# xla_scatter is skipped where it would scatter more than this many entries (it runs at a few
# hundred million per second at best; the grid would take hours)
XLA_SCATTER_MAX_ENTRIES = 3e8


def _vgg16_layer_of(h: int, cin: int, cout: int) -> str:
    """The name of the first VGG-16 conv with this input size and channels (for the ERK density)."""
    from jsnn.models.vgg import VGG16_PLAN

    size, c, n = 32, 3, 0
    for item in VGG16_PLAN:
        if item == "M":
            size //= 2
            continue
        if (size, c, item) == (h, cin, cout):
            return f"conv{n}"
        c, n = item, n + 1
    raise ValueError(f"no VGG-16 conv at {h}x{h}x{cin}->{cout}")


def erk_layer_sparsity(ticket_sparsity: float, layer: str) -> float:
    """The sparsity ERK gives ``layer`` of SNN-VGG-16 (CIFAR-100) at whole-network ``ticket_sparsity``."""
    from jsnn.models.vgg import VGG16_PLAN
    from jsnn.sparsity.distributions import erk_densities

    shapes, c, n = {}, 3, 0
    for item in VGG16_PLAN:
        if item == "M":
            continue
        shapes[f"conv{n}"] = (3, 3, c, item)
        c, n = item, n + 1
    shapes["fc"] = (c, 100)
    return 1.0 - erk_densities(shapes, 1.0 - ticket_sparsity)[layer]


# -- formulations --------------------------------------------------------------------------------


def channel_compressed(kernel_np):
    """(a): the kept input / output channels and the compressed kernel; a function of the spikes."""
    import jax.numpy as jnp
    import numpy as np

    from jsnn.conv import conv2d

    keep_in = np.flatnonzero(np.any(kernel_np != 0, axis=(0, 1, 3)))
    keep_out = np.flatnonzero(np.any(kernel_np != 0, axis=(0, 1, 2)))
    cout = kernel_np.shape[3]
    small = jnp.asarray(kernel_np[:, :, keep_in][:, :, :, keep_out])
    full_in = keep_in.size == kernel_np.shape[2]

    def f(x):
        xs = x if full_in else jnp.take(x, keep_in, axis=3)
        if keep_in.size == 0 or keep_out.size == 0:
            return jnp.zeros(x.shape[:3] + (cout,), x.dtype)
        y = conv2d(xs, small, 1, 1)
        if keep_out.size == cout:
            return y
        return jnp.zeros(y.shape[:3] + (cout,), y.dtype).at[..., keep_out].set(y)

    return f, {"kept_in_channels": int(keep_in.size), "kept_out_channels": int(keep_out.size)}


def xla_scatter(kernel_np, x_shape, nnz: int):
    """(b): event-driven in XLA. Each of the ``nnz`` active inputs (n, y, x, c) adds its K kept
    weights (ELL by input channel over (tap, output channel)) to a padded flat output."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    kh, kw, cin, cout = kernel_np.shape
    n, h, w, _ = x_shape
    hp, wp = h + kh - 1, w + kw - 1  # output padded by kh-1-p above and p below (p = kh // 2)
    per_c = kernel_np.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)  # [c, (i, j, o)]
    counts = (per_c != 0).sum(axis=1)
    K = max(1, int(counts.max()))
    i, j, o = np.unravel_index(np.arange(kh * kw * cout), (kh, kw, cout))
    offset_all = (((kh - 1 - i) * wp + (kw - 1 - j)) * cout + o).astype(np.int32)
    offsets = np.zeros((cin, K), np.int32)
    values = np.zeros((cin, K), np.float32)
    for c in range(cin):
        q = np.flatnonzero(per_c[c])
        offsets[c, :q.size] = offset_all[q]
        values[c, :q.size] = per_c[c, q]
    offsets_j, values_j = jnp.asarray(offsets), jnp.asarray(values)
    cap = max(1, nnz)
    chunk = max(1, min(cap, (1 << 22) // K))
    chunks = -(-cap // chunk)
    p = kh // 2
    top = kh - 1 - p

    def f(x):
        flat = x.reshape(-1)
        (idx,) = jnp.nonzero(flat, size=chunks * chunk, fill_value=0)
        live = jnp.arange(chunks * chunk) < cap
        v = jnp.where(live, flat[idx], 0.0)
        pix, c = idx // cin, idx % cin
        nn, rest = pix // (h * w), pix % (h * w)
        yy, xx = rest // w, rest % w
        base = ((nn * hp + yy) * wp + xx) * cout

        def step(out, args):
            b, cc, vv = args
            targets = b[:, None] + offsets_j[cc]
            return out.at[targets.reshape(-1)].add((vv[:, None] * values_j[cc]).reshape(-1),
                                                   indices_are_sorted=False, unique_indices=False), None

        out = jnp.zeros(n * hp * wp * cout, x.dtype)
        out, _ = jax.lax.scan(step, out, (base.reshape(chunks, chunk), c.reshape(chunks, chunk),
                                          v.reshape(chunks, chunk)))
        ho, wo = h + 2 * p - kh + 1, w + 2 * p - kw + 1
        return out.reshape(n, hp, wp, cout)[:, top:top + ho, top:top + wo]

    return f, {"ell_K": K, "scatter_entries": int(cap * K)}


# -- measurement ---------------------------------------------------------------------------------


def time_call(fn, args, warmup: int, repeats: int) -> tuple[float, list[float], object]:
    out = fn(*args)
    out.block_until_ready()
    for _ in range(warmup):
        fn(*args).block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args).block_until_ready()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2], ts, out


def rel_diff(out, ref) -> float:
    import numpy as np

    out, ref = np.asarray(out), np.asarray(ref)
    scale = float(np.max(np.abs(ref)))
    return float(np.max(np.abs(out - ref))) / (scale if scale > 0 else 1.0)


def mask_levels(layer: str, sparsities) -> list[tuple[str, float]]:
    h, cin, cout = LAYERS[layer]
    levels = [(f"{s:g}", s) for s in sparsities]
    for t in ERK_TICKETS:
        levels.append((f"erk@{t:g}", erk_layer_sparsity(t, _vgg16_layer_of(h, cin, cout))))
    return levels


def measure_layer(layer: str, images: int, sparsities, rates, formulations, warmup: int, repeats: int,
                  seed: int, log) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jsnn.conv import conv2d
    from jsnn.sparse_inference import kernel as K

    h, cin, cout = LAYERS[layer]
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((3, 3, cin, cout)) * math.sqrt(2.0 / (9 * cin))).astype(np.float32)
    dense_fn = jax.jit(lambda x, k: conv2d(x, k, 1, 1))
    ffi_dense = jax.jit(lambda x, k: K.spike_conv(x, k, 1, 1, "dense"))
    records = []
    for rate in rates:
        x_np = (rng.random((images, h, h, cin)) < rate).astype(np.float32)
        x = jnp.asarray(x_np)
        nnz = int(x_np.sum())
        for label, sparsity in mask_levels(layer, sparsities):
            mask = rng.random(weights.shape) >= sparsity
            kernel_np = weights * mask
            kernel = jnp.asarray(kernel_np)
            t_dense, ts, ref = time_call(dense_fn, (x, kernel), warmup, repeats)
            base = {"layer": layer, "images": images, "h": h, "cin": cin, "cout": cout, "rate": rate,
                    "measured_rate": nnz / x_np.size, "mask": label, "sparsity": sparsity,
                    "measured_sparsity": 1.0 - float(mask.mean())}
            records.append({**base, "formulation": "dense", "median_s": t_dense, "times_s": ts, "rel_diff": 0.0,
                            "speedup": 1.0, "ok": True})
            for name in formulations:
                info = {}
                if name == "channels":
                    f, info = channel_compressed(kernel_np)
                    fn, args = jax.jit(f), (x,)
                elif name == "xla_scatter":
                    f, info = xla_scatter(kernel_np, x_np.shape, nnz)
                    if info["scatter_entries"] > XLA_SCATTER_MAX_ENTRIES:
                        records.append({**base, "formulation": name, **info, "median_s": None, "ok": None,
                                        "skipped": f"more than {XLA_SCATTER_MAX_ENTRIES:.0e} scatter entries"})
                        continue
                    fn, args = jax.jit(f), (x,)
                elif name == "ffi_dense":
                    fn, args = ffi_dense, (x, kernel)
                elif name == "ffi_ell":
                    idx, val = K.ell_rows(kernel_np)
                    info = {"ell_K": int(idx.shape[1]),
                            "ell_fill": float((val != 0).sum() / max(1, val.size))}
                    shape = kernel_np.shape
                    fn = jax.jit(lambda x, i, v, shape=shape: K.spike_conv(x, (shape, i, v), 1, 1, "ell"))
                    args = (x, jnp.asarray(idx), jnp.asarray(val))
                else:
                    raise ValueError(name)
                reps = repeats if name != "xla_scatter" else max(1, min(repeats, 3))
                t, ts, out = time_call(fn, args, 1 if name == "xla_scatter" else warmup, reps)
                d = rel_diff(out, ref)
                records.append({**base, "formulation": name, **info, "median_s": t, "times_s": ts, "rel_diff": d,
                                "speedup": t_dense / t, "ok": d <= TOLERANCE})
            line = "  ".join(f"{r['formulation']} {r['median_s'] * 1e3:.1f}ms" if r.get("median_s") else
                             f"{r['formulation']} skipped" for r in records[-(1 + len(formulations)):])
            log(f"{layer} rate {rate:g} mask {label} ({sparsity:.4f}): {line}")
    return records


# -- reporting -----------------------------------------------------------------------------------


def crossovers(records: list[dict]) -> list[dict]:
    """Per (layer, formulation, rate): the lowest uniform-grid sparsity from which the formulation
    beats dense at that and every higher sparsity measured ("never" / that sparsity)."""
    out = []
    order = list(LAYERS)
    keys = sorted({(r["layer"], r["formulation"], r["rate"]) for r in records if r["formulation"] != "dense"},
                  key=lambda k: (order.index(k[0]), FORMULATIONS.index(k[1]), k[2]))
    for layer, form, rate in keys:
        rows = sorted((r for r in records if (r["layer"], r["formulation"], r["rate"]) == (layer, form, rate)
                       and not r["mask"].startswith("erk") and r.get("median_s")), key=lambda r: r["sparsity"])
        wins = [r.get("speedup", 0) > 1.0 for r in rows]
        cross = None
        for k in range(len(rows)):
            if all(wins[k:]):
                cross = rows[k]["sparsity"]
                break
        best = max(rows, key=lambda r: r["speedup"], default=None)
        out.append({"layer": layer, "formulation": form, "rate": rate, "crossover_sparsity": cross,
                    "best_speedup": best["speedup"] if best else None,
                    "best_at_sparsity": best["sparsity"] if best else None})
    return out


def markdown(meta: dict, records: list[dict], cross: list[dict]) -> str:
    lines = [f"# Sparse formulations vs the dense conv ({meta['date']})", "",
             "Commands (one per layer, merged): " + ", ".join(f"`{c}`" for c in meta.get("runs", [meta["command"]])),
             "",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, {meta['threads']} threads; "
             f"jax {meta['jax']}; noise probe: 1024^3 f32 matmul {meta['noise']['matmul_gflops']:.0f} GFLOP/s "
             f"(cv {meta['noise']['matmul_cv']:.2f}).", "",
             f"{meta['images']} images per call (batch x T folded), conv 3x3 padding 1; median of "
             f"{meta['repeats']} calls after {meta['warmup']} warm-up; every sparse output within "
             f"{TOLERANCE:g} (max |diff| / max |dense|) of the dense conv's: "
             f"**{'yes' if meta['all_ok'] else 'NO'}** (largest {meta['max_rel_diff']:.1e}).", "",
             "Spikes: independent Bernoulli(rate); weights: unstructured random masks (erk@S: the density "
             "ERK gives this layer in a whole-VGG-16 ticket at sparsity S). Real spike maps are spatially "
             "correlated; real masks are not uniform over rows.", "",
             "## Crossover", "",
             "Lowest measured weight sparsity from which the formulation is faster than dense at it and every "
             "higher one (uniform grid), and its best speed-up over dense.", "",
             "| layer | formulation | rate 5 % | rate 10 % | rate 20 % |", "|---|---|---|---|---|"]
    by = {(c["layer"], c["formulation"], c["rate"]): c for c in cross}
    for layer in dict.fromkeys(c["layer"] for c in cross):
        for form in dict.fromkeys(c["formulation"] for c in cross):
            cells = []
            for rate in meta["rates"]:
                c = by.get((layer, form, rate))
                if c is None or c["best_speedup"] is None:
                    cells.append("–")
                    continue
                where = "never" if c["crossover_sparsity"] is None else f"from {100 * c['crossover_sparsity']:g} %"
                cells.append(f"{where} (best {c['best_speedup']:.2f}x at {100 * c['best_at_sparsity']:g} %)")
            lines.append(f"| {layer} | {form} | " + " | ".join(cells) + " |")
    lines += ["", "## Time per call (ms) and speed-up over dense", ""]
    forms = ["dense"] + [f for f in FORMULATIONS if any(r["formulation"] == f for r in records)]
    lines += ["| layer | rate | mask | sparsity | " + " | ".join(forms) + " |",
              "|---|---|---|---|" + "---|" * len(forms)]
    groups = {}
    for r in records:
        groups.setdefault((r["layer"], r["rate"], r["mask"]), {})[r["formulation"]] = r
    for (layer, rate, mask), g in groups.items():
        cells = []
        for f in forms:
            r = g.get(f)
            if r is None:
                cells.append("–")
            elif r.get("median_s") is None:
                cells.append("skipped")
            else:
                s = f"{r['median_s'] * 1e3:.1f}"
                if f != "dense":
                    s += f" ({r['speedup']:.2f}x{'' if r['ok'] else ', DIFFERS'})"
                cells.append(s)
        sp = g["dense"]["sparsity"]
        lines.append(f"| {layer} | {rate:g} | {mask} | {100 * sp:.2f} % | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(records: list[dict], cross: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in records))
    rates = sorted({r["rate"] for r in records})
    forms = [f for f in FORMULATIONS if any(r["formulation"] == f for r in records)]
    colors = dict(zip(FORMULATIONS, ("tab:green", "tab:purple", "tab:blue", "tab:red")))
    styles = dict(zip(rates, (":", "--", "-", "-.")))
    fig, axes = plt.subplots(1, len(layers), figsize=(4.6 * len(layers), 4.2), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        ax.axhline(1.0, color="black", lw=1.2, label="dense (jsnn conv2d)")
        for form in forms:
            for rate in rates:
                rows = sorted((r for r in records if r["layer"] == layer and r["formulation"] == form
                               and r["rate"] == rate and not r["mask"].startswith("erk") and r.get("median_s")),
                              key=lambda r: r["sparsity"])
                if not rows:
                    continue
                xs = [max(1.0 - r["sparsity"], 1e-3) for r in rows]
                ax.plot(xs, [r["speedup"] for r in rows], styles[rate], color=colors[form], marker=".",
                        label=f"{form}, rate {rate:g}")
                c = next(c for c in cross if (c["layer"], c["formulation"], c["rate"]) == (layer, form, rate))
                if c["crossover_sparsity"] is not None:
                    r = next(r for r in rows if r["sparsity"] == c["crossover_sparsity"])
                    ax.plot([max(1.0 - r["sparsity"], 1e-3)], [r["speedup"]], "o", ms=9, mfc="none",
                            color=colors[form])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weight density (1 - sparsity), log")
        ax.set_title(layer)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("speed-up over dense conv (>1: faster)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle("Sparse formulations of a ticket's conv vs dense (circles: crossover)")
    fig.tight_layout(rect=(0, 0.14, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds: early layer at 8 images, 2 sparsities, 1 rate")
    p.add_argument("--layers", default=",".join(LAYERS), help=f"comma list of {list(LAYERS)}")
    p.add_argument("--sparsities", default=",".join(map(str, SPARSITIES)))
    p.add_argument("--rates", default=",".join(map(str, RATES)))
    p.add_argument("--formulations", default=",".join(FORMULATIONS))
    p.add_argument("--images", type=int, default=160, help="batch x T folded (32 x 5)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--out", default=None, help="file stem (default sparse_crossover, quick: sparse_crossover_quick)")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT.md and OUT.png from OUT.json")
    p.add_argument("--merge", action="store_true",
                   help="add these records to an existing OUT.json (replacing the same layers) and redo the report")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    try:
        os.sched_setaffinity(0, set(range(min(args.threads, os.cpu_count() or 1))))
    except (AttributeError, OSError):
        pass
    from jsnn import xla_flags

    xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them, before JAX starts
    import jax

    from benchmarks.throughput import machine_info, noise_probe

    if args.quick:
        layers, sparsities, rates, images, repeats, warmup = ["early_32x32_64"], [0.0, 0.95], [0.1], 8, 3, 1
    else:
        layers = args.layers.split(",")
        sparsities = [float(s) for s in args.sparsities.split(",")]
        rates = [float(r) for r in args.rates.split(",")]
        images, repeats, warmup = args.images, args.repeats, args.warmup
    formulations = args.formulations.split(",")
    out = args.out or ("sparse_crossover_quick" if args.quick else "sparse_crossover")
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        data = json.loads((results / f"{out}.json").read_text())
        cross = crossovers(data["records"])
        data["crossovers"] = cross
        (results / f"{out}.json").write_text(json.dumps(data, indent=1))
        (results / f"{out}.md").write_text(markdown(data["meta"], data["records"], cross))
        chart(data["records"], cross, results / f"{out}.png")
        return 0 if data["meta"]["all_ok"] else 1
    t0 = time.perf_counter()
    records = []
    for layer in layers:
        records += measure_layer(layer, images, sparsities, rates, formulations, warmup, repeats, args.seed,
                                 lambda s: print(s, flush=True))
    meta = {"date": datetime.date.today().isoformat(), "command": "python -m benchmarks.sparse_crossover "
            + " ".join(sys.argv[1:] if argv is None else argv), "machine": machine_info(args.threads),
            "threads": args.threads, "jax": jax.__version__, "images": images, "repeats": repeats,
            "warmup": warmup, "rates": rates, "tolerance": TOLERANCE, "wall_s": time.perf_counter() - t0,
            "noise": noise_probe(args.threads, repeats=10)}
    json_path = results / f"{out}.json"
    if args.merge and json_path.exists():
        old = json.loads(json_path.read_text())
        kept = [r for r in old["records"] if r["layer"] not in layers]
        records = kept + records
        meta["runs"] = old["meta"].get("runs", [old["meta"]["command"]]) + [meta["command"]]
        meta["rates"] = sorted(set(old["meta"]["rates"]) | set(rates))
        records.sort(key=lambda r: list(LAYERS).index(r["layer"]))
    checked = [r for r in records if r["formulation"] != "dense" and r.get("median_s")]
    meta["all_ok"] = all(r["ok"] for r in checked)
    meta["checked"] = len(checked)
    meta["max_rel_diff"] = max((r["rel_diff"] for r in checked), default=0.0)
    cross = crossovers(records)
    json_path.write_text(json.dumps({"meta": meta, "crossovers": cross, "records": records}, indent=1))
    (results / f"{out}.md").write_text(markdown(meta, records, cross))
    chart(records, cross, results / f"{out}.png")
    print(f"wrote {json_path} (.md, .png); {len(checked)} sparse outputs checked, all equal to dense within "
          f"{TOLERANCE:g}: {meta['all_ok']} (largest {meta['max_rel_diff']:.1e})")
    return 0 if meta["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
