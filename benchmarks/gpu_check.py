"""Everything jsnn needs to know from a GPU, in one run of about ten minutes: one results file.

    python benchmarks/gpu_check.py                   # on the GPU host: writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --cpu --out X     # the small CPU mode (CI, tests/test_gpu_readiness.py): seconds

Sections, in this order (each one's outcome is recorded, "ok", "failed: why" or "not run: why"; a
section that fails or runs out of the time budget never stops the ones after it):

  versions     python, jax/jaxlib and the plugins found (jax may be newer than pyproject's pin), torch, peers
  platform     jax.default_backend(), the device kind and count (jsnn/platform.py), and the flag guard:
               does this jaxlib accept jsnn's CPU convolution flag and the deterministic GPU flags
               (XLA aborts the whole process on a flag it does not know), each tried in a subprocess
  determinism  a few train steps run twice and resumed halfway (state through the host), bit for bit,
               under the default flags and under ``--deterministic``'s, each in its own process, with
               the step time (the deterministic mode's cost)
  parity       spikes entering each layer (jsnn's ConvBN / MaskedDense inputs) on the GPU against the CPU at
               f32, the same variables and images, at --precision f32 / tf32 / bf16 and at XLA's default
  sparse       the sparse inference path on the accelerator's backend (the CPU kernel refuses it in one
               line; predict_sparse computes densely there: checked equal to apply_model)
  steps        benchmarks/throughput.py: jsnn at --precision f32, tf32 and bf16 against
               SpikingJelly and snnTorch (on the GPU, synchronised), VGG-16 T=4 and ResNet-19 T=6, CIFAR shapes
  sweeps       benchmarks/lif_unroll.py and benchmarks/top_k.py (the CPU-tuned LIF unroll and top-k)
  presets      one epoch of made-up CIFAR (--epoch-images) with each paper preset's step (dense, IMP,
               edge-popup: TrainConfig(dataset="cifar10").resolve(method)), images per second
  memory       the device allocator's peak, and the host's peak RSS

Nothing here needs more than jsnn's own dependencies (a bare GPU image with ``pip install
"jsnn[cuda12]"``); the peers are run where they are installed and recorded "missing" elsewhere.
The CPU mode runs the same sections at tiny shapes (digits' net and image size) and records the
GPU-only ones as not run, so CI keeps this script working.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform as host_platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RESULTS = os.path.join(ROOT, "benchmarks", "results", "gpu_check.json")
MARK = "@@GPU_CHECK@@"
BUDGET_S = 540.0  # the sections' total, leaving a minute of a 10-minute slot for start-up and slack
PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt", "libtpu",
            "flax", "optax", "numpy", "torch", "snntorch", "spikingjelly", "cupy-cuda12x", "cupy-cuda13x", "triton")


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


# -- the settings of each mode ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scale:
    dataset: str  # the preset family's dataset (made-up images of its shape)
    image_shape: tuple
    classes: int
    batch: int
    timesteps: int
    steps: int  # determinism: train steps per run (an even number: resumed halfway)
    parity_batch: int
    epoch_images: int


GPU = Scale("cifar10", (32, 32, 3), 10, 32, 4, 10, 8, 5120)
CPU = Scale("digits", (8, 8, 1), 10, 16, 2, 4, 4, 32)  # epoch: determinism's 2 batches (its compiled step)


def made_up(scale: Scale, n_train: int, seed: int = 0):
    """Random uint8 images of the dataset's shape and random labels; CIFAR's augmentation for CIFAR."""
    import numpy as np

    from jsnn import data as jdata
    from jsnn.data.datasets import CIFAR_AUGMENT

    rng = np.random.default_rng(seed)
    n_test = scale.batch
    images = rng.integers(0, 256, size=(n_train + n_test,) + scale.image_shape, dtype=np.uint8)
    labels = rng.integers(0, scale.classes, size=n_train + n_test).astype(np.int32)
    mean, std = jdata.channel_stats(images[:n_train])
    augment = CIFAR_AUGMENT if scale.dataset.startswith("cifar") else jdata.AugmentConfig()
    return jdata.ArrayDataset(scale.dataset, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                              scale.classes, mean, std, augment)


def setup(scale: Scale, method_name: str, n_train: int, preset: bool = False):
    """(trainer, rule, state, dataset): the program's Trainer on made-up data. ``preset``: the method's
    paper preset for the dataset (model, batch, T); else the scale's batch and T."""
    import jax

    from jsnn.config import TrainConfig
    from jsnn.models import build_model
    from jsnn.runs.edge_popup import EdgePopupOptions, layer_targets
    from jsnn.sparsity.score_masks import init_scores
    from jsnn.trainer import Trainer
    from jsnn.training_rules import EdgePopup, MaskedTraining
    from jsnn.variables import init_variables, kernels

    fixed = {} if preset else {"batch_size": scale.batch, "timesteps": scale.timesteps}
    config = TrainConfig(dataset=scale.dataset, epochs=1, progress=False, **fixed).resolve(method_name)
    dataset = made_up(scale, max(n_train, config.batch_size))
    model = build_model(config, dataset.num_classes)
    trainer = Trainer(config, model, dataset)
    key_weights, key_scores = jax.random.split(jax.random.key(config.seed))
    variables = init_variables(model, key_weights, (1,) + dataset.image_shape)
    scores = init_scores(key_scores, kernels(variables.weights))
    if method_name == "edge_popup":
        rule = EdgePopup(layer_targets(model, variables.weights, 0.5, EdgePopupOptions()))
    else:
        rule = MaskedTraining()
    return trainer, rule, trainer.new_state(variables, scores, rule, config.seed), dataset


