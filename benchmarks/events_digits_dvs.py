"""The main-job commands on the offline event stand-in digits_dvs, at their default presets, timed, and a
ticket of each exported to NIR and checked in snnTorch with frame t fed at step t.

    python benchmarks/events_digits_dvs.py [--workdir /tmp/events_digits_dvs] [--out docs/results/events_digits_dvs]
    python benchmarks/events_digits_dvs.py --presets-only    # OUT/presets.json alone (no training)

Runs, each as its own process, in WORKDIR (fresh: the frame cache too, in WORKDIR/frames):
  1. the frame cache build:  load_dataset("digits_dvs") with its default frames (simulated events -> frames)
  2. python train/edge_popup.py --dataset digits_dvs --workdir WORKDIR/edge_popup --no-progress
  3. python train/imp.py --dataset digits_dvs --workdir WORKDIR/imp --no-progress
  4. python train/export.py --workdir WORKDIR/edge_popup --check jsnn,snntorch
     python train/export.py --workdir WORKDIR/imp --round R --check jsnn,snntorch   (R: the round nearest 90 %)
and writes OUT/results.json (commands, wall seconds, accuracies, per-round sparsity, the first layer's
operations, the NIR checks) with each run's config.json, and OUT/presets.json: every event dataset's
resolved presets per method (jsnn/config.py) and default frames (jsnn/data/events/loader.py).
docs/build.py makes the tables of docs/events.md from them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def timed(command: list[str], env: dict) -> float:
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def first_layer(efficiency: dict) -> dict:
    layer = efficiency["layers"][0]
    return {k: layer[k] for k in ("layer", "input", "runs_per_image", "acs_per_image", "macs_per_image")}


def entries(results: dict) -> list[dict]:
    return [{"label": r.get("label"), "round": r.get("round"), "sparsity": r["sparsity"],
             "test_accuracy": r["test_accuracy"], "energy_per_image_j": r["efficiency"]["energy_per_image_j"],
             "first_layer": first_layer(r["efficiency"])} for r in results["runs"]]


def ep_config_frames(workdir: str) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)["frames"]


def check_summary(path: str) -> dict:
    with open(path) as f:
        report = json.load(f)
    return {"images": report["images"], "jsnn_accuracy": report["jsnn_accuracy"],
            "simulators": {sim: {k: r[k] for k in ("spike_agreement", "prediction_agreement", "accuracy", "spikes")}
                           for sim, r in report["simulators"].items()}}


def presets() -> dict:
    """Each event dataset's configuration as the programs resolve it, per method (no data loaded)."""
    sys.path.insert(0, ROOT)
    from jsnn import data as jdata
    from jsnn.config import PRESETS, TrainConfig

    keys = ("model", "timesteps", "epochs", "lr", "batch_size", "bn_affine")
    return {name: {"frames": jdata.default_frame_settings(name).to_json(),
                   "augment": str(jdata.EVENT_AUGMENT[name]),
                   "methods": {method: {k: getattr(TrainConfig(dataset=name).resolve(method), k) for k in keys}
                               for method in PRESETS}}
            for name in jdata.EVENT_DATASETS}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/events_digits_dvs")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "events_digits_dvs"))
    p.add_argument("--presets-only", action="store_true", help="write OUT/presets.json only")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "presets.json"), "w") as f:
        json.dump(presets(), f, indent=2)
    if args.presets_only:
        return
    # the code measured: HEAD when the runs start, and whether jsnn/ or train/ differ from it
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "jsnn", "train"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    # this tree's jsnn (not an installed one), and a fresh frame cache
    env = {**os.environ, "JSNN_CACHE_DIR": os.path.join(args.workdir, "frames"),
           "PYTHONPATH": os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    py = sys.executable
    ep, imp = os.path.join(args.workdir, "edge_popup"), os.path.join(args.workdir, "imp")
    seconds = {
        "frame_cache_build": timed([py, "-c", "from jsnn import data; data.load_dataset('digits_dvs')"], env),
        "edge_popup": timed([py, "train/edge_popup.py", "--dataset", "digits_dvs", "--workdir", ep, "--no-progress"],
                            env),
        "imp": timed([py, "train/imp.py", "--dataset", "digits_dvs", "--workdir", imp, "--no-progress"], env),
    }
    with open(os.path.join(ep, "results.json")) as f:
        ep_results = json.load(f)
    with open(os.path.join(imp, "results.json")) as f:
        imp_results = json.load(f)
    rounds = imp_results["runs"]
    nearest = min(rounds[1:], key=lambda r: abs(r["sparsity"] - 0.9))["round"]
    seconds["export_check_edge_popup"] = timed([py, "train/export.py", "--workdir", ep, "--check", "jsnn,snntorch"],
                                               env)
    seconds["export_check_imp"] = timed([py, "train/export.py", "--workdir", imp, "--round", str(nearest), "--check",
                                         "jsnn,snntorch"], env)
    out = {
        "machine": machine() + " (shared with other jobs while measured: wall times are noisy)",
        "commit": commit + (" with uncommitted changes in jsnn/ or train/" if dirty else ""),
        "frames": ep_config_frames(ep),
        "commands": {
            "edge_popup": "python train/edge_popup.py --dataset digits_dvs",
            "imp": "python train/imp.py --dataset digits_dvs",
            "export_edge_popup": "python train/export.py --workdir WORKDIR --check jsnn,snntorch",
            "export_imp": f"python train/export.py --workdir WORKDIR --round {nearest} --check jsnn,snntorch",
        },
        "wall_seconds": seconds,
        "edge_popup": entries(ep_results),
        "imp": entries(imp_results),
        "nir_checks": {
            "edge_popup": check_summary(os.path.join(ep, "sparsity_0.50", "ticket.nir.check.json")),
            f"imp_round_{nearest:02d}": check_summary(os.path.join(imp, "tickets",
                                                                   f"round_{nearest:02d}.nir.check.json")),
        },
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    shutil.copy(os.path.join(ep, "config.json"), os.path.join(args.out, "edge_popup_config.json"))
    shutil.copy(os.path.join(imp, "config.json"), os.path.join(args.out, "imp_config.json"))
    print(f"wrote {os.path.join(args.out, 'results.json')}")


if __name__ == "__main__":
    main()
