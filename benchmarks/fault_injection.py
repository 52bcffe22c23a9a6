"""Fault injection: kill, preempt, damage and starve a digits IMP run, resume it, compare with an
uninterrupted run.

    python benchmarks/fault_injection.py --trials 3          # writes benchmarks/results/fault_injection.{json,md}

Each trial starts `train/imp.py` (digits, 3 rounds of 2 epochs, T = 2, a checkpoint every 5 steps),
injects one fault at a random moment, then reruns the same command until it exits 0, doing only
what an error line tells a user to do (at most 4 reruns). A trial's results are "identical" when
every round's results entry and every round's ticket (weights, masks, BN) equal the uninterrupted
run's bit for bit. "Finished results lost" counts rounds whose results existed right after the
fault and were gone at the end.

Faults:
  sigkill            SIGKILL at a random moment
  sigkill_in_write   SIGKILL while a checkpoint is being written (its temporary directory exists)
  sigterm            SIGTERM at a random moment (expects exit 143 and one line; during start-up, before
                     the program's handler is installed, Python's default ends it: nothing was saved yet)
  truncate_newest    SIGKILL, then every file of the newest checkpoint cut to a third
  delete_newest      SIGKILL, then the largest file of the newest checkpoint deleted
  disk_full          the workdir on a tmpfs too small for the run (ENOSPC), then space freed
                     (the tmpfs is remounted larger); needs mount permission, else skipped
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, "train/imp.py", "--dataset", "digits", "--rounds", "3", "--epochs", "2", "-T", "2",
           "--checkpoint-every-steps", "5", "--no-progress"]
ENV = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
MAX_RERUNS = 4


def start(workdir: str) -> subprocess.Popen:
    return subprocess.Popen(COMMAND + ["--workdir", workdir], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(workdir: str) -> subprocess.CompletedProcess:
    return subprocess.run(COMMAND + ["--workdir", workdir], cwd=ROOT, env=ENV, text=True, capture_output=True)


def untimed(tree):
    """``tree`` without wall-clock entries (seconds), which no two runs share."""
    if isinstance(tree, dict):
        return {k: untimed(v) for k, v in tree.items() if "seconds" not in k}
    if isinstance(tree, list):
        return [untimed(v) for v in tree]
    return tree


def outcome(workdir: str) -> dict:
    """Every round's results entry (timings left out) and ticket bytes."""
    path = os.path.join(workdir, "results.json")
    runs = untimed(json.load(open(path))["runs"]) if os.path.exists(path) else []
    tickets = {}
    for t in sorted(glob.glob(os.path.join(workdir, "tickets", "*.npz"))):
        import numpy as np

        with np.load(t) as z:
            tickets[os.path.basename(t)] = {k: z[k].tobytes() for k in z.files if k != "__meta__"}
    return {"runs": runs, "tickets": tickets}


def newest_checkpoint(workdir: str) -> str | None:
    steps = [d for d in glob.glob(os.path.join(workdir, "checkpoints", "*")) if os.path.basename(d).isdigit()]
    return max(steps, key=lambda d: int(os.path.basename(d))) if steps else None


def writing(workdir: str) -> bool:
    return bool(glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*")))


def kill_at_random(workdir: str, rng: random.Random, seconds: float, signum=signal.SIGKILL,
                   after_first_checkpoint: bool = False) -> dict:
    p = start(workdir)
    if after_first_checkpoint:  # a fault on the newest checkpoint needs one to exist
        t0 = time.time()
        while newest_checkpoint(workdir) is None and p.poll() is None:
            time.sleep(0.01)
        seconds -= time.time() - t0
    time.sleep(rng.uniform(0.15, 0.95) * max(seconds, 0.0))
    landed = p.poll() is None
    p.send_signal(signum)
    _, stderr = p.communicate()
    return {"landed": landed, "exit": p.returncode, "stderr": stderr.strip().splitlines()[-1:] if stderr else []}


def kill_in_write(workdir: str, rng: random.Random, seconds: float) -> dict:
    p = start(workdir)
    time.sleep(rng.uniform(0.1, 0.6) * seconds)
    landed = False
    while p.poll() is None:
        if writing(workdir):
            p.kill()
            landed = True
            break
    p.communicate()
    return {"landed": landed, "exit": p.returncode}


def damage_newest(workdir: str, rng: random.Random, seconds: float, how: str) -> dict:
    info = kill_at_random(workdir, rng, seconds, after_first_checkpoint=True)
    newest = newest_checkpoint(workdir)
    if newest is None:
        return {**info, "landed": False}
    info["landed"] = True  # the fault is the damage, whether or not the kill came before the run's end
    files = [f for f in glob.glob(os.path.join(newest, "**", "*"), recursive=True) if os.path.isfile(f)]
    if how == "truncate":
        for f in files:
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 3)
    else:
        os.remove(max(files, key=os.path.getsize))
    return {**info, "damaged": os.path.relpath(newest, workdir)}


def can_mount() -> bool:
    d = tempfile.mkdtemp()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", d])
    os.rmdir(d)
    return ok


