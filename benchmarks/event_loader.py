"""Event data speed: building the frame cache, and data throughput against training throughput.

    python -m benchmarks.event_loader                 # digits_dvs + an N-MNIST-sized set, writes results/event_loader.*
    python -m benchmarks.event_loader --quick         # seconds: small sizes, results/event_loader_quick.*

What is measured (wall seconds, this machine; the CPU seconds of the builds too):

1. **Cache build, digits_dvs**: ``load_dataset("digits_dvs")`` into an empty cache (simulating the
   1 797 digits' saccades, framing, writing the memmaps), then a second load (a cache hit).
2. **Cache build, N-MNIST-sized**: ``--nmnist-files`` N-MNIST ``.bin`` files written in N-MNIST's
   layout (digits_dvs events, about 3 900 per sample, N-MNIST has about 4 300), then
   ``load_dataset("nmnist")``: its per-sample cost (reading, framing, writing) times 70 000 is
   the extrapolated build time of the real N-MNIST (60 000 train + 10 000 test).
3. **Data throughput**: a 60 000-sample cache memmap of N-MNIST's default frames (uint8
   ``[60000, 10, 34, 34, 2]``, 1.39 GB; written directly, digits_dvs frames repeated), and the
   digits_dvs cache: samples/s of the host side of an epoch (``train_batches``: the sorted
   gather from the memmap), of that plus the copy to the device (``parallel.put_batch``), and
   of the on-device cast + augmentation + normalisation (jitted) alone; each the best of 3 runs
   (a new epoch's permutation each). The memmap was just written, so it is read from the page
   cache (a cold disk is slower).
4. **Training throughput**: the programs' jitted train step (``Trainer.jitted_steps`` with
   ``MaskedTraining``, as ``train/imp.py`` and ``train/dense.py`` call it, the batch put on the
   device inside the timing) of the digits CNN on the same frames, one frame per timestep: the
   same steps on one fixed batch and fed by ``train_batches`` from the memmap, both as
   ``Trainer.train_epochs`` runs them (one step in flight), alternated, best of ``--repeats``.
   The second over the first is what the data costs a run (1.0: nothing).

A ratio data/training well above 1 means the data never holds the step up (the host gathers the
next batch while the device computes only if the step is dispatched asynchronously, which JAX
does; the ratio is what matters here).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jsnn import data as jdata
from jsnn import parallel, xla_flags
from jsnn.config import TrainConfig
from jsnn.data.events import cache, digits_dvs
from jsnn.data.events.frames import FrameSettings, frame_counts, to_storage
from jsnn.data.events.readers import make_events
from jsnn.data.events.writers import write_nmnist_bin
from jsnn.models import build_model
from jsnn.objective import preprocess
from jsnn.trainer import Trainer
from jsnn.training_rules import MaskedTraining
from jsnn.variables import init_variables

xla_flags.configure()  # the programs' CPU convolutions
RESULTS = Path(__file__).parent / "results"
NMNIST_TOTAL = 70_000  # 60 000 train + 10 000 test


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return f"{model}, {os.cpu_count()} cores; JAX devices: {devices}"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent.parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "jsnn"], capture_output=True, text=True,
                               cwd=Path(__file__).parent.parent).stdout.strip()
        return head + (" (jsnn/ with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def best_of(fn, repeats: int = 3) -> float:
    """The shortest of ``repeats`` wall times: the machine is shared, so the least disturbed run."""
    return min(timed(fn)[1] for _ in range(repeats))


def build_digits_dvs(workdir: str) -> dict:
    os.environ[cache.CACHE_ENV] = os.path.join(workdir, "cache_digits")
    ds, wall, cpu = timed(lambda: jdata.load_dataset("digits_dvs"))
    _, hit, _ = timed(lambda: jdata.load_dataset("digits_dvs"))
    n = len(ds.train_images) + len(ds.test_images)
    return {"samples": n, "build_s": wall, "build_cpu_s": cpu, "per_sample_ms": 1e3 * wall / n,
            "cache_hit_s": hit, "frame_shape": list(ds.image_shape)}


def build_nmnist_sized(workdir: str, files: int) -> dict:
    """``files`` .bin files (80 % Train, 20 % Test) from digits_dvs events, then a cache build."""
    root = Path(workdir) / "nmnist_data"
    train_x, train_y, _, _ = digits_dvs.digits_split()
    reps = -(-files // len(train_x))
    images = np.concatenate([train_x] * reps)[:files]
    labels = np.concatenate([train_y] * reps)[:files]
    x, y, t, p, offsets = digits_dvs.saccade_events(images, seed=7)
    for i in range(files):
        folder = root / "NMNIST" / ("Train" if i < 0.8 * files else "Test") / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        s = slice(offsets[i], offsets[i + 1])
        write_nmnist_bin(folder / f"{i:05d}.bin", make_events(x[s], y[s], t[s], p[s]))
    os.environ[cache.CACHE_ENV] = os.path.join(workdir, "cache_nmnist")
    ds, wall, cpu = timed(lambda: jdata.load_dataset("nmnist", str(root)))
    per_sample = wall / files
    return {"files": files, "events_per_sample": float(np.diff(offsets).mean()), "build_s": wall,
            "build_cpu_s": cpu, "per_sample_ms": 1e3 * per_sample,
            "extrapolated_70k_build_s": per_sample * NMNIST_TOTAL,
            "frame_shape": list(ds.image_shape)}


def nmnist_sized_memmap(workdir: str, samples: int, settings: FrameSettings):
    """uint8 [samples, T, 34, 34, 2] written straight into a memmap: digits_dvs frames, repeated."""
    train_x, train_y, _, _ = digits_dvs.digits_split()
    x, y, t, p, offsets = digits_dvs.saccade_events(train_x[:256], seed=9)
    base = np.stack([to_storage(frame_counts(x[s].astype(np.int64), y[s].astype(np.int64), t[s],
                                             p[s].astype(np.int64), digits_dvs.SENSOR_SIZE, settings), False)
                     for s in (slice(offsets[i], offsets[i + 1]) for i in range(256))])
    path = os.path.join(workdir, "nmnist_sized_frames.npy")
    frames = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(samples,) + base.shape[1:])
    for start in range(0, samples, len(base)):
        frames[start:start + len(base)] = base[:samples - start]
    frames.flush()
    del frames
    labels = np.resize(train_y[:256], samples).astype(np.int32)
    return np.load(path, mmap_mode="r"), labels


def data_throughput(images, labels, batch: int, batches: int, augment: jdata.AugmentConfig) -> dict:
    """samples/s of the host gather, gather + device copy, and the on-device preprocessing alone."""
    mesh = parallel.data_mesh()

    epochs = iter(range(1, 10**6))  # a new permutation each time: no run re-reads the last one's rows

    def stream():
        """``batches`` batches of train_batches, through as many epochs as that takes."""
        done = 0
        while True:
            for xy in jdata.train_batches(images, labels, batch, seed=0, epoch=next(epochs)):
                yield xy
                done += 1
                if done == batches:
                    return

    def host_only():
        for x, y in stream():
            pass

    def host_and_copy():
        last = None
        for x, y in stream():
            last = parallel.put_batch(mesh, x, y)
        jax.block_until_ready(last)

    frames, _ = parallel.put_batch(mesh, np.asarray(images[:batch]), labels[:batch])
    prep = jax.jit(lambda key, x: preprocess(x, (0.0, 0.0), (1.0, 1.0), augment, key))
    jax.block_until_ready(prep(jax.random.key(0), frames))  # compile
    keys = jax.random.split(jax.random.key(1), batches)

    def device_prep():
        out = None
        for k in keys:
            out = prep(k, frames)
        jax.block_until_ready(out)

    host_s, copy_s, prep_s = best_of(host_only), best_of(host_and_copy), best_of(device_prep)
    n = batch * batches
    return {"batches": batches, "host_gather_samples_per_s": n / host_s,
            "gather_and_device_put_samples_per_s": n / copy_s,
            "device_augment_samples_per_s": n / prep_s, "augment": str(augment)}


def train_throughput(dataset: jdata.ArrayDataset, batch: int, steps: int, repeats: int) -> dict:
    """The programs' train step (MaskedTraining) of the digits CNN on the dataset's frames: ``steps``
    steps on one fixed batch, and ``steps`` steps fed by ``train_batches`` from the memmap, both in
    Trainer.train_epochs' pattern (the previous step's loss read after the next step is dispatched);
    alternated ``repeats`` times, the best time of each kept."""
    config = TrainConfig(dataset="digits", model="digits_cnn", timesteps=dataset.timesteps, batch_size=batch,
                         epochs=1, progress=False).resolve("imp")
    model = build_model(config, dataset.num_classes)
    trainer = Trainer(config, model, dataset)
    rule = MaskedTraining()
    variables = init_variables(model, jax.random.key(0), (1,) + dataset.image_shape)
    holder = {"state": trainer.new_state(variables, None, rule, config.seed)}
    train_step = trainer.jitted_steps(rule)[0]
    mesh = trainer.mesh
    fixed = (np.asarray(dataset.train_images[:batch]), dataset.train_labels[:batch])
    epochs = iter(range(1, 10**6))

    def from_memmap():
        while True:
            yield from jdata.train_batches(dataset.train_images, dataset.train_labels, batch, seed=0,
                                           epoch=next(epochs))

    def loop(batches):
        pending = None
        for _, (x, y) in zip(range(steps), batches):
            holder["state"], m = train_step(holder["state"], *parallel.put_batch(mesh, x, y), trainer.stop_flags())
            if pending is not None:
                float(pending["loss"])
            pending = m
        float(pending["loss"])

    _, compile_s, _ = timed(lambda: loop(iter([fixed])))
    fixed_s, data_s = [], []
    for _ in range(repeats):
        fixed_s.append(timed(lambda: loop(iter(lambda: fixed, None)))[1])
        data_s.append(timed(lambda: loop(from_memmap()))[1])
    fixed_rate, data_rate = steps * batch / min(fixed_s), steps * batch / min(data_s)
    return {"model": "digits_cnn", "input": list(dataset.image_shape), "first_step_s": compile_s,
            "steps": steps, "repeats": repeats, "fixed_batch_samples_per_s": fixed_rate,
            "from_memmap_samples_per_s": data_rate, "from_memmap_over_fixed": data_rate / fixed_rate}


def as_dataset(name, images, labels, timesteps, augment):
    return jdata.ArrayDataset(name, images, labels, images[:0], labels[:0], 10, (0.0, 0.0), (1.0, 1.0), augment,
                              timesteps=timesteps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, results/event_loader_quick.*")
    parser.add_argument("--nmnist-files", type=int, default=2000)
    parser.add_argument("--nmnist-samples", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50, help="batches timed for data throughput")
    parser.add_argument("--steps", type=int, default=20, help="train steps per timed loop on digits_dvs")
    parser.add_argument("--nmnist-steps", type=int, default=4, help="train steps per timed loop, N-MNIST-sized")
    parser.add_argument("--repeats", type=int, default=3, help="timed loops of each kind (best kept)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.nmnist_files, args.nmnist_samples, args.batches, args.steps, args.nmnist_steps, args.repeats = (
            200, 4096, 10, 2, 2, 1)
    out = args.out or ("event_loader_quick" if args.quick else "event_loader")
    command = "python -m benchmarks.event_loader " + " ".join(argv if argv is not None else sys.argv[1:])
    workdir = tempfile.mkdtemp(prefix="jsnn_event_bench_")
    previous_env = os.environ.get(cache.CACHE_ENV)
    try:
        results = {"command": command.strip(), "machine": machine(), "commit": commit(),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "load_average_at_start": os.getloadavg()[0], "batch": args.batch}
        print("building digits_dvs ...", flush=True)
        results["build_digits_dvs"] = build_digits_dvs(workdir)
        print(results["build_digits_dvs"], flush=True)
        print(f"building an N-MNIST cache from {args.nmnist_files} files ...", flush=True)
        results["build_nmnist_sized"] = build_nmnist_sized(workdir, args.nmnist_files)
        print(results["build_nmnist_sized"], flush=True)

        os.environ[cache.CACHE_ENV] = os.path.join(workdir, "cache_digits")
        digits = jdata.load_dataset("digits_dvs")
        settings = jdata.default_frame_settings("nmnist")
        big, big_labels = nmnist_sized_memmap(workdir, args.nmnist_samples, settings)
        nmnist = as_dataset("nmnist", big, big_labels, settings.timesteps, jdata.EVENT_AUGMENT["nmnist"])
        crop_flip = jdata.EVENT_AUGMENT["cifar10_dvs"]  # the heaviest preset: crop + flip
        for name, ds, steps in (("digits_dvs", digits, args.steps), ("nmnist_sized", nmnist, args.nmnist_steps)):
            print(f"throughput on {name} {ds.train_images.shape} ...", flush=True)
            entry = {"samples": len(ds.train_images), "frame_bytes": int(np.prod(ds.image_shape)),
                     "data_preset_augment": data_throughput(ds.train_images, ds.train_labels, args.batch,
                                                            args.batches, ds.augment),
                     "data_crop_flip": data_throughput(ds.train_images, ds.train_labels, args.batch,
                                                       args.batches, crop_flip),
                     "train": train_throughput(ds, args.batch, steps, args.repeats)}
            data_rate = min(entry["data_preset_augment"]["gather_and_device_put_samples_per_s"],
                            entry["data_crop_flip"]["gather_and_device_put_samples_per_s"])
            entry["data_over_train"] = data_rate / entry["train"]["fixed_batch_samples_per_s"]
            results[name] = entry
            print(json.dumps(entry, indent=1), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if previous_env is None:
            os.environ.pop(cache.CACHE_ENV, None)
        else:
            os.environ[cache.CACHE_ENV] = previous_env
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / f"{out}.md").write_text(markdown(results))
    print(f"wrote {RESULTS / out}.json and .md")


def markdown(r: dict) -> str:
    d, n = r["build_digits_dvs"], r["build_nmnist_sized"]
    lines = [
        f"Machine: {r['machine']}; {r['date']}; commit {r['commit']}; load average at start "
        f"{r['load_average_at_start']:.1f}; `{r['command']}`.",
        "",
        "Frame cache builds (wall seconds; CPU seconds in brackets):",
        "",
        "| what | samples | build s | per sample ms | note |",
        "|---|---|---|---|---|",
        f"| digits_dvs (simulate + frame + write) | {d['samples']} | {d['build_s']:.1f} ({d['build_cpu_s']:.1f}) | "
        f"{d['per_sample_ms']:.2f} | cache hit {d['cache_hit_s']:.2f} s; frames {d['frame_shape']} |",
        f"| N-MNIST layout, {n['files']} .bin files (read + frame + write) | {n['files']} | {n['build_s']:.1f} "
        f"({n['build_cpu_s']:.1f}) | {n['per_sample_ms']:.2f} | x 70 000 = {n['extrapolated_70k_build_s']:.0f} s "
        f"(extrapolated); {n['events_per_sample']:.0f} events/sample; frames {n['frame_shape']} |",
        "",
        f"Throughput, batch {r['batch']} (samples/s): data = the sorted gather from the memmap (host), "
        "+ the copy to the device; device augment = jitted cast + augmentation + normalisation alone; "
        "train = the programs' jitted train step of digits_cnn (MaskedTraining), batch copy included, on one "
        "fixed batch, and fed from the memmap by train_batches as Trainer.train_epochs feeds it.",
        "",
        "| frames | N | host gather | gather + device_put | device augment (preset) | device augment (crop+flip) "
        "| train, fixed batch | data / train | train, from the memmap | from memmap / fixed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("digits_dvs", "nmnist_sized"):
        e = r[name]
        pre, cf = e["data_preset_augment"], e["data_crop_flip"]
        lines.append(
            f"| {name} {e['train']['input']} | {e['samples']} | {pre['host_gather_samples_per_s']:.0f} | "
            f"{pre['gather_and_device_put_samples_per_s']:.0f} | {pre['device_augment_samples_per_s']:.0f} | "
            f"{cf['device_augment_samples_per_s']:.0f} | {e['train']['fixed_batch_samples_per_s']:.1f} | "
            f"{e['data_over_train']:.0f}x | {e['train']['from_memmap_samples_per_s']:.1f} | "
            f"{e['train']['from_memmap_over_fixed']:.2f} |")
    lines += ["", "data / train = the slower of the two gather + device_put rates over the fixed-batch train rate: "
              "how many times faster the data comes than the step uses it. The last column compares two "
              "timings of a few steps each on a shared, loaded machine; runs of it varied by up to 2x either "
              "way here, so read it as 'about 1', not to the percent.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
