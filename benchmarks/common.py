"""What every implementation shares: the workloads, the synthetic batch, timing and memory.

All implementations compute the same network (LIF, hard reset, conv -> BN -> LIF with the rectangle
surrogate): conv (no bias) -> BatchNorm over T*B -> LIF (decay 0.25, V_th 1,
hard reset to 0, detached reset, rectangle surrogate of width 1); direct
encoding (the first conv + BN sees the image once, repeated over T);
loss = mean over t of cross-entropy; SGD lr 0.1 momentum 0.9.
"""
from __future__ import annotations

import dataclasses
import math
import os
import resource
import subprocess
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DECAY, V_TH, V_RESET, RECT_WIDTH = 0.25, 1.0, 0.0, 1.0
LR, MOMENTUM = 0.1, 0.9

# workload name -> jsnn model name; the VGG plans are jsnn's own (jsnn/models/vgg.py)
WORKLOADS = {"vgg_small": "vgg_small", "vgg16": "vgg16", "resnet19": "resnet19"}
NUM_CLASSES = 100
IMAGE_SHAPE = (32, 32, 3)  # CIFAR, HWC


def vgg_plan(workload: str):
    from jsnn.models.vgg import VGG16_PLAN, VGG_SMALL_PLAN  # here: a peer's process does not import JAX

    return {"vgg_small": VGG_SMALL_PLAN, "vgg16": VGG16_PLAN}[workload]


# Res-SNN-19 (Kim et al.'s: stem, stages [3, 3, 2]), for the peers' own implementations: jsnn's SpikingResNet defaults
# (tests/test_benchmarks_smoke.py checks they agree; written out so that a peer's process,
# whose memory is measured, does not import JAX)
RESNET19 = dict(stem=64, stages=(128, 256, 512), blocks=(3, 3, 2), hidden=256)


@dataclasses.dataclass(frozen=True)
class Case:
    impl: str
    workload: str = "vgg_small"
    mode: str = "train"  # "train" or "infer"
    batch: int = 32
    timesteps: int = 5
    steps: int = 10
    warmup: int = 2  # untimed steps after the first (compile) step
    threads: int = 2
    device: str = "auto"  # "auto": a GPU where one is found (JAX's default backend; torch.cuda), "cpu": the CPU
    precision: str = "f32"  # jsnn's --precision for the programs' steps (jsnn/precision.py); the peers compute in f32


def make_batch(batch: int, seed: int = 0):
    """Images NHWC float32 in [0, 1) and integer labels, the same for every implementation."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch,) + IMAGE_SHAPE, dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=(batch,)).astype(np.int32)
    return images, labels


def train_flops(workload: str, batch: int, timesteps: int) -> float:
    """Multiply-adds x 2 of the convs/linears, fwd + bwd (= 3x fwd), the encoding conv once per
    image: read from the model's layer description."""
    from jsnn.models import get_model  # here: a peer's process does not import JAX

    model = get_model(WORKLOADS[workload], NUM_CLASSES, timesteps=timesteps)
    flops = 0.0
    for layer in model.layers(IMAGE_SHAPE):
        if layer.kind in ("conv", "linear"):
            macs = math.prod(layer.out_shape[:-1]) * math.prod(layer.kernel_shape)
            flops += 2.0 * macs * (batch if layer.encoding else batch * timesteps)
    return 3.0 * flops


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def reset_peak_rss() -> bool:
    """Restarts the kernel's peak-RSS count (VmHWM) from the current RSS (Linux: clear_refs 5),
    after handing freed heap back to the OS (glibc malloc_trim), so that memory the first
    step freed no longer counts as resident."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def steady_peak_rss_bytes() -> int | None:
    """VmHWM: the peak RSS since the last ``reset_peak_rss`` (None where /proc has no such line)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def median_call_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one untimed call (compilation),
    each waited for (``block_until_ready``)."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def git_commit() -> str:
    """The repository's HEAD, short ("unknown" outside a git checkout): the code a results file was measured on."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def cpu_name() -> str:
    """The processor's name: /proc/cpuinfo's model name (Linux, where platform.processor() says only "x86_64"),
    else what platform says."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def shared_machine(how_to_read: str) -> str:
    """The machine a benchmark ran on, as its results record it: CPU, cores, and how to read timings taken while
    other jobs shared it."""
    return f"{cpu_name()}, {os.cpu_count()} cores, shared with other jobs ({how_to_read})"


def write_results(path: str | None, record: dict, markdown_lines: list[str]) -> None:
    """``path``.json (``record``) and ``path``.md (the lines), and the markdown printed (only printed when
    ``path`` is None or empty: the benchmarks' ``--out ''``)."""
    import json

    if not path:
        print("\n".join(markdown_lines))
        return

    with open(path + ".json", "w") as f:
        json.dump(record, f, indent=1)
    with open(path + ".md", "w") as f:
        f.write("\n".join(markdown_lines) + "\n")
    print("\n".join(markdown_lines))


def as_loaded_ticket() -> None:
    """Inference runs on variables as a program that loads a ticket has them (``jsnn.ticket.load_ticket``):
    such a program never runs flax's init, whose one-off executables (1.5-3 MB each on XLA:CPU) would
    otherwise stay resident. Drops them (``jax.clear_caches``) and hands the freed heap back."""
    import jax

    jax.clear_caches()
    reset_peak_rss()


def time_steps(step: Callable[[], object], sync: Callable[[object], None], case: Case) -> dict:
    """First call timed alone (compile / first-run cost), ``case.warmup`` untimed, then ``case.steps`` timed."""
    t0 = time.perf_counter()
    sync(step())
    first = time.perf_counter() - t0
    # The steady-state peak leaves out what the first step alone needs (a JIT compiler's
    # working memory): the count restarts here, after it (which restarts ru_maxrss too,
    # so the peak so far is read first).
    peak_first = peak_rss_bytes()
    steady = reset_peak_rss()
    for _ in range(case.warmup):
        sync(step())
    times = []
    for _ in range(case.steps):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    times = np.asarray(times)
    med = float(np.median(times))
    return {
        "first_step_s": first,
        "compile_s": max(first - med, 0.0),
        "median_step_s": med,
        "min_step_s": float(times.min()),
        "max_step_s": float(times.max()),
        "iqr_step_s": float(np.percentile(times, 75) - np.percentile(times, 25)),
        "images_per_s": case.batch / med,
        "step_times_s": [float(t) for t in times],
        "steady_peak_rss_bytes": steady_peak_rss_bytes() if steady else None,
        "first_step_peak_rss_bytes": peak_first,
    }
