"""Fault injection: kill, preempt, damage, starve and double-start a digits IMP run, resume it,
compare with an uninterrupted run, and record where each fault hit.

    python benchmarks/fault_injection.py --trials 2     # writes benchmarks/results/fault_injection.{json,md}

Each trial starts a digits IMP run (3 rounds of 2 epochs, T = 2, a checkpoint every 5 steps),
injects one fault, then reruns `train/imp.py` with the same flags until it exits 0, doing only
what an error line tells a user to do (at most 4 reruns). A trial's results are "identical" when
every round's results entry (timings left out) and every round's ticket (weights, masks, BN)
equal the uninterrupted run's bit for bit. "Finished rounds lost" counts rounds whose results
existed right after the fault and were gone at the end.

Where a fault hit. The faulted run is `train/imp.py`'s run (the same flags, `start_run`,
`run_cleanly` and `imp.run`) started through this script (`--child`), which passes
`hooks=RunHooks(on_phase=...)`: every phase the run enters (prepare, train, batch, epoch_end,
evaluate, ticket, cost_report, results, plots, prune) is appended to a progress file as it
happens. A fault is aimed at a phase: the phase and its occurrence are drawn at random from
those of the uninterrupted run (or "start-up", the time before the first phase), and the fault
is sent as the child reaches it. After the child is gone, the last line of its progress file is
where the fault hit: "start-up" (no phase yet: imports, JAX, data, model, the workdir claim) or
the phase with its round, epoch and batch. Faults that hit in start-up or in "prepare" (set up,
nothing trained yet) are counted as start-up faults; only the others count as mid-run faults.

Faults:
  sigkill            SIGKILL at a drawn phase
  sigkill_in_write   SIGKILL while a checkpoint is being written (its temporary directory exists),
                     the first write after a drawn phase
  sigterm            SIGTERM at a drawn phase: the run stops with one line (exit 143) at the next
                     training step or finishes (exit 0) if no training is left; during start-up,
                     before the program's handler is installed, Python's default ends it
  truncate_newest    SIGKILL at a drawn phase after the first checkpoint, then every file of the
                     newest checkpoint cut to a third
  delete_newest      the same, then the largest file of the newest checkpoint deleted
  disk_full          the workdir on a tmpfs too small for the run (ENOSPC), then space freed
                     (the tmpfs is remounted larger); needs mount permission, else skipped
  concurrent_start   the same command started again in the same workdir at a drawn phase: the
                     second must stop at once with one line naming the first (host, pid) while
                     the first finishes
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from jsnn.runs.outputs import RunHooks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--dataset", "digits", "--rounds", "3", "--epochs", "2", "-T", "2", "--checkpoint-every-steps", "5",
         "--no-progress"]
PROGRAM = [sys.executable, "train/imp.py", *FLAGS]
CHILD = [sys.executable, os.path.abspath(__file__), "--child", *FLAGS]
ENV = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
MAX_RERUNS = 4
FAULTS = ("sigkill", "sigkill_in_write", "sigterm", "truncate_newest", "delete_newest", "disk_full",
          "concurrent_start")
START_UP = "start-up"


# -- the child: train/imp.py's run with hooks that record its progress ---------------------------
def child(argv: list[str]) -> None:
    """``train/imp.py`` for the flags this benchmark passes (its parser, its options, its start-up
    and error handling) with one addition: its run gets hooks that append every phase to the
    file named by $FAULT_PROGRESS (one JSON line each, written straight to the file, so a SIGKILL
    loses none)."""
    sys.path.insert(0, os.path.join(ROOT, "train"))
    spec = importlib.util.spec_from_file_location("imp_program", os.path.join(ROOT, "train", "imp.py"))
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)

    fd = os.open(os.environ["FAULT_PROGRESS"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def on_phase(name: str, where: dict) -> None:
        os.write(fd, (json.dumps({"phase": name, **where}) + "\n").encode())

    program.run_cleanly(lambda: program.main(argv, hooks=RunHooks(on_phase=on_phase)))


# -- running and watching ------------------------------------------------------------------------
class Child:
    """The faulted run: a child process and the phases it reported so far."""

    def __init__(self, workdir: str, progress: str):
        self.progress, self.offset, self.events = progress, 0, []
        open(progress, "w").close()
        self.p = subprocess.Popen(CHILD + ["--workdir", workdir], cwd=ROOT, env={**ENV, "FAULT_PROGRESS": progress},
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def poll_events(self) -> list[dict]:
        with open(self.progress, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data[:data.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.events += [json.loads(line) for line in whole.splitlines()]
        return self.events

    def wait_for(self, target: int | None, start_up_seconds: float = 0.0, check=lambda: True) -> bool:
        """Waits until the child reported ``target + 1`` phases (``target`` None: ``start_up_seconds``
        passed) and ``check()`` holds; False if the child ended first."""
        t0 = time.time()
        while self.p.poll() is None:
            if target is None:
                if time.time() - t0 >= start_up_seconds:
                    return True
            elif len(self.poll_events()) > target and check():
                return True
            time.sleep(0.002)
        return False

    def send(self, signum) -> None:
        """Sends ``signum``, noting where the child stood (its phases read just before)."""
        self.at_signal = where(self.poll_events())
        self.p.send_signal(signum)

    def finish(self) -> dict:
        """Waits for the child: its exit, last stderr line, and ``where`` the fault hit: where it stood
        when signalled (SIGKILL: the same as where it ended), else where it ended."""
        _, stderr = self.p.communicate()
        self.poll_events()
        ended = where(self.events)
        return {"exit": self.p.returncode, "stderr": stderr.strip().splitlines()[-1:] if stderr.strip() else [],
                "traceback": "Traceback" in stderr, "where": getattr(self, "at_signal", ended), "ended": ended}


def where(events: list[dict]) -> dict:
    """Where a run stood at its last reported phase: start-up, or the phase, round, epoch, batch."""
    if not events:
        return {"phase": START_UP}
    e = dict(events[-1])
    out = {"phase": e.pop("phase")}
    if "segment" in e:
        out["round"] = e.pop("segment")
    if out["phase"] == "batch":  # the hook counts epochs from 0; people count from 1
        out["epoch"] = e.pop("epoch") + 1
    out.update(e)
    return out


def describe(w: dict) -> str:
    if w["phase"] == START_UP:
        return START_UP
    parts = [f"round {w['round']}"] if "round" in w else []
    if w["phase"] == "batch":
        parts += [f"epoch {w['epoch']}", f"batch {w['batch']}"]
    elif w["phase"] == "epoch_end":
        parts += [f"after epoch {w['epoch']}"]
    elif w["phase"] in ("train", "checkpoint") and (w.get("epoch") or w.get("batch")):
        # a position: epochs done, batches done in the next epoch
        parts += [f"epoch {w['epoch'] + 1}, batch {w['batch']}" if w["batch"] else f"after epoch {w['epoch']}"]
    elif w["phase"] == "checkpoint":
        parts += ["its start"]
    return f"{w['phase']} ({', '.join(parts)})" if parts else w["phase"]


def run(workdir: str) -> subprocess.CompletedProcess:
    return subprocess.run(PROGRAM + ["--workdir", workdir], cwd=ROOT, env=ENV, text=True, capture_output=True)


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
        with np.load(t) as z:
            tickets[os.path.basename(t)] = {k: z[k].tobytes() for k in z.files if k != "__meta__"}
    return {"runs": runs, "tickets": tickets}


def newest_checkpoint(workdir: str) -> str | None:
    steps = [d for d in glob.glob(os.path.join(workdir, "checkpoints", "*")) if os.path.basename(d).isdigit()]
    return max(steps, key=lambda d: int(os.path.basename(d))) if steps else None


def writing(workdir: str) -> bool:
    return bool(glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*")))


def can_mount() -> bool:
    d = tempfile.mkdtemp()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", d])
    os.rmdir(d)
    return ok


# -- aiming -------------------------------------------------------------------------------------
def draw_target(rng: random.Random, reference: list[dict], start_up: bool, after: int = 0) -> int | None:
    """A phase of the uninterrupted run, as an index into its phases: the phase name first (each
    equally likely, "start-up" among them when ``start_up``), then one of its occurrences at or
    after index ``after``. None means start-up."""
    names = sorted({e["phase"] for e in reference[after:]}) + ([START_UP] if start_up else [])
    name = rng.choice(names)
    if name == START_UP:
        return None
    return rng.choice([i for i, e in enumerate(reference) if i >= after and e["phase"] == name])


def first_checkpoint_index(reference: list[dict]) -> int:
    """The first phase after the first checkpoint (every 5 steps: round 0, epoch 1, batch 5)."""
    return next(i for i, e in enumerate(reference) if e["phase"] == "batch" and e["batch"] >= 6)


# -- the faults ---------------------------------------------------------------------------------
def signal_at(workdir: str, base: str, target: int | None, start_up_seconds: float, signum) -> dict:
    c = Child(workdir, os.path.join(base, "progress.jsonl"))
    landed = c.wait_for(target, start_up_seconds)
    if landed:
        c.send(signum)
    return {"landed": landed, **c.finish()}


def kill_in_write(workdir: str, base: str, target: int) -> dict:
    c = Child(workdir, os.path.join(base, "progress.jsonl"))
    landed = c.wait_for(target) and c.wait_for(target, check=lambda: writing(workdir))
    if landed:
        c.send(signal.SIGKILL)
    return {"landed": landed, **c.finish()}


def damage_newest(workdir: str, base: str, target: int, how: str) -> dict:
    info = signal_at(workdir, base, target, 0.0, signal.SIGKILL)
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


def start_twice(workdir: str, base: str, target: int) -> dict:
    c = Child(workdir, os.path.join(base, "progress.jsonl"))
    landed = c.wait_for(target)
    c.at_signal = where(c.poll_events())
    second = run(workdir) if landed else None
    landed = landed and c.p.poll() is None  # the first still ran when the second was refused
    first = c.finish()
    info = {"landed": landed, **first, "first_exit": first["exit"]}
    if second is not None:
        line = second.stderr.strip()
        info.update(second_exit=second.returncode, second_line=line[:500],
                    refused=second.returncode == 2 and "\n" not in line and "Traceback" not in line
                    and f"host {socket.gethostname()}, pid {c.p.pid}" in line)
    return info


def disk_full(workdir: str, base: str, rng: random.Random) -> dict:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={rng.randint(400, 900)}k", "tmpfs", workdir], check=True)
    c = Child(workdir, os.path.join(base, "progress.jsonl"))
    info = c.finish()
    return {"landed": info["exit"] != 0, **info}


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
        return False, manual
    return False, manual


def trial(fault: str, base: str, rng: random.Random, reference_events: list[dict], start_up_seconds: float) -> dict:
    workdir = os.path.join(base, "w")
    os.makedirs(workdir)
    mounted = False
    aim = None
    try:
        if fault == "disk_full":
            mounted = True
            info = disk_full(workdir, base, rng)
        elif fault in ("sigkill", "sigterm"):
            aim = draw_target(rng, reference_events, start_up=True)
            seconds = rng.uniform(0.1, 0.9) * start_up_seconds if aim is None else 0.0
            info = signal_at(workdir, base, aim, seconds, signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
        elif fault == "sigkill_in_write":
            aim = draw_target(rng, reference_events, start_up=False)
            info = kill_in_write(workdir, base, aim)
        elif fault == "concurrent_start":
            # early enough that the second program is through its start-up while the first trains
            aim = draw_target(rng, reference_events[:len(reference_events) // 3], start_up=False)
            info = start_twice(workdir, base, aim)
        else:
            aim = draw_target(rng, reference_events, start_up=False, after=first_checkpoint_index(reference_events))
            info = damage_newest(workdir, base, aim, "truncate" if fault == "truncate_newest" else "delete")
        if fault == "disk_full":
            info["aimed_at"] = "not aimed: the disk fills where it fills"
        else:
            info["aimed_at"] = START_UP if aim is None else describe(where(reference_events[:aim + 1]))
        info["hit"], info["ended"] = describe(info["where"]), describe(info["ended"])
        # start-up: before the run's training began (the program starting, or "prepare": data, model
        # and workdir claim done, nothing trained yet); mid-run: from the first training phase on
        info["mid_run"] = info["landed"] and info["where"]["phase"] not in (START_UP, "prepare")
        before = {r["round"] for r in outcome(workdir)["runs"]}
        log: list = []
        resumed, manual = resume(workdir, log)
        after = outcome(workdir)
        failures = [r["line"] for r in log if r["exit"] != 0]
        if info["exit"] > 0 and fault != "concurrent_start":
            failures += info["stderr"]
        if fault == "concurrent_start" and "second_line" in info:
            failures.append(info["second_line"])
        clear = all(line.startswith(("error: ", "stopped by ")) for line in failures) and not info["traceback"]
        if fault == "sigterm" and info["landed"] and info["where"]["phase"] != START_UP:
            # stops with one line at the next training step, or finishes if no training is left
            clear = clear and info["exit"] in (0, 143)
        if fault == "concurrent_start":
            clear = clear and info.get("refused", False) and info["first_exit"] == 0
        return {"fault": fault, **info, "resumed": resumed, "manual_steps": manual, "reruns": log,
                "clear_lines": clear, "rounds_lost": len(before - {r["round"] for r in after["runs"]}),
                "after": after}
    finally:
        if mounted:
            subprocess.run(["umount", workdir])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3, help="trials per fault")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fault_injection"))
    p.add_argument("--code", help="the commit under test (default: git rev-parse HEAD here)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the table from OUT.json's trials")
    args = p.parse_args()
    if args.report_only:
        report_only(args.out)
        return
    code = args.code or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip() or "unknown"
    rng = random.Random(args.seed)
    faults = args.faults.split(",")
    if "disk_full" in faults and not can_mount():
        print("disk_full skipped: no permission to mount a tmpfs here", file=sys.stderr)
        faults.remove("disk_full")

    t_all = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        # the uninterrupted run, through the program and through the child (which records its phases)
        reference_dir = os.path.join(tmp, "reference")
        out = run(reference_dir)
        if out.returncode != 0:
            sys.exit(f"the uninterrupted run failed: {out.stderr[-2000:]}")
        reference = outcome(reference_dir)
        os.makedirs(os.path.join(tmp, "timing"))
        t0 = time.time()
        c = Child(os.path.join(tmp, "timing", "w"), os.path.join(tmp, "timing", "progress.jsonl"))
        timing = c.finish()
        seconds = time.time() - t0
        if timing["exit"] != 0 or outcome(os.path.join(tmp, "timing", "w")) != reference:
            sys.exit(f"the child's uninterrupted run differs from the program's: {timing}")
        events = c.events
        start_up_seconds = seconds * 0.3  # only for aiming at start-up; where a fault hit is read, not guessed
        print(f"uninterrupted run: {seconds:.1f} s, {len(events)} phases, rounds "
              f"{[r['round'] for r in reference['runs']]}", flush=True)
        trials = []
        for fault in faults:
            for k in range(args.trials):
                result = trial(fault, os.path.join(tmp, f"{fault}_{k}"), rng, events, start_up_seconds)
                result["identical"] = result.pop("after") == reference
                trials.append(result)
                print(json.dumps({k: v for k, v in result.items() if k not in ("reruns", "where")}), flush=True)

    command = " ".join(["train/imp.py", *FLAGS])
    meta = {"command": command, "code": code,
            "benchmark": f"python benchmarks/fault_injection.py --trials {args.trials} --seed {args.seed}",
            "uninterrupted_seconds": seconds, "phases": len(events), "total_seconds": time.time() - t_all}
    write_report(args.out, meta, faults, trials)


def write_report(out: str, meta: dict, faults: list[str], trials: list[dict]) -> None:
    """OUT.json (every trial, rows per fault) and OUT.md (the table)."""
    for t in trials:
        t["hit"] = describe(t["where"])
    rows = []
    for fault in faults:
        ts = [t for t in trials if t["fault"] == fault]
        rows.append({"fault": fault, "trials": len(ts), "landed": sum(t["landed"] for t in ts),
                     "start_up": sum(t["landed"] and not t["mid_run"] for t in ts),
                     "mid_run": sum(t["mid_run"] for t in ts),
                     "resumed": sum(t["resumed"] for t in ts), "identical": sum(t["identical"] for t in ts),
                     "rounds_lost": sum(t["rounds_lost"] for t in ts),
                     "clear_lines": sum(t["clear_lines"] for t in ts),
                     "manual_steps": sum(t["manual_steps"] for t in ts),
                     "hit": [t["hit"] for t in ts]})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump({**meta, "rows": rows, "trials": trials}, f, indent=2)
    lines = ["| fault | trials | landed | in start-up | mid-run | where it hit | resumed | results identical | "
             "finished rounds lost | every failure one clear line | manual steps (as the error line said) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['fault']} | {r['trials']} | {r['landed']} | {r['start_up']} | {r['mid_run']} | "
              f"{'; '.join(r['hit'])} | {r['resumed']} | {r['identical']} | {r['rounds_lost']} | "
              f"{r['clear_lines']} | {r['manual_steps']} |" for r in rows]
    with open(out + ".md", "w") as f:
        f.write(f"Fault injection on `{meta['command']}` at {meta['code']} (uninterrupted: "
                f"{meta['uninterrupted_seconds']:.0f} s, {meta['phases']} phases), `{meta['benchmark']}`\n\n"
                + "\n".join(lines) + "\n")
    print("\n".join(lines))


def report_only(out: str) -> None:
    """Rewrites OUT.md and OUT.json's rows from the trials OUT.json holds (no run)."""
    with open(out + ".json") as f:
        saved = json.load(f)
    trials = saved.pop("trials")
    saved.pop("rows")
    faults = list(dict.fromkeys(t["fault"] for t in trials))
    write_report(out, saved, faults, trials)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
