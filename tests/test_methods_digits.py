"""benchmarks/methods_digits.py's report on hand-made run directories (no training): what it reads from
each method's results.json and metrics.jsonl, the cost to ticket, the paired statistics against IMP
(checked against jsnn.statistics on the counts written here), the Pareto front against a brute-force
one, and the report from a summary.json alone."""
import json
import os

import numpy as np
import pytest

from benchmarks import methods_digits as md
from jsnn import statistics as st

N_TEST = 360
SEEDS = (0, 1, 2)


def write_run(d, entries, epoch_seconds, rounds=None):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump({"runs": entries}, f)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for i, t in enumerate(epoch_seconds):
            record = {"epoch": i % 8 + 1, "seconds": t}
            if rounds is not None:
                record["round"] = rounds[i]
            f.write(json.dumps(record) + "\n")


def entry(correct, sparsity, synops, **more):
    return {"test_accuracy": correct / N_TEST, "sparsity": sparsity, "efficiency": {"synops_per_image": synops},
            **more}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Three seeds of every method; correct counts chosen so that the differences against IMP vary."""
    work = str(tmp_path_factory.mktemp("methods"))
    rng = np.random.default_rng(0)
    counts = {}
    for s in SEEDS:
        base = os.path.join(work, f"seed_{s}")
        for m in ("imp", "sf1"):
            c = [int(x) for x in rng.integers(300, 350, md.IMP_ROUNDS)]
            counts[(m, s)] = c
            secs = [10.0] + [1.0 + 0.1 * i for i in range(8 * md.IMP_ROUNDS - 1)]  # first epoch compiles
            write_run(os.path.join(base, m), [entry(c[k], md.level_sparsity(k), 1000.0 * (5 - k))
                                              for k in range(md.IMP_ROUNDS)],
                      secs, rounds=[i // 8 for i in range(8 * md.IMP_ROUNDS)])
        for m in md.ONE_SHOT:
            for k in md.LEVELS:
                c = int(rng.integers(250, 350))
                counts[(m, s, k)] = c
                d = os.path.join(base, md.run_name(m, k))
                if m == "edge_popup":
                    d = os.path.join(d, f"sparsity_{md.level_sparsity(k):.2f}")
                extra = {"scoring_seconds": 5.0 + k} if m in ("snip", "random") else {}
                entries = [entry(c, md.level_sparsity(k), 700.0 * k, **extra)]
                seconds, rounds = [4.0] + [2.0] * 7, None
                if m in md.MASK_SEARCH:  # the search's entry first, the finetuned ticket last; each phase compiles
                    entries = [entry(10, 0.5, 1e6, phase="search"), entry(c, 0.9, 999.0 + k, phase="finetune")]
                    seconds, rounds = [4.0, 2.0, 2.0, 2.0, 9.0, 2.0, 2.0, 2.0], [0] * 4 + [1] * 4
                write_run(d, entries, seconds, rounds)
    return work, counts


def test_report_reads_the_runs_and_tests_against_imp(made, tmp_path, monkeypatch):
    work, counts = made
    monkeypatch.setattr(md, "digits_test_size", lambda: N_TEST)
    S = md.report(work, str(tmp_path / "out"))
    assert S["seeds"] == list(SEEDS) and S["methods"] == list(md.METHODS)
    k = str(md.LEVELS[0])
    assert S["correct"]["snip"][k] == [counts[("snip", s, md.LEVELS[0])] for s in SEEDS]
    assert S["correct"]["imp"][k] == [counts[("imp", s)][md.LEVELS[0]] for s in SEEDS]
    assert S["correct"]["energy"][k] == [counts[("energy", s, md.LEVELS[0])] for s in SEEDS]  # the last entry
    assert S["synops"]["energy"][k] == [999.0 + md.LEVELS[0]] * len(SEEDS)
    # cost: IMP's ticket of round k trained rounds 0..k; the first epoch counted as the run's median epoch
    secs = [1.0 + 0.1 * i for i in range(8 * md.IMP_ROUNDS - 1)]
    secs = [float(np.median([10.0] + secs))] + secs
    for level in md.LEVELS:
        assert S["epochs"]["imp"][str(level)] == [8 * (level + 1)] * len(SEEDS)
        assert S["seconds"]["imp"][str(level)] == pytest.approx([sum(secs[:8 * (level + 1)])] * len(SEEDS))
        # one-shot: 8 epochs (first at the median 2.0); static pruning adds the seed's fastest scoring pass
        assert S["seconds"]["rigl"][str(level)] == pytest.approx([16.0] * len(SEEDS))
        assert S["seconds"]["energy"][str(level)] == pytest.approx([16.0] * len(SEEDS))  # 9 s: finetune compiling
        assert S["seconds"]["snip"][str(level)] == pytest.approx([16.0 + 5.0 + md.LEVELS[0]] * len(SEEDS))
    # paired statistics against IMP, one Holm family over the whole table
    cells, ps = [], []
    for m in md.METHODS[1:]:
        for level in md.LEVELS:
            a = np.array(S["correct"][m][str(level)])
            b = np.array(S["correct"]["imp"][str(level)])
            ref = st.paired(a, b)
            row = next(r for r in S["paired"][m] if r["level"] == level)
            assert row["per_seed_images"] == (a - b).tolist()
            assert row["wilcoxon_p"] == ref["wilcoxon_p"]
            assert row["mean"] == pytest.approx(100 / N_TEST * (a - b).mean())
            cells.append(row)
            ps.append(ref["wilcoxon_p"])
    assert [r["wilcoxon_p_holm"] for r in cells] == pytest.approx(st.holm(ps).tolist())
    assert S["smallest_p"] == {"wilcoxon_two_sided": 2 / 2 ** 3, "tests": 3 * (len(md.METHODS) - 1),
                                  "smallest_holm": 1.0}
    # the planned comparisons apart from IMP's table (the budget variant against SNIP, Shi against it), their own
    # Holm family
    planned = [(a, b, level) for a, b in md.PLANNED for level in md.LEVELS]
    assert [(e["method"], e["against"], e["level"]) for e in S["planned"]] == planned
    ps = []
    for e in S["planned"]:
        level = str(e["level"])
        a, b = np.array(S["correct"][e["method"]][level]), np.array(S["correct"][e["against"]][level])
        assert e["per_seed_images"] == (a - b).tolist() and e["wilcoxon_p"] == st.paired(a, b)["wilcoxon_p"]
        ps.append(e["wilcoxon_p"])
    assert [e["wilcoxon_p_holm"] for e in S["planned"]] == pytest.approx(st.holm(ps).tolist())
    mean, lo, hi = st.t_interval(np.array(S["correct"]["rigl"][k]))
    assert S["mean"]["rigl"][k] == pytest.approx(100 * mean / N_TEST)
    assert S["ci95"]["rigl"][k] == pytest.approx([100 * lo / N_TEST, 100 * hi / N_TEST])
    for name in ("summary.json", "table.md", "accuracy_vs_sparsity.png", "accuracy_vs_synops.png",
                 "cost_to_ticket.png"):
        assert os.path.getsize(tmp_path / "out" / name) > 0
    # the statistics again from summary.json alone: the same table
    again = md.report_from_summary(str(tmp_path / "out" / "summary.json"), str(tmp_path / "again"))
    assert (tmp_path / "again" / "table.md").read_text() == (tmp_path / "out" / "table.md").read_text()
    assert again["paired"] == json.loads((tmp_path / "out" / "summary.json").read_text())["paired"]


def test_a_method_missing_a_seed_is_left_out(made, tmp_path, monkeypatch):
    work, _ = made
    monkeypatch.setattr(md, "digits_test_size", lambda: N_TEST)
    os.rename(os.path.join(work, "seed_1", "energy_3"), os.path.join(work, "seed_1", "energy_3.away"))
    try:
        S = md.report(work, str(tmp_path / "out"))
    finally:
        os.rename(os.path.join(work, "seed_1", "energy_3.away"), os.path.join(work, "seed_1", "energy_3"))
    assert "energy" not in S["methods"] and "rigl" in S["methods"] and S["seeds"] == list(SEEDS)


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(3)
    points = [(float(x), float(y)) for x, y in zip(rng.integers(0, 20, 40), rng.integers(0, 20, 40))]
    front = md.pareto_front(points)
    expected = sorted({p for p in points if not any((q[0] <= p[0] and q[1] > p[1]) or (q[0] < p[0] and q[1] >= p[1])
                                                     for q in points)})
    assert sorted(set(front)) == expected


def test_shi_lambda_interpolates_log_log_between_the_grid_points():
    # SynOps = 1e3 * lambda^-0.5 exactly on the grid: log-log linear, so the interpolation is exact in between
    grid = [{"lambda": lam, "synops": 1e3 * lam ** -0.5} for lam in (1e-8, 1e-7, 1e-6, 1e-5)]
    for lam in (3e-8, 2e-7, 5e-6):
        assert md.shi_lambda_for(1e3 * lam ** -0.5, grid) == pytest.approx(lam, rel=1e-9)
    assert md.shi_lambda_for(1e9, grid) == 1e-8 and md.shi_lambda_for(1.0, grid) == 1e-5  # the ends outside
    # a grid point out of order (more SynOps at a larger lambda) is held at the running minimum: 2e-6 counts as
    # 1e6 SynOps (1e-6's), and a target below that is interpolated between 2e-6 and 1e-5
    noisy = grid + [{"lambda": 2e-6, "synops": 1e7}]
    target, hi, lo = 1e3 * 3e-6 ** -0.5, 1e6, 1e3 * 1e-5 ** -0.5
    frac = (np.log(hi) - np.log(target)) / (np.log(hi) - np.log(lo))
    expected = np.exp(np.log(2e-6) + frac * (np.log(1e-5) - np.log(2e-6)))
    assert md.shi_lambda_for(target, noisy) == pytest.approx(expected, rel=1e-9)


def test_epochs_of_each_schedule():
    for k in md.LEVELS:
        assert md.epochs_of("snip", k, "base") == md.EPOCHS
        assert md.epochs_of("snip", k, "matched") == md.EPOCHS * (k + 1)  # IMP's rounds 0..k
        assert md.epochs_of("shi", k, "base") == md.EPOCHS + md.FINETUNE_EPOCHS  # --epochs 8 and the finetune
        assert md.epochs_of("energy", k, "matched") == md.EPOCHS * (k + 1)  # search and finetune together
        assert md.run_name("rigl", k, "matched") == f"rigl_{k}_matched" and md.run_name("imp", k, "matched") == "imp"