def resume(workdir: str, log: list) -> tuple[bool, int]:
    """Reruns the command until it exits 0, following what the error line says; (done, manual steps)."""
    manual = 0
    for _ in range(MAX_RERUNS):
        out = run(workdir)
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
        log.append({"exit": out.returncode, "line": last[:300]})
        if out.returncode == 0:
            return True, manual
        moved = re.search(r"the checkpoint in (\S+) cannot be read", last)
        if moved and "Move that directory aside" in last:
            shutil.move(moved.group(1), moved.group(1) + ".damaged")
            manual += 1
            continue
        if "free space" in last:
            subprocess.run(["mount", "-o", "remount,size=256m", workdir], check=True)
            manual += 1
            continue
        if out.returncode == 143:  # preempted again? (not expected: nothing signals the reruns)
            continue
        return False, manual
    return False, manual


def trial(fault: str, base: str, rng: random.Random, seconds: float) -> dict:
    workdir = os.path.join(base, "w")
    os.makedirs(workdir)
    mounted = False
    try:
        if fault == "disk_full":
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={rng.randint(400, 900)}k", "tmpfs", workdir],
                           check=True)
            mounted = True
            out = run(workdir)
            info = {"landed": out.returncode != 0, "exit": out.returncode,
                    "stderr": out.stderr.strip().splitlines()[-1:]}
            info["one_line"] = out.returncode != 0 and "Traceback" not in out.stderr
        elif fault == "sigkill":
            info = kill_at_random(workdir, rng, seconds)
        elif fault == "sigterm":
            info = kill_at_random(workdir, rng, seconds, signal.SIGTERM)
            info["one_line"] = info["exit"] == 143 and "Traceback" not in "".join(info["stderr"])
        elif fault == "sigkill_in_write":
            info = kill_in_write(workdir, rng, seconds)
        else:
            info = damage_newest(workdir, rng, seconds, "truncate" if fault == "truncate_newest" else "delete")
        before = {r["round"] for r in outcome(workdir)["runs"]}
        log: list = []
        resumed, manual = resume(workdir, log)
        after = outcome(workdir)
        lines = [r["line"] for r in log if r["exit"] != 0] + (
            info.get("stderr", []) if info.get("exit", 0) > 0 else [])
        clear = all(l.startswith(("error: ", "stopped by ")) for l in lines)
        return {"fault": fault, **info, "resumed": resumed, "manual_steps": manual, "reruns": log,
                "clear_lines": clear,
                "rounds_lost": len(before - {r["round"] for r in after["runs"]}), "after": after}
    finally:
        if mounted:
            subprocess.run(["umount", workdir])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3, help="trials per fault")
    p.add_argument("--faults", default="sigkill,sigkill_in_write,sigterm,truncate_newest,delete_newest,disk_full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fault_injection"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    faults = args.faults.split(",")
    if "disk_full" in faults and not can_mount():
        print("disk_full skipped: no permission to mount a tmpfs here", file=sys.stderr)
        faults.remove("disk_full")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        reference_dir = os.path.join(tmp, "reference")
        out = run(reference_dir)
        if out.returncode != 0:
            sys.exit(f"the uninterrupted run failed: {out.stderr[-2000:]}")
        reference = outcome(reference_dir)
        # faults land at random moments of a run as long as the reruns' (compilation cache warm)
        t0 = time.time()
        if run(os.path.join(tmp, "timing")).returncode != 0:
            sys.exit("the timing run failed")
        seconds = time.time() - t0
        print(f"uninterrupted run: {seconds:.1f} s, rounds {[r['round'] for r in reference['runs']]}", flush=True)
        trials = []
        for fault in faults:
            for k in range(args.trials):
                result = trial(fault, os.path.join(tmp, f"{fault}_{k}"), rng, seconds)
                result["identical"] = result.pop("after") == reference
                trials.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "reruns"}), flush=True)

    rows = []
    for fault in faults:
        ts = [t for t in trials if t["fault"] == fault]
        rows.append({"fault": fault, "trials": len(ts), "landed": sum(t["landed"] for t in ts),
                     "resumed": sum(t["resumed"] for t in ts), "identical": sum(t["identical"] for t in ts),
                     "rounds_lost": sum(t["rounds_lost"] for t in ts),
                     "clear_lines": sum(t["clear_lines"] for t in ts),
                     "manual_steps": sum(t["manual_steps"] for t in ts)})
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"command": " ".join(COMMAND[1:]), "uninterrupted_seconds": seconds, "rows": rows,
                   "trials": trials}, f, indent=2)
    lines = ["| fault | trials | fault landed | resumed | results identical | finished rounds lost | "
             "every failure one clear line | manual steps (as the error line said) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['fault']} | {r['trials']} | {r['landed']} | {r['resumed']} | {r['identical']} | "
              f"{r['rounds_lost']} | {r['clear_lines']} | {r['manual_steps']} |" for r in rows]
    with open(args.out + ".md", "w") as f:
        f.write(f"Fault injection on `{' '.join(COMMAND[1:])}` (uninterrupted: {seconds:.0f} s)\n\n"
                + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
