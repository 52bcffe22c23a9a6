"""The streamed tfds loader (jsnn/data/streaming.py) on ImageNet-shaped data: images/s, memory, a cap.

    nice -n 10 python -m benchmarks.stream_loader                 # 10 000 JPEGs, results/stream_loader.json
    nice -n 10 python -m benchmarks.stream_loader --quick         # 1 200 JPEGs, results/stream_loader_quick.json

1. **Data**: a tfds dataset written by a tiny builder in array_record format, as `tfds build
   imagenet2012 --file_format=array_record` writes ImageNet: ``--images`` train and ``--val`` test
   224 x 224 RGB JPEGs (quality ``--quality``), made up (smooth colour fields plus pixel noise, so they
   compress like photographs rather than like noise or flat colour), 1 000 classes, image shape
   (None, None, 3) as ImageNet's, so the loader takes ImageNet's path: a random resized crop to 224
   for training, resize-256-centre-crop-224 for evaluation, both on the host.
2. **Loader throughput**: P processes (1 and 2) started together, each iterating its rows of the
   global batch (``--batch``, 256: SEW-ResNet's ImageNet batch, 8 GPUs x 32) through
   ``StreamedDataset.process_train_batches`` for ``--batches`` batches after one untimed batch; images/s
   per process and all together, and each process's peak memory (its RSS plus its grain workers',
   sampled every 50 ms). With threads only (workers 0) and with grain worker processes.
3. **Under a memory cap**: one process (2 threads, ``MALLOC_ARENA_MAX=2``) under ``RLIMIT_AS`` (`ulimit -v`)
   of ``--cap-mb``, smaller
   than the decoded training set (N x 224 x 224 x 3 bytes), reads a whole epoch and the whole test
   split: it finishes, with its peak RSS.
4. **The train step** the loader feeds: the programs' jitted step (``Trainer.jitted_steps``,
   ``MaskedTraining``) of ``--model`` at T = ``--timesteps`` on 224 x 224 x 3 batches of
   ``--step-batch`` (on this CPU a batch of 256 would take minutes per step), images/s of the median
   step. The loader keeps ahead when its images/s exceed the step's.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAME = "jsnn_imagenet_shaped"  # the builder's tfds name
SIDE = 224


# ---------------------------------------------------------------------- the data


def made_up_jpeg(rng: np.random.Generator, quality: int) -> bytes:
    from PIL import Image

    coarse = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((SIDE, SIDE), Image.BICUBIC), np.int16)
    pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def prepare(data_dir: str, n_train: int, n_val: int, quality: int) -> dict:
    """Writes the dataset (once: an existing one of the same size is reused); its sizes."""
    import tensorflow_datasets as tfds

    class JsnnImagenetShaped(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        code_path = None  # no code folder (tfds would look it up through importlib_resources)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=1000)}), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, n_train), "test": self._generate_examples(1, n_val)}

        def _generate_examples(self, split, n):
            rng = np.random.default_rng([split, quality])
            for i in range(n):
                yield i, {"image": made_up_jpeg(rng, quality), "label": int(rng.integers(1000))}

    folder = Path(data_dir) / NAME / "1.0.0"
    info = folder / "dataset_info.json"
    if info.exists():
        splits = {s["name"]: int(sum(int(x) for x in s["shardLengths"])) for s in json.load(open(info))["splits"]}
        if splits != {"train": n_train, "test": n_val}:
            raise SystemExit(f"{folder} holds {splits}; remove it or pass another --data-dir")
    else:
        t0 = time.perf_counter()
        JsnnImagenetShaped(data_dir=data_dir, file_format="array_record").download_and_prepare()
        print(f"wrote {n_train} + {n_val} JPEGs in {time.perf_counter() - t0:.0f} s", flush=True)
    files = sorted(folder.glob("*.array_record-*"))
    train_bytes = sum(f.stat().st_size for f in files if "-train." in f.name)
    return {"train_images": n_train, "test_images": n_val, "jpeg_quality": quality, "image_side": SIDE,
            "train_file_bytes": train_bytes, "test_file_bytes": sum(f.stat().st_size for f in files) - train_bytes,
            "train_decoded_bytes": n_train * SIDE * SIDE * 3}


# ------------------------------------------------------------------ one process


class TreeMemory:
    """Peak RSS of this process plus its children (grain's workers), sampled every 50 ms."""

    def __init__(self):
        import psutil

        self.me, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            total = self.me.memory_info().rss
            for child in self.me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except Exception:  # a worker that just ended
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


def child(args) -> None:
    """One process: its rows of ``--batches`` train batches (or, with --whole-epoch, a whole epoch and
    the test split), timed; one JSON line on stdout."""
    from jsnn.data.streaming import load_streamed

    memory = TreeMemory()
    t0 = time.perf_counter()
    ds = load_streamed(NAME, args.data_dir, workers=args.workers, threads=args.threads)
    opened = time.perf_counter() - t0
    out = {"process": args.process, "processes": args.processes, "workers": args.workers,
           "threads": ds._threads(), "open_seconds": opened}
    batches = ds.process_train_batches(args.batch, 0, 0, process_index=args.process, process_count=args.processes)
    images, checksum = 0, 0
    first = time.perf_counter()
    x, y = next(batches)  # untimed: starts the threads (and workers) and fills the read-ahead
    out["first_batch_seconds"] = time.perf_counter() - first
    limit = None if args.whole_epoch else args.batches
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        images += len(x)
        checksum += int(x[:, 0, 0, 0].sum())
        if limit is not None and i + 1 >= limit:
            break
    seconds = time.perf_counter() - t0
    out.update(images=images, seconds=seconds, images_per_sec=images / seconds, local_batch=len(x),
               batch_shape=list(x.shape))
    if args.whole_epoch:
        del batches  # its threads and read-ahead go before the test split's start
        gc.collect()
        t0 = time.perf_counter()
        test = sum(int(v.sum()) for _, _, v in ds.process_eval_batches(args.batch, process_index=args.process,
                                                                      process_count=args.processes))
        out.update(test_images=test, test_seconds=time.perf_counter() - t0)
    out["peak_rss_bytes"] = memory.stop()
    out["address_space_limit_bytes"] = resource.getrlimit(resource.RLIMIT_AS)[0]
    print(json.dumps(out), flush=True)


def run_children(args, processes: int, workers: int, threads: int, *, whole_epoch=False, cap_bytes=None) -> list:
    def limit():
        if cap_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    if cap_bytes:  # glibc reserves 64 MiB of address space per thread's arena: two arenas, not one per thread
        env["MALLOC_ARENA_MAX"] = "2"
    cmds = [[sys.executable, "-m", "benchmarks.stream_loader", "--child", "--data-dir", args.data_dir,
             "--process", str(p), "--processes", str(processes), "--workers", str(workers), "--threads", str(threads),
             "--batch", str(args.batch), "--batches", str(args.batches)] + (["--whole-epoch"] if whole_epoch else [])
            for p in range(processes)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                              preexec_fn=limit) for c in cmds]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode:
            raise SystemExit(f"a loader process failed (exit {p.returncode}):\n{stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


# ------------------------------------------------------------------ the train step


def train_step_rate(model_name: str, timesteps: int, batch: int, repeats: int) -> dict:
    import jax

    from jsnn import data as jdata
    from jsnn import parallel, xla_flags
    from jsnn.config import TrainConfig
    from jsnn.models import build_model
    from jsnn.trainer import Trainer
    from jsnn.training_rules import MaskedTraining
    from jsnn.variables import init_variables

    xla_flags.configure()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, SIDE, SIDE, 3), dtype=np.uint8)
    labels = rng.integers(0, 1000, batch).astype(np.int32)
    ds = jdata.ArrayDataset("imagenet_shaped", images, labels, images, labels, 1000, (120.0,) * 3, (60.0,) * 3,
                            jdata.AugmentConfig(flip=True))
    config = TrainConfig(dataset="cifar10", model=model_name, timesteps=timesteps, batch_size=batch, epochs=1,
                         progress=False).resolve("dense")
    model = build_model(config, 1000)
    trainer = Trainer(config, model, ds)
    rule = MaskedTraining()
    state = trainer.new_state(init_variables(model, jax.random.key(0), (1, SIDE, SIDE, 3)), {}, rule, 0)
    step = trainer.jitted_steps(rule)[0]
    x, y = parallel.put_batch(trainer.mesh, images, labels)
    t0 = time.perf_counter()
    state, m = step(state, x, y, trainer.stop_flags())
    jax.block_until_ready(m)
    compile_seconds = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, m = step(state, x, y, trainer.stop_flags())
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {"model": model_name, "timesteps": timesteps, "batch": batch, "median_step_seconds": median,
            "images_per_sec": batch / median, "first_step_seconds": compile_seconds, "repeats": repeats}


