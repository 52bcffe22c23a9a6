"""One comparison of pruning methods on digits (issue 22 item 5), generalising benchmarks/lottery_digits.py.

The lottery experiment's setting: the digits CNN at width 0.5 (16-32-64 channels), T = 2, the digits
preset of an IMP round (8 epochs, SGD lr 0.1, batch 64). Per seed, every method is run on the same
seed (the same initial weights where a method starts from trained weights of its own), at matched
connection sparsity: the levels IMP reaches at 60 % per round, rounds ``LEVELS`` (84 %, 93.6 %, 97.4 %):

    imp          IMP (magnitude), rewind to epoch 2, rounds 0..4: one run gives every level
    sf1          SF-IMP-1 (the SF criterion, matched scope), the same rounds
    snip_<k>     SNIP at initialisation (|w dL/dw| on 10 batches, global ranking), mask fixed, 8 epochs
    random_<k>   random pruning at initialisation (ERK per-layer counts), mask fixed, 8 epochs
    edge_popup_<k>  edge-popup: scores of the frozen initial weights trained (ERK targets; its preset's
                 lr 0.3 and non-affine BN), 8 epochs
    set_<k>, rigl_<k>  SET / RigL from scratch (ERK, drop fraction 0.3 cosine-decayed, updates every 10
                 steps up to 75 % of training), 8 epochs
    energy_<k>   the SynOps-budget variant of Shi et al.'s mask learning (train/sparse_training.py --algorithm
                 energy), its SynOps budget the measured SynOps per image of the same seed's IMP ticket of
                 level k (an upper bound, not a match);
    shi_<k>      Shi et al.'s mask learning as published (train/shi.py: per-position neuron masks, fixed lambda):
                 no budget, so its lambda per level is chosen once on seed 0 (``calibrate``: a grid of lambdas,
                 interpolated in log-log to seed 0's IMP SynOps at the level) and used on every seed; its
                 SynOps are measured, near IMP's rather than matched

Every ticket's SynOps per image is measured by its cost pass over the test set (``jsnn.efficiency``,
the runs' ``efficiency`` entries). Training budget: an IMP ticket of level k is trained for (k + 1)
rounds of 8 epochs (round 0 dense, then rounds 1..k); every other method trains 8 epochs (one IMP
round), from initialisation, the energy budget and Shi 8 search epochs and their finetune (5). With
``--schedule matched`` every one-shot method is given IMP's epochs at the level instead ((k + 1) x 8, the mask
searches' finetune included; run directories ``<method>_<k>_matched``), so accuracy at equal training is
separated from cost. The summary records the commit, the command and each run's details (``runs``: MACs per
image, per-layer sparsity, and the mask searches' search entry, cuts and connectivity).

    python benchmarks/methods_digits.py calibrate --workdir /tmp/methods_digits   # Shi's lambda per level
    python benchmarks/methods_digits.py run --workdir /tmp/methods_digits --seeds 0,1,2,3,4,5,6,7 --workers 2
    python benchmarks/methods_digits.py run --workdir /tmp/methods_digits --seeds 0,1,2,3,4,5,6,7 --workers 2 \\
        --schedule matched
    python benchmarks/methods_digits.py report --workdir /tmp/methods_digits --out docs/results/methods_digits
    python benchmarks/methods_digits.py report --from-summary docs/results/methods_digits/summary.json \\
        --out docs/results/methods_digits

``run`` is resumable (finished runs are skipped, a killed one continues from its checkpoint). ``report``
writes summary.json, table.md and the figures from the seeds on which every reported run has finished;
``--from-summary`` recomputes the statistics and table.md from a summary.json alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import git_commit  # noqa: E402

WIDTH, TIMESTEPS, PRUNE_RATE, EPOCHS = 0.5, 2, 0.6, 8  # the lottery experiment's (benchmarks/lottery_digits.py)
LEVELS = (2, 3, 4)  # IMP rounds whose sparsity every method is run at: 1 - 0.4^k
IMP_ROUNDS = max(LEVELS) + 1
ONE_SHOT = ("snip", "random", "edge_popup", "set", "rigl", "energy", "shi")  # one run per level
LABELS = {"imp": "IMP (magnitude)", "sf1": "SF-IMP-1", "snip": "SNIP (at init)", "random": "random (at init)",
          "edge_popup": "edge-popup", "set": "SET", "rigl": "RigL", "energy": "SynOps-budget variant",
          "shi": "Shi et al. (position masks)"}
METHODS = tuple(LABELS)
SEGMENTS = {"imp": IMP_ROUNDS, "sf1": IMP_ROUNDS, "energy": 2, "shi": 2}  # results entries of a finished run (energy
#                                                              and Shi: search, finetune); the others one
MASK_SEARCH = ("energy", "shi")  # run as programs: search epochs (--epochs) then their preset's finetune epochs
FINETUNE_EPOCHS = 5  # the digits preset's finetune of both (jsnn.config.ENERGY_PRESETS, SHI_PRESETS)
SCHEDULES = ("base", "matched")
# Shi et al.'s method has no budget: its lambda sets the sparsity. The grid its lambda per level is chosen from
# (``calibrate``): seed 0 at each, the level's lambda interpolated (log lambda against log SynOps) to seed 0's IMP
# ticket's SynOps, then used on every seed.
SHI_LAMBDA_GRID = (3e-8, 1e-7, 3e-7, 1e-6, 3e-6, 1e-5)


PLANNED = (("energy", "snip"), ("shi", "energy"))  # (method, against): the paired comparisons besides IMP's


def level_sparsity(k: int) -> float:
    return 1.0 - (1.0 - PRUNE_RATE) ** k


def run_name(method: str, k: int | None = None, schedule: str = "base") -> str:
    if method in ("imp", "sf1"):
        return method
    return f"{method}_{k}" + ("_matched" if schedule == "matched" else "")


def epochs_of(method: str, k: int, schedule: str) -> int:
    """Training epochs of a one-shot run at level k: one IMP round (base) or all k + 1 rounds IMP's ticket of
    level k trained (matched); the mask searches' total includes their finetune (search = total - finetune;
    base: 8 search epochs and the finetune, as the programs' --epochs 8)."""
    total = EPOCHS * (k + 1) if schedule == "matched" else EPOCHS
    if method in MASK_SEARCH:
        return total + FINETUNE_EPOCHS if schedule == "base" else total
    return total