# -- sections -----------------------------------------------------------------------------------------------

def versions(scale: Scale, args) -> dict:
    import tomllib

    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        pins = [d for d in tomllib.load(f)["project"]["dependencies"] if d.startswith(("jax==", "jaxlib=="))]
    pinned = {d.split("==")[0]: d.split("==")[1] for d in pins}
    return {"python": host_platform.python_version(), "packages": found, "pinned": pinned,
            "jax_as_pinned": all(found.get(k) == v for k, v in pinned.items())}


def flag_accepted(flags: str) -> dict:
    """Starts JAX in a subprocess with XLA_FLAGS = ``flags``: accepted, or XLA's one line of refusal."""
    code = "import jax, jax.numpy as jnp; print(float(jnp.ones(3).sum()), jax.default_backend())"
    env = {**os.environ, "XLA_FLAGS": flags, "JSNN_KEEP_XLA_FLAGS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode == 0:
        return {"accepted": True}
    unknown = [line for line in proc.stderr.splitlines() if "Unknown flag" in line]
    return {"accepted": False, "error": (unknown or proc.stderr.strip().splitlines() or ["(no output)"])[-1][-300:]}


def platform_section(scale: Scale, args) -> dict:
    from jsnn import platform, xla_flags

    environ = {}
    out = {**platform.describe(), "cpu_conv_flag_set_by_jsnn": xla_flags.configure(environ),
           "xla_flags_jsnn_sets": environ.get("XLA_FLAGS", ""), "jaxlib": xla_flags.jaxlib_version(),
           "cpu_conv_flag_checked_jaxlib": list(xla_flags.KNOWN_JAXLIB),
           "deterministic_flags_checked_jaxlib": list(platform.DETERMINISTIC_JAXLIB)}
    if args.cpu:  # one subprocess for both: XLA reads every flag at once
        out["flags_together"] = flag_accepted(" ".join([xla_flags.CPU_CONV_FLAG, *platform.DETERMINISTIC_FLAGS]))
    else:
        out["cpu_conv_flag"] = flag_accepted(xla_flags.CPU_CONV_FLAG)
        out["deterministic_flags"] = flag_accepted(" ".join(platform.DETERMINISTIC_FLAGS))
    return out


def tree_digest(tree) -> str:
    import jax
    import numpy as np

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()[:16]


def determinism_run(scale: Scale) -> dict:
    """In this process (its XLA_FLAGS): ``steps`` steps twice from one state, and once resumed halfway."""
    import jax
    import numpy as np

    from jsnn import parallel

    trainer, rule, state, dataset = setup(scale, "imp", 2 * scale.batch)
    train_step = trainer.jitted_steps(rule)[0]
    host = jax.device_get(state)
    batches = [parallel.put_batch(trainer.mesh, dataset.train_images[i * scale.batch:(i + 1) * scale.batch],
                                  dataset.train_labels[i * scale.batch:(i + 1) * scale.batch]) for i in range(2)]

    def steps(s, first, count, times=None):
        for i in range(first, first + count):
            t0 = time.perf_counter()
            s, m = train_step(s, *batches[i % 2], trainer.stop_flags())
            jax.block_until_ready(m)
            if times is not None:
                times.append(time.perf_counter() - t0)
        return s

    times = []
    one = tree_digest(steps(parallel.put_replicated(trainer.mesh, host), 0, scale.steps, times))
    two = tree_digest(steps(parallel.put_replicated(trainer.mesh, host), 0, scale.steps))
    half = jax.device_get(steps(parallel.put_replicated(trainer.mesh, host), 0, scale.steps // 2))
    resumed = tree_digest(steps(parallel.put_replicated(trainer.mesh, half), scale.steps // 2, scale.steps // 2))
    return {"rerun_identical": one == two, "resume_identical": one == resumed, "steps": scale.steps,
            "median_step_s": float(np.median(times[1:])) if len(times) > 1 else None,
            "backend": jax.default_backend()}


def child(name: str, scale: Scale, extra_flags: tuple[str, ...], timeout: float) -> dict:
    """Runs ``--child name`` in a subprocess with ``extra_flags`` added to XLA_FLAGS; its record."""
    from jsnn import xla_flags

    env = dict(os.environ)
    xla_flags.configure(env)
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *extra_flags]).strip()
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name] + (["--cpu"] if scale is CPU else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['(no output)'])[-1]}")
    return json.loads(lines[-1][len(MARK):])


def determinism(scale: Scale, args) -> dict:
    from jsnn import platform

    if args.cpu:  # in this process: CPU kernels are deterministic with or without the GPU flags
        return {"default": determinism_run(scale),
                "deterministic": "not run in --cpu mode: the flags change only GPU kernels (platform: accepted)"}
    out = {"default": child("determinism", scale, (), args.section_timeout),
           "deterministic": child("determinism", scale, platform.DETERMINISTIC_FLAGS, args.section_timeout)}
    a, b = out["default"].get("median_step_s"), out["deterministic"].get("median_step_s")
    out["deterministic_step_time_ratio"] = b / a if a and b else None
    return out


def spikes_by_layer(model, variables, images):
    """(logits, {layer: its input}) of the evaluation-mode forward pass: the spikes each spiking layer
    receives (every ConvBN but the encoder, and the linear layers)."""
    import flax.linen as nn

    from jsnn.layers import ConvBN, MaskedDense
    from jsnn.variables import apply_model

    seen = {}

    def intercept(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name == "__call__" and (isinstance(m, MaskedDense)
                                                  or (isinstance(m, ConvBN) and m.input_is_spikes)):
            seen["/".join(m.scope.path)] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
        logits = apply_model(model, variables, images, train=False)[0]
    return logits, seen


def parity(scale: Scale, args) -> dict:
    """Spikes entering each layer on the accelerator against the CPU at f32, for each ``--precision`` and for
    XLA's own default (TF32 on an NVIDIA GPU: what an f32 run computed before jsnn set a precision)."""
    import jax
    import numpy as np

    from jsnn.models import build_model
    from jsnn.objective import preprocess

    trainer, rule, state, dataset = setup(scale, "imp", scale.parity_batch)
    variables = jax.device_get(state.forward_variables(rule))
    images = np.asarray(preprocess(dataset.train_images[:scale.parity_batch], dataset.mean, dataset.std))

    def forward(precision: str):
        model = build_model(dataclasses.replace(trainer.config, precision=precision), dataset.num_classes)
        return jax.jit(lambda v, x: spikes_by_layer(model, v, x))

    cpu = jax.devices("cpu")[0]
    ref_logits, ref = jax.device_get(forward("f32")(jax.device_put(variables, cpu), jax.device_put(images, cpu)))
    accelerator = jax.devices()[0]
    out = {"against": "the CPU at --precision f32", "device": accelerator.device_kind,
           "batch": scale.parity_batch, "timesteps": trainer.config.timesteps, "model": trainer.config.model}
    if accelerator.platform == "cpu" and not args.cpu:
        return {**out, "status": "not run: no accelerator (JAX runs on cpu)"}
    rows = {"f32": ("f32", None)} if args.cpu else {
        "f32": ("f32", None), "tf32": ("tf32", None), "bf16": ("bf16", None), "xla_default": ("f32", "default")}
    for row, (precision, jax_default) in rows.items():
        with jax.default_matmul_precision(jax_default) if jax_default else contextlib.nullcontext():
            logits, got = jax.device_get(forward(precision)(jax.device_put(variables, accelerator),
                                                            jax.device_put(images, accelerator)))
        out[row] = {
            "flips_per_layer": {k: int(np.sum(np.asarray(got[k]) != np.asarray(ref[k]))) for k in ref},
            "inputs_per_layer": {k: int(np.asarray(ref[k]).size) for k in ref},
            "max_logit_difference": float(np.max(np.abs(np.asarray(logits) - np.asarray(ref_logits)))),
            "predictions_differ": int(np.sum(np.argmax(np.asarray(logits).mean(0), -1)
                                             != np.argmax(np.asarray(ref_logits).mean(0), -1)))}
    return out


def sparse(scale: Scale, args) -> dict:
    import jax
    import numpy as np

    from jsnn.sparse_inference import kernel, predict_sparse
    from jsnn.variables import apply_model

    backend = kernel.backend()
    if args.cpu:
        return {"status": "not run in --cpu mode: tests/test_sparse_inference.py (the CPU kernel) and "
                          "tests/test_gpu_readiness.py (a GPU backend, faked) check it"}
    trainer, rule, state, dataset = setup(scale, "imp", scale.parity_batch)
    variables = jax.device_get(state.forward_variables(rule))
    images = dataset.train_images[:scale.parity_batch].astype(np.float32) / 255.0
    out = {"backend": backend}
    try:
        kernel.spike_conv(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 2, 4), np.float32), 1, 1)
        out["spike_conv"] = "ran"
    except kernel.NotOnCPU as e:
        out["spike_conv"] = f"refused in one line: {e}"
    logits = predict_sparse(trainer.model, variables, images)
    ref = apply_model(trainer.model, variables, images, train=False)[0]
    out["max_difference_to_dense"] = float(np.max(np.abs(np.asarray(logits) - np.asarray(ref))))
    return out