# ----------------------------------------------------------------------- main


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores (shared with other jobs)"


def commit() -> str:
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()  # noqa: E731
    return run("rev-parse", "--short", "HEAD") + ("+dirty" if run("status", "--porcelain", "--", "jsnn") else "")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="/tmp/jsnn_stream_bench")
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--quality", type=int, default=75)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=8, help="timed batches per process")
    p.add_argument("--cap-mb", type=int, default=1280, help="RLIMIT_AS of the capped run, MiB")
    p.add_argument("--model", default="resnet19")
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--step-batch", type=int, default=2)
    p.add_argument("--step-repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    # one loader process (started by this script)
    p.add_argument("--child", action="store_true")
    p.add_argument("--process", type=int, default=0)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--whole-epoch", action="store_true")
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.images, args.val, args.batches, args.data_dir = 1_200, 200, 3, args.data_dir + "_quick"
    t_start = time.time()
    data = prepare(args.data_dir, args.images, args.val, args.quality)
    load = os.getloadavg()
    runs = []
    for processes, workers, threads in ((1, 0, 4), (1, 2, 2), (2, 0, 2)):
        per = run_children(args, processes, workers, threads)
        total = sum(r["images"] for r in per) / max(r["seconds"] for r in per)
        runs.append({"processes": processes, "workers": workers, "threads": threads, "per_process": per,
                     "images_per_sec_total": total})
        rss = ", ".join(f"{r['peak_rss_bytes'] / 2**20:.0f} MiB" for r in per)
        print(f"{processes} process(es), {workers} workers, {threads} threads: {total:.0f} images/s in all; "
              f"peak RSS per process {rss}", flush=True)
    capped = run_children(args, 1, 0, 2, whole_epoch=True, cap_bytes=args.cap_mb * 2**20)[0]
    print(f"under RLIMIT_AS {args.cap_mb} MiB: {capped['images']} train + {capped['test_images']} test images, "
          f"peak RSS {capped['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    path = RESULTS / ("stream_loader_quick.json" if args.quick else "stream_loader.json")
    record = {"machine": machine(), "commit": commit(), "load_average_at_start": list(load),
              "command": "nice -n 10 python -m benchmarks.stream_loader" + (" --quick" if args.quick else ""),
              "batch": args.batch, "batches_timed": args.batches, "data": data, "loader": runs,
              "memory_cap": {"rlimit_as_bytes": args.cap_mb * 2**20, **capped}, "train_step": None,
              "wall_seconds": time.time() - t_start}
    path.write_text(json.dumps(record, indent=1) + "\n")  # the loader's numbers, before the (long) step
    step = train_step_rate(args.model, args.timesteps, args.step_batch, args.step_repeats)
    print(f"train step: {step['images_per_sec']:.2f} images/s ({args.model}, T={args.timesteps}, "
          f"batch {args.step_batch})", flush=True)
    record.update(train_step=step, wall_seconds=time.time() - t_start)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