# -- running ---------------------------------------------------------------------------------------------


def synops_of(results: dict, entry_index: int) -> float:
    return float(results["runs"][entry_index]["efficiency"]["synops_per_image"])


def shi_lambdas(workdir: str) -> dict[str, float]:
    path = os.path.join(workdir, "shi_lambda.json")
    if not os.path.exists(path):
        raise SystemExit(f"no {path}: run `python benchmarks/methods_digits.py calibrate --workdir {workdir}` first")
    with open(path) as f:
        return json.load(f)["lambda"]


def run_seed(workdir: str, seed: int, methods: tuple[str, ...], schedule: str = "base") -> None:
    import jax

    from jsnn import xla_flags

    xla_flags.configure()  # jsnn's CPU convolutions, as the programs run them, before JAX starts
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    from jsnn import data as jdata
    from jsnn.config import TrainConfig
    from jsnn.metrics import read_json
    from jsnn.models import build_model
    from jsnn.runs import edge_popup, imp, sparse_training
    from jsnn.runs.outputs import Outputs
    from jsnn.trainer import Trainer

    outputs = Outputs(plots=False, cost_report=True)  # every ticket's SynOps from its cost pass
    common = dict(dataset="digits", width=WIDTH, timesteps=TIMESTEPS, seed=seed, epochs=EPOCHS, progress=False,
                  checkpoint_every=8, eval_every=8)
    config = TrainConfig(**common).resolve("imp")
    dataset = jdata.load_dataset("digits")
    trainers = {}

    def trainer_for(c):
        key = json.dumps(c.to_dict(), sort_keys=True)
        if key not in trainers:
            trainers[key] = Trainer(c, build_model(c, dataset.num_classes), dataset)
        return trainers[key]

    base = os.path.join(workdir, f"seed_{seed}")
    log_path = os.path.join(workdir, "wall_times.jsonl")

    def timed(name, fn):
        out = os.path.join(base, name)
        done = read_json(os.path.join(out, "results.json"))
        if done and len(done.get("runs", ())) >= SEGMENTS.get(name.split("_")[0], 1):
            return done
        t0 = time.time()
        results = fn(out)
        with open(log_path, "a") as f:
            record = {"seed": seed, "run": name, "seconds": time.time() - t0, "finished": time.time()}
            f.write(json.dumps(record) + "\n")
        return results

    for name, criterion in (("imp", "magnitude"), ("sf1", "sf")):
        if name in methods:
            options = imp.IMPOptions(rounds=IMP_ROUNDS, prune_rate=PRUNE_RATE, criterion=criterion)
            timed(name, lambda out, o=options: imp.run(config, o, out, trainer=trainer_for(config),
                                                             outputs=outputs))
    for k in LEVELS:
        s = level_sparsity(k)
        sparse_config = TrainConfig(**{**common, "epochs": epochs_of("snip", k, schedule)}).resolve("sparse_training")
        popup_config = TrainConfig(**{**common, "epochs": epochs_of("edge_popup", k, schedule)}).resolve("edge_popup")
        for method in ("snip", "random", "set", "rigl"):
            if method not in methods:
                continue
            if method in ("snip", "random"):
                options = sparse_training.SparseTrainingOptions(algorithm="static", criterion=method, sparsity=s,
                                                                distribution="global" if method == "snip" else "erk")
            else:
                options = sparse_training.SparseTrainingOptions(algorithm=method, sparsity=s, distribution="erk")
            timed(run_name(method, k, schedule), lambda out, o=options, c=sparse_config: sparse_training.run(
                c, o, out, trainer=trainer_for(c), outputs=outputs))
        if "edge_popup" in methods:
            options = edge_popup.EdgePopupOptions(sparsities=(s,), distribution="erk")

            def popup(out, o=options, s=s, c=popup_config):
                entry = edge_popup.run_level(c, out, s, o, trainer_for(c), outputs=outputs)
                return {"runs": [entry]}

            timed(run_name("edge_popup", k, schedule), popup)
    for method in MASK_SEARCH:
        if method not in methods:
            continue
        imp_results = read_json(os.path.join(base, "imp", "results.json"))
        lambdas = shi_lambdas(workdir) if method == "shi" else None
        for k in LEVELS:
            search_epochs = epochs_of(method, k, schedule) - FINETUNE_EPOCHS
            if method == "energy":
                program = ["sparse_training.py", "--algorithm", "energy",
                           "--synops-budget", f"{synops_of(imp_results, k):.1f}"]
            else:
                program = ["shi.py", "--penalty-lambda", f"{lambdas[str(k)]:.4g}"]

            def mask_search(out, program=program, search_epochs=search_epochs):
                run_mask_search(program, seed, search_epochs, out)
                return read_json(os.path.join(out, "results.json"))

            timed(run_name(method, k, schedule), mask_search)


