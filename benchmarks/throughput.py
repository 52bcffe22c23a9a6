"""Training-step and inference throughput: jsnn, its dense bound, and the SNN libraries people use.

    python -m benchmarks.throughput                       # workload (a): vgg_small, B 32, T 5, all impls
    python -m benchmarks.throughput --quick               # seconds: tiny batch, jsnn + dense + whatever peers exist
    python -m benchmarks.throughput --workloads vgg16,resnet19 --steps 3 --out cifar_b
    python -m benchmarks.throughput --timesteps 1,2,4,8,16,32 --impls jsnn,dense,torch --out scaling_t

Every (implementation, workload, batch, T, mode) runs in its own subprocess, pinned to
the same cores with the same thread count, so peak memory (ru_maxrss minus the RSS
after imports) never mixes. Train step = forward + mean-over-t cross-entropy + backward
+ SGD(0.1, momentum 0.9) update; inference = forward + argmax of the mean logits. The
first step is timed alone (compile / first-run cost); then ``--warmup`` untimed steps;
then the median of ``--steps`` steps. A peer that is not installed is reported
"missing", one that raises "failed" — never dropped. On a GPU host every implementation computes on
the GPU (JAX's default backend; the torch peers move to CUDA and synchronise before the clock stops;
SpikingJelly runs its CUDA kernels, peers/spikingjelly_impl.py); ``--device cpu`` keeps them on the CPU.
Writes results/<out>.json, results/<out>.md and results/<out>.png (``--out latest`` by default).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common
from jsnn.xla_flags import CPU_CONV_FLAG

# name -> (module, description). "jsnn" is the training programs' own jitted steps
# (benchmarks/trainer_impl.py: Trainer.jitted_steps with the host batch, augmentation, masks,
# weight decay and metrics); "jsnn_edge_popup" the same for edge-popup's scores; "jsnn_bare" the
# network alone in a hand-written step (benchmarks/jsnn_impl.py), as the peers run it.
# "jsnn_xla_conv" is jsnn with XLA's convolution everywhere (JSNN_CONV_IMPL=xla); "jsnn_ynn" is
# jsnn without the XLA flag jsnn's programs set (YNNPACK's CPU convolutions, jsnn/xla_flags.py);
# "jsnn_scan" / "jsnn_bare_scan" are "jsnn" / "jsnn_bare" with every LIF layer a lax.scan
# (JSNN_LIF_IMPL=scan), where "auto" runs long-T layers through the C++ kernel (jsnn/lif_kernel.py).
# "dense" is the dense bound (the bare step's network with ReLU for LIF, in JAX).
IMPLS = {
    "jsnn": ("benchmarks.trainer_impl", "jsnn: the programs' train and eval steps (Trainer.jitted_steps, IMP/dense)"),
    "jsnn_edge_popup": ("benchmarks.trainer_impl", "jsnn: the edge-popup program's steps (scores, top-k masks)"),
    "jsnn_bare": ("benchmarks.jsnn_impl", "jsnn's network in a hand-written step (no augmentation, masks or metrics)"),
    "jsnn_xla_conv": ("benchmarks.trainer_impl", "jsnn (programs' steps) with XLA's convolution everywhere"),
    "jsnn_ynn": ("benchmarks.trainer_impl",
                 "jsnn (programs' steps) with YNNPACK's CPU convolutions (JSNN_KEEP_XLA_FLAGS=1)"),
    "jsnn_scan": ("benchmarks.trainer_impl", "jsnn (programs' steps) with every LIF layer a lax.scan"),
    "jsnn_bare_scan": ("benchmarks.jsnn_impl", "jsnn's hand-written step with every LIF layer a lax.scan"),
    "dense": ("benchmarks.jsnn_impl", "dense bound: ReLU ANN on T*B images, JAX (hand-written step)"),
    "torch": ("benchmarks.peers.torch_plain", "plain PyTorch loop"),
    "spikingjelly": ("benchmarks.peers.spikingjelly_impl", "SpikingJelly LIFNode, multi-step"),
    "snntorch": ("benchmarks.peers.snntorch_impl", "snnTorch Leaky"),
    "spyx": ("benchmarks.peers.spyx_impl", "spyx (flax nnx)"),
    "spyx_eigen": ("benchmarks.peers.spyx_impl", "spyx with jsnn's XLA flag (Eigen convolutions)"),
}
PEERS = ("torch", "spikingjelly", "snntorch", "spyx", "spyx_eigen")
# jsnn's XLA flag (importing jsnn.xla_flags leaves this process's XLA_FLAGS, and so the children's, alone)
JSNN_CPU_CONV_FLAG = CPU_CONV_FLAG
RESULTS = Path(__file__).parent / "results"
MARK = "@@RESULT@@"


def child_env(threads: int, impl: str, device: str = "auto") -> dict:
    env = dict(os.environ)
    # Threads: the affinity mask set in run_child (XLA sizes its pool from it) and the BLAS
    # variables below. Every XLA_FLAGS token must be a --flag: XLA stops reading at one that is not.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true").strip()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if impl == "jsnn_xla_conv":
        env["JSNN_CONV_IMPL"] = "xla"
    if impl in ("jsnn_scan", "jsnn_bare_scan"):
        env["JSNN_LIF_IMPL"] = "scan"
    if impl == "jsnn_ynn":  # jaxlib's defaults, even where this shell exported jsnn's flag
        env["JSNN_KEEP_XLA_FLAGS"] = "1"
        env["XLA_FLAGS"] = " ".join(t for t in env["XLA_FLAGS"].split() if "ynn_fusion_type" not in t)
    if impl == "spyx_eigen":  # the same XLA configuration as jsnn's, to separate flag from library
        env["XLA_FLAGS"] = f"{JSNN_CPU_CONV_FLAG} {env['XLA_FLAGS']}"
    if device == "cpu":  # "auto": JAX's default backend, the GPU where its plugin finds one
        env["JAX_PLATFORMS"] = "cpu"
    return env


def run_child(case: common.Case) -> dict:
    """Inside the subprocess: import, measure, return the record."""
    try:
        os.sched_setaffinity(0, set(range(min(case.threads, os.cpu_count() or 1))))
    except (AttributeError, OSError):
        pass
    module_name = IMPLS[case.impl][0]
    import importlib

    try:
        module = importlib.import_module(module_name)
        if module_name.startswith("benchmarks.") and "peers" not in module_name:  # jsnn and the dense bound
            import jax

            from jsnn import conv, neuron

            info = {"conv_impl": conv.default_impl(), "lif_impl": neuron.lif_impl(), "jax": jax.__version__,
                    "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}
        else:
            info = {"library": module.LIBRARY, "version": _version(module.LIBRARY)}
    except ImportError as e:
        return {"status": "missing", "error": f"{type(e).__name__}: {e}"}
    base = common.rss_bytes()
    try:
        if module_name == "benchmarks.trainer_impl":  # the programs' steps
            record = module.run(case, "edge_popup" if case.impl == "jsnn_edge_popup" else "masked")
        elif module_name == "benchmarks.jsnn_impl":  # the bare step and the dense bound
            record = module.run(case, dense=case.impl == "dense")
        else:
            record = module.run(case)
    except NotImplementedError as e:
        return {"status": "not implemented", "error": str(e), **info}
    record.update(info)
    record["status"] = "ok"
    record.setdefault("device_peak_mb", _jax_device_peak_mb(module_name))
    record["rss_after_import_mb"] = base / 2**20
    peak = max(common.peak_rss_bytes(), record.pop("first_step_peak_rss_bytes", 0))
    record["peak_rss_mb"] = peak / 2**20
    record["peak_rss_delta_mb"] = (peak - base) / 2**20
    steady = record.pop("steady_peak_rss_bytes", None)
    record["steady_peak_rss_delta_mb"] = None if steady is None else (steady - base) / 2**20
    return record


def _jax_device_peak_mb(module_name: str) -> float | None:
    """JAX's peak device memory on an accelerator (its allocator's statistics); None on the CPU (RSS above)."""
    if "peers" in module_name and module_name != "benchmarks.peers.spyx_impl":
        return None
    import jax

    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def run_case(case: common.Case, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--child", json.dumps(dataclasses.asdict(case))]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=child_env(case.threads, case.impl, case.device), capture_output=True, text=True,
                              timeout=timeout, cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        record = {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    else:
        lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
        if proc.returncode == 0 and lines:
            record = json.loads(lines[-1][len(MARK):])
        else:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            record = {"status": "failed", "error": f"exit {proc.returncode}: {tail}"}
    record.update(dataclasses.asdict(case))
    record["wall_s"] = time.perf_counter() - t0
    record["loadavg_before"] = load_before
    record["loadavg_after"] = os.getloadavg()
    return record


def noise_probe(threads: int, repeats: int = 20) -> dict:
    """Times one fixed 1024^3 float32 matmul ``repeats`` times: the machine's own jitter."""
    import numpy as np

    code = ("import time,numpy as np;a=np.random.rand(1024,1024).astype('f');a@a;ts=[]\n"
            f"for _ in range({repeats}):\n t=time.perf_counter();a@a;ts.append(time.perf_counter()-t)\n"
            "print(' '.join(map(str,ts)))")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(threads, "probe"), capture_output=True, text=True)
    ts = np.array([float(v) for v in out.stdout.split()]) if out.returncode == 0 else np.array([np.nan])
    med = float(np.median(ts))
    return {"matmul_1024_median_s": med, "matmul_gflops": 2 * 1024**3 / med / 1e9,
            "matmul_cv": float(np.std(ts) / np.mean(ts)), "matmul_max_over_min": float(ts.max() / ts.min()),
            "loadavg": os.getloadavg()}


