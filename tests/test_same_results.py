"""benchmarks/same_results.py on hand-made run folders (no training): what it counts as identical, as a key only
one side writes and as a changed value or array, which commands a tree lacks, and how a difference is explained."""
import json
import os

import numpy as np

from benchmarks import same_results as sr


def write_run(root, name, results, metrics, arrays, info):
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "checkpoints"), exist_ok=True)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in metrics)
    meta = {"format": 1, "config": {"epochs": 2}, "info": info}
    np.savez(os.path.join(d, "ticket.npz"), __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    with open(os.path.join(d, "checkpoints", "results.json"), "w") as f:  # never read: checkpoints are skipped
        json.dump({"random": float(np.random.rand())}, f)


def test_compare_sorts_identical_added_keys_and_changed_values(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    mask = np.array([1, 0, 1, 1], np.float32)
    before, after = str(tmp_path / "a"), str(tmp_path / "b")
    # dense: the same values, the after side adds a key and its timings differ (left out)
    write_run(before, "dense", {"acc": 0.5, "seconds": 3.0}, [{"epoch": 1, "loss": 1.0, "seconds": 9}],
              {"params/w": w}, {"acc": 0.5})
    write_run(after, "dense", {"acc": 0.5, "seconds": 4.0, "signature": {"seed": 0}},
              [{"epoch": 1, "loss": 1.0, "seconds": 1}], {"params/w": w.copy()}, {"acc": 0.5})
    # energy: one value and one mask element changed, one weight changed by 0.25
    w2 = w.copy()
    w2[1, 2] += 0.25
    mask2 = mask.copy()
    mask2[3] = 0
    write_run(before, "energy", {"runs": [{"acc": 0.5, "lambda": 0.1}]}, [{"epoch": 1}],
              {"params/w": w, "masks/w": mask}, {"acc": 0.5})
    write_run(after, "energy", {"runs": [{"acc": 0.5, "lambda": 0.01}]}, [{"epoch": 1}],
              {"params/w": w2, "masks/w": mask2}, {"acc": 0.5})
    os.makedirs(os.path.join(after, "shi"))
    with open(os.path.join(after, "shi", "results.json"), "w") as f:
        json.dump({"acc": 1.0}, f)

    out = sr.compare(before, after)
    by = {f["file"]: f for f in out["files"]}
    # per run folder: results.json, metrics.jsonl, ticket.npz:info, :config and one entry per array
    assert sorted(by) == sorted(["dense/results.json", "dense/metrics.jsonl", "dense/ticket.npz:info",
                                 "dense/ticket.npz:config", "dense/ticket.npz:params/w",
                                 "energy/results.json", "energy/metrics.jsonl", "energy/ticket.npz:info",
                                 "energy/ticket.npz:config", "energy/ticket.npz:params/w",
                                 "energy/ticket.npz:masks/w", "shi/results.json"])
    assert by["dense/results.json"]["status"] == "same_values_keys_differ"
    assert by["dense/results.json"]["keys_only_after"] == ["signature"]
    assert by["dense/metrics.jsonl"]["status"] == "identical"
    assert by["dense/ticket.npz:params/w"]["status"] == "identical"
    assert by["energy/results.json"]["values"] == [{"path": "runs/0/lambda", "before": 0.1, "after": 0.01}]
    assert by["energy/ticket.npz:params/w"]["array"] == {"elements_different": 1, "elements": 6,
                                                         "max_abs_difference": 0.25}
    assert by["energy/ticket.npz:masks/w"]["array"] == {"elements_different": 1, "elements": 4,
                                                        "max_abs_difference": 1.0, "kept_before": 3,
                                                        "kept_after": 2}
    assert by["shi/results.json"]["status"] == "only_after"
    assert out["counts"] == {"compared": 11, "identical": 7, "same_values_keys_differ": 1, "different": 3,
                             "only_before": 0, "only_after": 1}

    went = {"before": {"shi": {"status": "not_in_tree", "why": "train/shi.py is not in the before tree"}},
            "after": {"shi": {"status": "ran", "seconds": 1.0}}}
    commands = {name: {"command": "python train/x.py", "before": None, "after": None}
                for name in ("dense", "energy", "shi")}
    report = sr.summarise({"files": out["files"], "commands": commands},
                          {"files": {"energy/*.npz:*": "abc1234: the cut changed"},
                           "keys": {"signature": "def5678: the run's signature recorded"}}, went)
    assert report["counts"]["explained"] == 4 and report["counts"]["unexplained"] == 1  # results.json's lambda
    assert "explained" not in by["energy/results.json"]
    assert by["dense/results.json"]["explained"] == "def5678: the run's signature recorded"
    assert by["energy/ticket.npz:masks/w"]["explained"] == "abc1234: the cut changed"
    assert by["shi/results.json"]["explained"] == "train/shi.py is not in the before tree"
    assert {k: report["commands"]["energy"][k] for k in ("files", "identical", "different")} == \
        {"files": 6, "identical": 3, "different": 3}
    lines = sr.markdown({**report, "command": "c", "machine": "m", "before": "a", "after": "b", "schedule": "s"})
    assert "| **not explained** | 1 (1 different) | energy | energy/results.json: 1 values (runs/0/lambda: 0.1 → " \
           "0.01) |" in lines
    assert "| abc1234: the cut changed | 2 (2 different) | energy | energy/ticket.npz:masks/w: elements_different 1, " \
           "elements 4, max_abs_difference 1, kept_before 3, kept_after 2 |" in lines


def test_another_name_of_the_same_run(tmp_path, monkeypatch):
    w = np.ones(3, np.float32)
    write_run(str(tmp_path), "energy", {"acc": 0.5}, [{"epoch": 1}], {"params/w": w}, {"acc": 0.5})
    write_run(str(tmp_path), "energy_program", {"acc": 0.5}, [{"epoch": 1}], {"params/w": w}, {"acc": 0.5})
    write_run(str(tmp_path), "shi", {"acc": 0.5}, [{"epoch": 1}], {"params/w": w}, {"acc": 0.5})
    write_run(str(tmp_path), "shi_alias", {"acc": 0.5}, [{"epoch": 1}], {"params/w": w + 1}, {"acc": 0.5})
    checks = {c["run"]: c for c in sr.same_as(str(tmp_path))}
    assert checks["energy_program"]["identical"] == checks["energy_program"]["files"] == 5
    assert [f["file"] for f in checks["shi_alias"]["not_identical"]] == ["ticket.npz:params/w"]


def test_collapse():
    assert sr.collapse(["0/synops_per_image", "12/synops_per_image", "runs/3/efficiency/x", "platform"]) == \
        ["*/synops_per_image", "platform", "runs/*/efficiency/x"]


def test_json_values_alike():
    changed, only_a, only_b = sr.diff_values({"a": [1, 2.0, float("nan")], "b": True, "c": {"d": 1}},
                                             {"a": [1.0, 2, float("nan")], "b": 1, "e": 0})
    assert changed == [{"path": "b", "before": True, "after": 1}]
    assert only_a == ["c"] and only_b == ["e"]


def test_a_tree_without_the_program_or_the_flag(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "train").mkdir(parents=True)
    # a program that knows no --early-bird flag, as argparse says it; one that fails; one that runs
    (tree / "train" / "imp.py").write_text(
        "import sys\nif '--early-bird' in sys.argv:\n"
        "    sys.stderr.write('imp.py: error: unrecognized arguments: --early-bird\\n'); sys.exit(2)\n")
    (tree / "train" / "dense.py").write_text("import sys\nsys.stderr.write('NaN loss: lower --lr\\n'); sys.exit(1)\n")
    monkeypatch.setattr(sr, "COMMANDS", {"imp": ("train/imp.py",), "eb": ("train/imp.py", "--early-bird"),
                                         "reinit": ("train/imp.py", "--ticket", "{dense}"),
                                         "dense": ("train/dense.py",), "shi": ("train/shi.py",)})
    assert sr.side_argv("reinit", str(tree), "/runs") == ["train/imp.py", "--ticket", "/runs/dense", *sr.SCHEDULE,
                                                          "--workdir", "/runs/reinit", "--no-progress", "--no-plots"]
    went = sr.run_side(str(tree), str(tmp_path / "runs"), ["imp", "eb", "dense", "reinit", "shi"], "before")
    assert went["imp"]["status"] == "ran"
    assert went["eb"]["status"] == "flag_not_in_tree" and "--early-bird" in went["eb"]["why"]
    assert went["dense"] == {"status": "failed", "exit": 1, "why": "NaN loss: lower --lr",
                             "seconds": went["dense"]["seconds"]}
    assert went["reinit"]["status"] == "not_run"
    assert went["shi"] == {"status": "not_in_tree", "why": "train/shi.py is not in the before tree"}