def run_benchmark(module: str, argv: list[str], timeout: float, env_extra: dict | None = None) -> dict:
    """``python -m module argv --out TMP``; the JSON it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        if module == "benchmarks.throughput":
            argv = [*argv, "--results-dir", tmp, "--out", "run"]
            path = os.path.join(tmp, "run.json")
        else:
            argv = [*argv, "--out", os.path.join(tmp, "run")]
            path = os.path.join(tmp, "run.json")
        env = {**os.environ, **(env_extra or {})}
        env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(path):
            raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['(none)'])[-1]}")
        with open(path) as f:
            return json.load(f)


# jsnn's --precision for each row of the step benchmark (jsnn/precision.py; docs/speed.md "Precision")
STEP_PRECISIONS = ("f32", "tf32", "bf16")
STEP_CASES = (("vgg16", 4), ("resnet19", 6))


def steps(scale: Scale, args) -> dict:
    if args.cpu:
        return {"status": "not run in --cpu mode: tests/test_benchmarks_smoke.py runs benchmarks/throughput.py --quick"}
    out, start = {}, time.perf_counter()
    share = 0.45 * args.budget  # of the whole budget: the sweeps, presets and memory still to come
    for workload, t in STEP_CASES:
        if time.perf_counter() - start > share:
            out[f"{workload} T={t}"] = {"status": f"not run: the step benchmark's share ({share:.0f} s) was spent"}
            continue
        common = ["--workloads", workload, "--timesteps", str(t), "--batch", str(args.step_batch), "--modes", "train",
                  "--steps", "5", "--warmup", "1", "--threads", str(os.cpu_count() or 1)]
        for name in STEP_PRECISIONS:
            try:
                r = run_benchmark("benchmarks.throughput", [*common, "--impls", "jsnn", "--precision", name],
                                  args.section_timeout)
                out[f"{workload} T={t} jsnn {name}"] = _step_record(r)
            except Exception as e:  # noqa: BLE001 - recorded, the next row still runs
                out[f"{workload} T={t} jsnn {name}"] = {"status": f"failed: {one_line(e)}"}
        try:
            r = run_benchmark("benchmarks.throughput", [*common, "--impls", "spikingjelly,snntorch"],
                              args.section_timeout)
            for record in r["records"]:
                out[f"{workload} T={t} {record['impl']}"] = _step_record({"records": [record]})
        except Exception as e:  # noqa: BLE001
            out[f"{workload} T={t} peers"] = {"status": f"failed: {one_line(e)}"}
    return out


def _step_record(result: dict) -> dict:
    r = result["records"][0]
    keep = ("status", "error", "precision", "images_per_s", "median_step_s", "first_step_s", "device_kind",
            "device_peak_mb", "peak_rss_delta_mb", "neuron_kernel", "tf32", "backend", "batch", "timesteps")
    return {k: r[k] for k in keep if k in r}


def sweeps(scale: Scale, args) -> dict:
    if args.cpu:
        return {"status": "not run in --cpu mode: benchmarks/results/lif_unroll.md and top_k.md hold the CPU sweeps"}
    return {"lif_unroll": run_benchmark("benchmarks.lif_unroll", ["--repeats", "5"], args.section_timeout),
            "top_k": run_benchmark("benchmarks.top_k", ["--repeats", "5"], args.section_timeout)}


def presets(scale: Scale, args) -> dict:
    import jax

    out = {}
    for method_name in ("imp",) if args.cpu else ("dense", "imp", "edge_popup"):
        n = scale.epoch_images  # --cpu: IMP's step at the scale's batch and T (compiled once, for determinism)
        trainer, rule, state, dataset = setup(scale, method_name, n, preset=not args.cpu)
        t0 = time.perf_counter()
        state = trainer.train_epochs(state, rule, 0, data_seed=0)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - t0
        c = trainer.config
        out[method_name] = {"model": c.model, "batch": c.batch_size, "timesteps": c.timesteps,
                            "images": trainer.steps_per_epoch * c.batch_size, "seconds_with_compile": seconds,
                            "images_per_s_with_compile": trainer.steps_per_epoch * c.batch_size / seconds}
    out["not_run"] = "sparse_training and energy presets (their own steps; the programs need real data)" + (
        "; dense and edge-popup, and the presets' batch and T, in --cpu mode" if args.cpu else "")
    return out


def memory(scale: Scale, args) -> dict:
    import resource

    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return {"device_peak_mb": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None,
            "device_limit_mb": stats["bytes_limit"] / 2**20 if "bytes_limit" in stats else None,
            "host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


SECTIONS = (("versions", versions), ("platform", platform_section), ("determinism", determinism),
            ("parity", parity), ("sparse", sparse), ("steps", steps), ("sweeps", sweeps), ("presets", presets),
            ("memory", memory))


def run_sections(args) -> dict:
    scale = CPU if args.cpu else GPU
    if not args.cpu:
        scale = dataclasses.replace(scale, epoch_images=args.epoch_images)
    start = time.perf_counter()
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": "cpu" if args.cpu else "full",
           "machine": {"cpu": host_platform.processor() or host_platform.machine(), "cores": os.cpu_count(),
                       "loadavg": os.getloadavg()},
           "scale": dataclasses.asdict(scale), "budget_s": args.budget, "sections": {}, "not_run": []}
    for name, fn in SECTIONS:
        elapsed = time.perf_counter() - start
        if args.sections and name not in args.sections:
            record = {"status": "not run: not in --sections"}
        elif elapsed > args.budget and name != "memory":
            record = {"status": f"not run: the time budget ({args.budget:.0f} s) was spent"}
        else:
            t0 = time.perf_counter()
            try:
                record = fn(scale, args)
                record = record if isinstance(record, dict) else {"result": record}
                record.setdefault("status", "ok")
            except Exception as e:  # noqa: BLE001 - recorded; the next section runs
                record = {"status": f"failed: {one_line(e)}"}
            record["seconds"] = time.perf_counter() - t0
        out["sections"][name] = record
        if record["status"] != "ok":
            out["not_run"].append(f"{name}: {record['status']}")
        print(f"{name:12s} {record['status']} ({record.get('seconds', 0):.1f} s)", flush=True)
    out["seconds"] = time.perf_counter() - start
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="the small CPU mode (tiny shapes, seconds; GPU-only parts "
                                                      "recorded as not run)")
    p.add_argument("--out", default=RESULTS, help="the results file (default benchmarks/results/gpu_check.json)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all sections; later ones are "
                                                                  "recorded as not run once it is spent")
    p.add_argument("--section-timeout", type=float, default=240, help="seconds per subprocess")
    p.add_argument("--step-batch", type=int, default=64, help="batch of the step benchmark")
    p.add_argument("--epoch-images", type=int, default=GPU.epoch_images, help="made-up CIFAR images per epoch")
    p.add_argument("--sections", type=lambda v: v.split(","), default=None,
                   help=f"a comma list of {', '.join(n for n, _ in SECTIONS)} (default: all, in this order)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.sections or ()) - {n for n, _ in SECTIONS}
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(n for n, _ in SECTIONS)}")
    if args.child:
        from jsnn.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
        print(MARK + json.dumps(determinism_run(CPU if args.cpu else GPU)), flush=True)
        return 0
    from jsnn.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # as the programs: a resumed run loads the programs (and autotuning) it compiled
    result = run_sections(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"wrote {args.out} ({result['seconds']:.0f} s; {len(result['not_run'])} parts not run or failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