def machine_info(threads: int) -> dict:
    return {"cpu": common.cpu_name(), "cores": os.cpu_count(), "threads_used": threads,
            "python": platform.python_version(), "platform": platform.platform()}


# ---------------------------------------------------------------------------- reporting


def _fmt(v, spec="{:.1f}"):
    return "—" if v is None else spec.format(v)


def summarize(records: list[dict]) -> list[dict]:
    """One row per (workload, batch, T, impl) with train and infer side by side."""
    rows = {}
    for r in records:
        key = (r["workload"], r["batch"], r["timesteps"], r["impl"])
        row = rows.setdefault(key, {"workload": key[0], "batch": key[1], "timesteps": key[2], "impl": key[3]})
        row[r["mode"]] = r
    return list(rows.values())


def _peaks(record: dict) -> str:
    return (f"{_fmt(record.get('peak_rss_delta_mb'), '{:.0f}')} / "
            f"{_fmt(record.get('steady_peak_rss_delta_mb'), '{:.0f}')}")


def markdown(meta: dict, records: list[dict]) -> str:
    m = meta["machine"]
    n = meta["noise"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads_used']} threads per implementation (pinned), "
        f"{meta['date']}. Noise: a 1024³ matmul ran at {n['matmul_gflops']:.0f} GFLOP/s with CV "
        f"{n['matmul_cv']:.1%} (max/min {n['matmul_max_over_min']:.2f}), load average {n['loadavg'][0]:.2f} at start.",
        f"Median of {meta['steps']} steps after the first (compile) step and {meta['warmup']} warm-up steps. "
        "Peak memory: peak RSS of the implementation's own subprocess minus its RSS after imports; "
        "\"all\" over the whole run, first step (JIT compilation) included, \"steps\" over the steps after the first.",
        *devices(records),
        "",
        "| workload | B | T | implementation | train img/s | infer img/s | train step s (IQR) | "
        "train peak MB all / steps | infer peak MB all / steps | compile/first step s (train) | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ok(r):
        return r.get("status") == "ok"

    for row in summarize(records):
        tr, inf = row.get("train", {}), row.get("infer", {})
        status = "; ".join(sorted({f"{mode}: {r['status']} ({r.get('error', '')})"
                                   for mode, r in (("train", tr), ("infer", inf)) if r and not ok(r)})) or "ok"
        lines.append(
            f"| {row['workload']} | {row['batch']} | {row['timesteps']} | {row['impl']} | "
            f"{_fmt(tr.get('images_per_s') if ok(tr) else None)} | "
            f"{_fmt(inf.get('images_per_s') if ok(inf) else None)} | "
            f"{_fmt(tr.get('median_step_s') if ok(tr) else None, '{:.3f}')}"
            f"{' (' + _fmt(tr.get('iqr_step_s'), '{:.3f}') + ')' if ok(tr) else ''} | "
            f"{_peaks(tr) if ok(tr) else _fmt(None)} | {_peaks(inf) if ok(inf) else _fmt(None)} | "
            f"{_fmt(tr.get('first_step_s') if ok(tr) else None)} | {status} |"
        )
    lines += ["", *ratios(records)]
    return "\n".join(lines) + "\n"


def devices(records: list[dict]) -> list[str]:
    """A line naming the accelerators the implementations ran on, where any ran off the CPU; none otherwise."""
    used = sorted({f"{r['impl']}: {r['device_kind']}" for r in records if r.get("device_kind") not in (None, "cpu")})
    return [f"Devices: {'; '.join(used)}; device memory peaks in the JSON (device_peak_mb)."] if used else []


def ratios(records: list[dict]) -> list[str]:
    """jsnn against the fastest peer and against its dense bound, per (workload, B, T)."""
    out = []
    by = {}
    for r in records:
        if r.get("status") == "ok":
            by.setdefault((r["workload"], r["batch"], r["timesteps"], r["mode"]), {})[r["impl"]] = r["images_per_s"]
    for (w, b, t, mode), v in sorted(by.items()):
        if "jsnn" not in v:
            continue
        parts = []
        peers = {k: x for k, x in v.items() if k in PEERS}
        if peers:
            best = max(peers, key=peers.get)
            parts.append(f"jsnn / fastest peer ({best}) = {v['jsnn'] / peers[best]:.2f}x")
        if "jsnn_bare" in v:
            parts.append(f"programs' step / bare step = {v['jsnn_bare'] / v['jsnn']:.2f}")
        if "dense" in v:
            parts.append(f"SNN step / dense-bound step = {v['dense'] / v['jsnn']:.2f}")
            if "jsnn_bare" in v:
                parts.append(f"bare SNN step / dense-bound step = {v['dense'] / v['jsnn_bare']:.2f}")
        if "jsnn_xla_conv" in v:
            parts.append(f"tuned conv2d / XLA's conv = {v['jsnn'] / v['jsnn_xla_conv']:.2f}x")
        if "jsnn_ynn" in v:
            parts.append(f"Eigen / YNNPACK convolutions = {v['jsnn'] / v['jsnn_ynn']:.2f}x")
        if parts:
            out.append(f"- {w} B={b} T={t} {mode}: " + "; ".join(parts))
    return out


def chart(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok"]
    configs = sorted({(r["workload"], r["batch"], r["timesteps"]) for r in ok})
    impls = [i for i in IMPLS if any(r["impl"] == i for r in ok)]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(configs) * len(impls) / 2), 4.5))
    for ax, mode in zip(axes, ("train", "infer")):
        width = 0.8 / max(len(impls), 1)
        for i, impl in enumerate(impls):
            vals = [next((r["images_per_s"] for r in ok if r["impl"] == impl and r["mode"] == mode
                          and (r["workload"], r["batch"], r["timesteps"]) == c), 0.0) for c in configs]
            ax.bar([j + i * width for j in range(len(configs))], vals, width, label=impl)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(configs))])
        ax.set_xticklabels([f"{w}\nB={b} T={t}" for w, b, t in configs], fontsize=7)
        ax.set_ylabel("images / s")
        ax.set_title(f"{mode} (higher is better)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI


def _ints(s):
    return [int(v) for v in s.split(",")]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="tiny run (B 2, T 2, 2 steps) for smoke tests")
    p.add_argument("--workloads", default="vgg_small", help=f"comma list of {sorted(common.WORKLOADS)}")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma list of {list(IMPLS)}")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--batch", type=_ints, default=[32], help="comma list")
    p.add_argument("--timesteps", type=_ints, default=[5], help="comma list")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    p.add_argument("--threads", type=int, default=2, help="threads (and cores pinned) per implementation")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto",
                   help="auto: every implementation on the GPU where one is found (JAX's backend, torch.cuda), else "
                        "the CPU; cpu: the CPU even on a GPU host")
    p.add_argument("--precision", choices=("f32", "tf32", "bf16"), default="f32",
                   help="jsnn's --precision for the programs' steps (jsnn, jsnn_edge_popup, ...; docs/speed.md)")
    p.add_argument("--out", default="latest", help="results/<out>.{json,md,png}")
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.timesteps, args.steps, args.warmup = [2], [2], 2, 0
        if args.out == "latest":
            args.out = "quick"
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        case = common.Case(**json.loads(args.child))
        print(MARK + json.dumps(run_child(case)), flush=True)
        return 0
    impls = args.impls.split(",")
    for name in impls:
        if name not in IMPLS:
            raise SystemExit(f"unknown implementation {name!r}; choose from {list(IMPLS)}")
    for w in args.workloads.split(","):
        if w not in common.WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {sorted(common.WORKLOADS)}")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(args.threads),
            "noise": noise_probe(args.threads), "steps": args.steps, "warmup": args.warmup,
            "argv": sys.argv[1:], "implementations": {k: IMPLS[k][1] for k in impls}}
    records = []
    for w, b, t, impl, mode in itertools.product(args.workloads.split(","), args.batch, args.timesteps, impls,
                                                 args.modes.split(",")):
        case = common.Case(impl, w, mode, b, t, args.steps, args.warmup, args.threads, args.device, args.precision)
        r = run_case(case, args.timeout)
        records.append(r)
        if r["status"] == "ok":
            desc = (f"{r['images_per_s']:8.2f} img/s  step {r['median_step_s']:.3f}s  first {r['first_step_s']:.1f}s  "
                    f"peak {r['peak_rss_delta_mb']:.0f}MB "
                    f"(steps {r['steady_peak_rss_delta_mb'] or float('nan'):.0f}MB)")
        else:
            desc = f"{r['status']}: {r.get('error')}"
        print(f"{w:10s} B={b:<3d} T={t:<2d} {impl:14s} {mode:5s} {desc}", flush=True)
    meta["noise_after"] = noise_probe(args.threads)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    (out / f"{args.out}.md").write_text(markdown(meta, records))
    chart(records, out / f"{args.out}.png")
    print((out / f"{args.out}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