def run_mask_search(program: list[str], seed: int, search_epochs: int, out: str) -> None:
    """``python train/<program[0]> program[1:]`` on the comparison's network and seed: ``search_epochs`` of
    search, then the digits preset's finetune, into ``out``."""
    argv = [sys.executable, os.path.join(ROOT, "train", program[0]), *program[1:], "--dataset", "digits",
            "--width", str(WIDTH), "-T", str(TIMESTEPS), "--epochs", str(search_epochs),
            "--finetune-epochs", str(FINETUNE_EPOCHS), "--seed", str(seed), "--workdir", out, "--no-progress",
            "--no-plots"]
    subprocess.run(argv, cwd=ROOT, check=True)


def calibrate(workdir: str) -> dict:
    """Shi et al.'s lambda per level: seed 0 at every lambda of SHI_LAMBDA_GRID (base schedule), each level's
    lambda interpolated in log-log to seed 0's IMP ticket's SynOps; written to WORKDIR/shi_lambda.json."""
    from jsnn.metrics import read_json

    run_seed(workdir, 0, ("imp",))
    imp_results = read_json(os.path.join(workdir, "seed_0", "imp", "results.json"))
    grid = []
    for lam in SHI_LAMBDA_GRID:
        out = os.path.join(workdir, "calibration", f"shi_{lam:g}")
        if len((read_json(os.path.join(out, "results.json")) or {}).get("runs", ())) < SEGMENTS["shi"]:
            run_mask_search(["shi.py", "--penalty-lambda", f"{lam:g}"], 0, EPOCHS, out)
        r = read_json(os.path.join(out, "results.json"))
        grid.append({"lambda": lam, "synops": synops_of(r, -1), "accuracy": r["runs"][-1]["test_accuracy"],
                     "sparsity": r["runs"][-1]["sparsity"]})
    targets = {str(k): synops_of(imp_results, k) for k in LEVELS}
    lambdas = {k: shi_lambda_for(t, grid) for k, t in targets.items()}
    out = {"lambda": lambdas, "targets": targets, "grid": grid, "seed": 0, "commit": git_commit(),
           "rule": "log lambda interpolated linearly against log SynOps between the grid's neighbours "
                   "(SynOps falling with lambda); outside the grid, its nearest end"}
    with open(os.path.join(workdir, "shi_lambda.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def shi_lambda_for(target: float, grid: list[dict]) -> float:
    """The lambda whose SynOps would be ``target``, interpolated in log-log between the grid's points (sorted by
    lambda, SynOps made non-increasing by a running minimum); the grid's end lambda outside its range."""
    pts = sorted(grid, key=lambda g: g["lambda"])
    lam = np.log([g["lambda"] for g in pts])
    syn = np.log(np.maximum(np.minimum.accumulate([max(g["synops"], 1e-9) for g in pts]), 1e-9))
    t = np.log(target)
    if t >= syn[0]:
        return float(pts[0]["lambda"])
    if t <= syn[-1]:
        return float(pts[-1]["lambda"])
    # np.interp needs increasing x: SynOps fall as lambda rises
    return float(np.exp(np.interp(t, syn[::-1], lam[::-1])))


def run_all(workdir: str, seeds: list[int], workers: int, methods: tuple[str, ...], schedule: str = "base") -> None:
    os.makedirs(workdir, exist_ok=True)
    if "shi" in methods:
        shi_lambdas(workdir)  # stop before anything runs when the calibration is missing
    t0 = time.time()
    groups = [seeds[i::workers] for i in range(workers)]
    procs = [subprocess.Popen([sys.executable, __file__, "_worker", "--workdir", workdir, "--methods",
                               ",".join(methods), "--seeds", ",".join(map(str, g)), "--schedule", schedule])
             for g in groups if g]
    codes = [p.wait() for p in procs]
    with open(os.path.join(workdir, "wall_times.jsonl"), "a") as f:
        f.write(json.dumps({"all": seeds, "workers": workers, "methods": list(methods), "schedule": schedule,
                            "seconds": time.time() - t0, "codes": codes, "commit": git_commit()}) + "\n")
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")


# -- collecting ----------------------------------------------------------------------------------------------


def training_seconds(records: list[dict]) -> list[float]:
    """Per-epoch training seconds of one run (metrics.jsonl order). A process's first epoch of a method
    includes compiling its step: it counts as the run's median epoch (as benchmarks/lottery_digits.py)."""
    secs = [float(r["seconds"]) for r in records]
    if secs:
        secs[0] = float(np.median(secs))
    return secs


DETAILS = ("layer_sparsity", "within_budget", "synops_budget", "synops_per_image", "synops_measured_on", "lambda",
           "repairs", "disconnected_layers", "silent_layers", "removed_channels", "penalty_lambda",
           "connection_fraction", "neuron_fraction", "empty_layers")


def run_details(entry: dict, search: dict | None = None) -> dict:
    """What a ticket's results entry says beyond the tables: the encoding layer's MACs per image, per-layer
    sparsity, and the energy budget's search entry, cuts and connectivity (where the entry has them)."""
    out = {"macs_per_image": entry.get("efficiency", {}).get("macs_per_image")}
    out.update({k: entry[k] for k in DETAILS if k in entry})
    if search is not None:
        out["search"] = {k: v for k, v in search.items() if k not in ("efficiency",)}
    return out


def run_signature(workdir: str, seed: int, method: str, k: int, schedule: str) -> dict | None:
    """The ``signature`` of a run's config.json (an edge-popup level's is in its sparsity folder)."""
    d = os.path.join(workdir, f"seed_{seed}", run_name(method, k, schedule))
    for path in (os.path.join(d, "config.json"), os.path.join(d, f"sparsity_{level_sparsity(k):.2f}", "config.json")):
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f).get("signature")
    return None


def collect(workdir: str, seed: int, schedule: str = "base") -> dict:
    """{method: {level k: {accuracy, sparsity, synops, epochs, seconds}}} of one seed's finished runs."""
    from jsnn.metrics import read_json, read_jsonl

    base = os.path.join(workdir, f"seed_{seed}")
    out = {}
    for method in ("imp", "sf1"):
        d = os.path.join(base, method)
        r = read_json(os.path.join(d, "results.json"))
        if not r or len(r["runs"]) < IMP_ROUNDS:
            continue
        records = read_jsonl(os.path.join(d, "metrics.jsonl"))
        secs = training_seconds(records)
        per_round_s = [sum(t for x, t in zip(records, secs) if x.get("round", 0) == k) for k in range(IMP_ROUNDS)]
        per_round_e = [sum(1 for x in records if x.get("round", 0) == k) for k in range(IMP_ROUNDS)]
        out[method] = {k: {"accuracy": r["runs"][k]["test_accuracy"], "sparsity": r["runs"][k]["sparsity"],
                           "synops": synops_of(r, k), "epochs": sum(per_round_e[:k + 1]),
                           "seconds": sum(per_round_s[:k + 1]), "details": run_details(r["runs"][k])}
                       for k in range(IMP_ROUNDS)}
    for method in ONE_SHOT:
        for k in LEVELS:
            d = os.path.join(base, run_name(method, k, schedule))
            if method == "edge_popup":
                d = os.path.join(d, f"sparsity_{level_sparsity(k):.2f}")
            r = read_json(os.path.join(d, "results.json"))
            if not r or not r.get("runs"):
                continue
            e = r["runs"][-1]  # energy: the last phase's entry is the ticket
            records = read_jsonl(os.path.join(d, "metrics.jsonl"))
            # energy's search and finetune train different steps: each phase's first epoch compiles its own
            phases = sorted({x.get("round", 0) for x in records})
            seconds = sum(sum(training_seconds([x for x in records if x.get("round", 0) == p])) for p in phases)
            out.setdefault(method, {})[k] = {
                "accuracy": e["test_accuracy"], "sparsity": e["sparsity"], "synops": synops_of(r, -1),
                "epochs": len(records), "seconds": seconds,
                "scoring_seconds": e.get("scoring_seconds"),
                "details": run_details(e, r["runs"][0] if method in MASK_SEARCH else None)}
    # static pruning's scoring pass: the same computation at every level (one gradient pass, another top-k); the
    # first level a process runs also compiles it, so each level is charged the seed's fastest one
    for method in ("snip", "random"):
        levels = out.get(method, {})
        timed = [v["scoring_seconds"] for v in levels.values() if v["scoring_seconds"] is not None]
        for v in levels.values():
            v["seconds"] += min(timed) if timed else 0.0
    for levels in out.values():
        for v in levels.values():
            v.pop("scoring_seconds", None)
    return out


# -- statistics and the report -------------------------------------------------------------------------------

STATISTICS = ("per seed, accuracy as the integer count of correct test images; mean with its 95 % Student-t "
              "interval over seeds; paired differences against IMP (magnitude) at the same level, in images and "
              "points: mean [95 % t interval], seeds ahead/tied/behind, exact two-sided Wilcoxon signed-rank p by "
              "enumeration of all sign flips (zeros dropped, ties at their average rank) and Holm's adjustment over "
              "all the p-values of the paired table (jsnn.statistics)")


def digits_test_size() -> int:
    from jsnn import data as jdata

    return len(jdata.load_dataset("digits").test_labels)


def paired_cell(correct: list[int], against: list[int], points: float) -> dict:
    """One paired comparison of per-seed correct counts (``jsnn.statistics.paired``), in points and images;
    its Holm-adjusted p is filled in over its family."""
    from jsnn import statistics as st

    r = st.paired(np.array(correct), np.array(against))
    return {"mean": points * r["mean"], "ci95": [points * x for x in r["ci95"]], "mean_images": r["mean"],
            "wilcoxon_p": r["wilcoxon_p"], "wilcoxon_p_holm": None, "sign_flip_p": r["sign_flip_p"],
            "ahead": r["ahead"], "tied": r["tied"], "behind": r["behind"], "per_seed_images": r["per_seed"]}


def restate(summary: dict, n_test: int) -> dict:
    """``summary`` with its statistics recomputed from its per-seed accuracies and SynOps."""
    from jsnn import statistics as st

    S = dict(summary)
    S["n_test"], S["statistics"] = n_test, STATISTICS
    points = 100.0 / n_test
    S["correct"], S["mean"], S["ci95"] = {}, {}, {}
    for m, levels in S["accuracy"].items():
        S["correct"][m], S["mean"][m], S["ci95"][m] = {}, {}, {}
        for k, acc in levels.items():
            counts = st.accuracy_counts(acc, n_test)
            mean, lo, hi = st.t_interval(counts)
            S["correct"][m][k] = counts.tolist()
            S["mean"][m][k], S["ci95"][m][k] = points * mean, [points * lo, points * hi]
    paired = {}
    for m in S["accuracy"]:
        if m == "imp":
            continue
        rows = []
        for k in map(str, S["levels"]):
            if k not in S["correct"][m]:
                continue
            rows.append({"level": int(k), **paired_cell(S["correct"][m][k], S["correct"]["imp"][k], points)})
        paired[m] = rows
    cells = [e for rows in paired.values() for e in rows]
    for e, q in zip(cells, st.holm([e["wilcoxon_p"] for e in cells])):
        e["wilcoxon_p_holm"] = float(q)
    S["paired"] = paired
    # comparisons asked of the SynOps-budget variant apart from the table against IMP (issue 32): against SNIP at
    # the same level (its budget at IMP's SynOps, where SNIP has IMP's sparsity), and Shi et al. against it (both
    # near IMP's SynOps); one Holm family of their own
    planned = []
    for a, b in PLANNED:
        if a not in S["correct"] or b not in S["correct"]:
            continue
        for k in map(str, S["levels"]):
            planned.append({"method": a, "against": b, "level": int(k),
                            **paired_cell(S["correct"][a][k], S["correct"][b][k], points)})
    for e, q in zip(planned, st.holm([e["wilcoxon_p"] for e in planned])):
        e["wilcoxon_p_holm"] = float(q)
    S["planned"] = planned
    n = len(S["seeds"])
    S["smallest_p"] = {"wilcoxon_two_sided": 2.0 / 2 ** n, "tests": len(cells),
                       "smallest_holm": min(1.0, len(cells) * 2.0 / 2 ** n)}
    return S


def report(workdir: str, out: str, schedule: str = "base") -> dict:
    seeds = sorted(int(d.split("_")[1]) for d in os.listdir(workdir) if d.startswith("seed_"))
    data = {s: collect(workdir, s, schedule) for s in seeds}
    methods = [m for m in METHODS if any(m in data[s] for s in seeds)]
    # a method is reported on the seeds where IMP and it finished every level
    complete = [s for s in seeds if "imp" in data[s]]
    if not complete:
        raise SystemExit(f"no seed in {workdir} has finished IMP yet")

    def has_all(m, s):
        return m in data[s] and all(k in data[s][m] for k in LEVELS)

    # the seeds every reported method finished (the paired tests need the same seeds)
    methods = [m for m in methods if all(has_all(m, s) for s in complete)]
    summary = {"seeds": complete, "width": WIDTH, "timesteps": TIMESTEPS, "prune_rate": PRUNE_RATE,
               "epochs_per_run": EPOCHS, "levels": list(LEVELS),
               "level_sparsity": {str(k): level_sparsity(k) for k in LEVELS},
               "methods": methods, "labels": {m: LABELS[m] for m in methods}, "accuracy": {}, "sparsity": {},
               "synops": {}, "epochs": {}, "seconds": {}, "imp_rounds": {}, "commit": git_commit(),
               "schedule": schedule, "command": command(complete, schedule), "runs": {}}
    for m in methods:
        for field in ("accuracy", "sparsity", "synops", "epochs", "seconds"):
            summary[field][m] = {str(k): [data[s][m][k][field] for s in complete] for k in LEVELS}
        summary["runs"][m] = {str(k): [data[s][m][k]["details"] for s in complete] for k in LEVELS}
    # every setting each method ran with (its run signature: lr, batch, rewind epoch, SNIP's batches, RigL's drop
    # schedule, ...), read from the first seed's run at the first level; the seed and the level-dependent
    # settings (sparsity, budget, lambda) are listed per run in ``runs``
    summary["settings"] = {m: run_signature(workdir, complete[0], m, LEVELS[0], schedule) for m in methods}
    for m in ("imp", "sf1"):  # every round of the IMP runs: the curves of the figures
        if m in methods:
            summary["imp_rounds"][m] = {field: {str(k): [data[s][m][k][field] for s in complete]
                                                for k in range(IMP_ROUNDS)}
                                        for field in ("accuracy", "sparsity", "synops", "epochs", "seconds")}
    wall = os.path.join(workdir, "wall_times.jsonl")
    if os.path.exists(wall):
        with open(wall) as f:
            records = [json.loads(line) for line in f if line.strip()]
        summary["wall_times"] = [r for r in records if "all" in r and r.get("schedule", "base") == schedule]
        # the code the runs ran (each batch's commit; "commit" is the report's)
        summary["run_commits"] = sorted({r["commit"] for r in summary["wall_times"] if "commit" in r})
        runs = [r for r in records if "run" in r and r["run"].endswith("_matched") == (schedule == "matched")]
        if runs:  # first start to last finish of the runs (workers ran side by side)
            summary["wall_span_seconds"] = max(r["finished"] for r in runs) - min(r["finished"] - r["seconds"]
                                                                                 for r in runs)
    summary["machine"] = MACHINE
    calibration = os.path.join(workdir, "shi_lambda.json")
    if "shi" in methods and os.path.exists(calibration):
        with open(calibration) as f:
            summary["shi_lambda"] = json.load(f)
    summary = restate(summary, digits_test_size())
    write(summary, out)
    return summary


MACHINE = ("this project's 2-core CPU machine (x86_64, AVX-512), other work running beside it at times "
           "(times indicative)")


def command(seeds: list[int], schedule: str) -> str:
    run = (f"python benchmarks/methods_digits.py run --workdir WORK --seeds {','.join(map(str, seeds))} --workers 2"
           + (" --schedule matched" if schedule == "matched" else ""))
    calibrate = "python benchmarks/methods_digits.py calibrate --workdir WORK"
    rep = "python benchmarks/methods_digits.py report --workdir WORK" + (
        " --schedule matched --out docs/results/methods_digits_matched" if schedule == "matched" else "")
    return f"{calibrate}; {run}; {rep}"


def write(summary: dict, out: str, draw: bool = True) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(tables(summary))
    if draw:
        figures(summary, out)


def report_from_summary(path: str, out: str) -> dict:
    with open(path) as f:
        summary = json.load(f)
    summary = restate(summary, summary.get("n_test") or digits_test_size())
    write(summary, out, draw=False)
    return summary


def _mean(v) -> float:
    return float(np.mean(v))


def tables(S: dict) -> str:
    levels = [str(k) for k in S["levels"]]
    head = "| method | " + " | ".join(f"{100 * S['level_sparsity'][k]:.1f} %" for k in levels) + " |\n"
    head += "|---" * (len(levels) + 1) + "|\n"
    n = len(S["seeds"])
    text = (f"Test accuracy (%), mean [95 % t interval] over seeds {S['seeds']} (n = {n}), at each connection "
            f"sparsity (measured sparsity in brackets where it is off the level by more than 0.1 point):\n\n" + head)
    for m in S["methods"]:
        cells = []
        for k in levels:
            lo, hi = S["ci95"][m][k]
            sp = _mean(S["sparsity"][m][k])
            off = f" ({100 * sp:.1f} %)" if abs(sp - S["level_sparsity"][k]) > 1e-3 else ""
            cells.append(f"{S['mean'][m][k]:.1f} [{lo:.1f}, {hi:.1f}]{off}")
        text += f"| {S['labels'][m]} | " + " | ".join(cells) + " |\n"
    cells_n = S["smallest_p"]["tests"]
    text += (f"\nPaired differences against IMP (magnitude) at the same level, in points (1 test image = "
             f"{100 / S['n_test']:.2f} points): mean [95 % t interval]; seeds ahead/tied/behind; exact two-sided "
             f"Wilcoxon signed-rank p and its Holm adjustment over the table's {cells_n} p-values. With n = {n} the "
             f"smallest two-sided p is {S['smallest_p']['wilcoxon_two_sided']:.4f} (every seed on one side), so the "
             f"smallest Holm-adjusted p is {S['smallest_p']['smallest_holm']:.3f}.\n\n")
    text += head.replace("| method |", "| method − IMP |")
    for m, rows in S["paired"].items():
        by = {str(r["level"]): r for r in rows}
        text += f"| {S['labels'][m]} | " + " | ".join(
            f"{by[k]['mean']:+.1f} [{by[k]['ci95'][0]:+.1f}, {by[k]['ci95'][1]:+.1f}] "
            f"{by[k]['ahead']}/{by[k]['tied']}/{by[k]['behind']} (p {by[k]['wilcoxon_p']:.2g}, "
            f"Holm {by[k]['wilcoxon_p_holm']:.2g})" for k in levels) + " |\n"
    text += ("\nSynOps per test image (thousands), mean over seeds, measured by each ticket's cost pass over the "
             "test set (jsnn.efficiency):\n\n" + head)
    for m in S["methods"]:
        text += f"| {S['labels'][m]} | " + " | ".join(f"{_mean(S['synops'][m][k]) / 1e3:.1f}" for k in levels) + " |\n"
    text += ("\nCost to the trained ticket: epochs, and training seconds (per-epoch seconds from metrics.jsonl, the "
             "first epoch of a run, and of the energy budget's finetune phase, counted as its median epoch since it "
             "includes compiling; static pruning adds its scoring pass; IMP and SF-IMP-1 count every round up to "
             "and including the level's), mean over seeds:\n\n"
             + head)
    for m in S["methods"]:
        text += f"| {S['labels'][m]} | " + " | ".join(
            f"{_mean(S['epochs'][m][k]):.0f} ep, {_mean(S['seconds'][m][k]):.0f} s" for k in levels) + " |\n"
    return text


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (fewer SynOps, higher accuracy), by SynOps."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def figures(S: dict, out: str) -> list[str]:
    from jsnn.plots import pyplot, save_figure

    plt = pyplot()

    levels = [str(k) for k in S["levels"]]
    markers = dict(zip(METHODS, "os^vDPXh*"))
    title = (f"digits CNN, width {S['width']}, T = {S['timesteps']}, n = {len(S['seeds'])} seeds")
    paths = []

    # accuracy vs connection sparsity
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=130)
    for m in S["methods"]:
        if m in S.get("imp_rounds", {}):
            R = S["imp_rounds"][m]
            ks = sorted(R["accuracy"], key=int)
            x = [100 * (1 - _mean(R["sparsity"][k])) for k in ks]
            y = [100 * _mean(R["accuracy"][k]) for k in ks]
            ax.plot(x, y, marker=markers[m], ms=4, label=S["labels"][m])
        else:
            x = [100 * (1 - _mean(S["sparsity"][m][k])) for k in levels]
            y = [S["mean"][m][k] for k in levels]
            err = np.array([[S["mean"][m][k] - S["ci95"][m][k][0], S["ci95"][m][k][1] - S["mean"][m][k]]
                            for k in levels]).T
            ax.errorbar(x, y, yerr=err, marker=markers[m], ms=4, capsize=2, label=S["labels"][m])
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("remaining connections (%)")
    ax.set_ylabel("test accuracy (%), mean [95 % t interval]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, os.path.join(out, "accuracy_vs_sparsity.png"), title=title))

    # accuracy vs SynOps, every ticket, with the Pareto front of the per-method means (log axis: tickets left
    # with no connection, 0 SynOps, are named in a note instead)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=130)
    means, empty = [], []
    for m in S["methods"]:
        pts = [(v, 100 * a) for k in levels for v, a in zip(S["synops"][m][k], S["accuracy"][m][k]) if v > 0]
        mean_pts = [(_mean(S["synops"][m][k]), S["mean"][m][k], k) for k in levels]
        empty += [f"{S['labels'][m]} at {100 * S['level_sparsity'][k]:.1f} %: {y:.1f} %"
                  for x, y, k in mean_pts if x == 0]
        mean_pts = [(x, y) for x, y, _ in mean_pts if x > 0]
        (line,) = ax.plot([p[0] for p in mean_pts], [p[1] for p in mean_pts], marker=markers[m], ms=6,
                          label=S["labels"][m])
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, alpha=0.3, marker=markers[m],
                       color=line.get_color())
        means += mean_pts
    front = pareto_front(means)
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front of the means")
    ax.set_xscale("log")
    if empty:
        ax.text(0.98, 0.02, "0 SynOps (no connection left), mean accuracy:\n" + "\n".join(empty),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    ax.set_xlabel("SynOps per test image (measured)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 0.1))
    paths.append(save_figure(fig, os.path.join(out, "accuracy_vs_synops.png"), title=title + ", each ticket a dot"))

    # cost to ticket
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), dpi=130)
    width = 0.8 / len(S["methods"])
    for i, m in enumerate(S["methods"]):
        xs = np.arange(len(levels)) + i * width
        axes[0].bar(xs, [_mean(S["epochs"][m][k]) for k in levels], width, label=S["labels"][m])
        axes[1].bar(xs, [_mean(S["seconds"][m][k]) for k in levels], width, label=S["labels"][m])
    for ax, what in zip(axes, ("epochs", "training seconds")):
        ax.set_xticks(np.arange(len(levels)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{100 * S['level_sparsity'][k]:.1f} %" for k in levels])
        ax.set_ylabel(f"{what} to the trained ticket")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, os.path.join(out, "cost_to_ticket.png"), title=title + ", mean over seeds"))
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["calibrate", "run", "report", "_worker"])
    p.add_argument("--workdir", default="/tmp/methods_digits")
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7")
    p.add_argument("--workers", type=int, default=1, help="processes, each taking every workers-th seed")
    p.add_argument("--methods", default=",".join(METHODS), help=f"a subset of {','.join(METHODS)}")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "methods_digits"))
    p.add_argument("--schedule", choices=SCHEDULES, default="base",
                   help="base: every one-shot run one IMP round of epochs; matched: IMP's epochs at the level")
    p.add_argument("--from-summary", metavar="SUMMARY_JSON",
                   help="report: recompute the statistics and table.md from this summary.json alone")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {','.join(METHODS)}")
    if args.command == "_worker":
        for s in seeds:
            run_seed(args.workdir, s, methods, args.schedule)
    elif args.command == "calibrate":
        print(json.dumps(calibrate(args.workdir), indent=1))
    elif args.command == "run":
        run_all(args.workdir, seeds, args.workers, methods, args.schedule)
    else:
        if args.from_summary:
            report_from_summary(args.from_summary, args.out)
        else:
            report(args.workdir, args.out, args.schedule)
        with open(os.path.join(args.out, "table.md")) as f:
            print(f.read())


if __name__ == "__main__":
    main()
