"""Numbers in the prose of docs/ pages are read from their results files (``<!-- v SOURCE: PATH | SPEC -->``
marks, docs/build.py): ``--check`` fails on a number changed by hand, and on a link out of the repository."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _copy_tree(tmp_path):
    for name in ("docs", "benchmarks/results"):
        shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")


def _check(tmp_path):
    return subprocess.run([sys.executable, str(tmp_path / "docs" / "build.py"), "--check"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_a_prose_number_changed_by_hand_fails_the_check_and_the_build_restores_it(tmp_path):
    _copy_tree(tmp_path)
    page = tmp_path / "docs" / "lottery.md"
    text = page.read_text()
    mark = "<!-- v lottery: mean/mag/5 | .1f -->"
    assert mark + "42.8<!-- /v -->" in text  # IMP's mean at 98.98 %, summary.json's mean.mag[5] = 42.847...
    page.write_text(text.replace(mark + "42.8", mark + "42.9", 1))
    r = _check(tmp_path)
    assert r.returncode == 1
    assert "docs/lottery.md" in r.stderr and "'42.9'" in r.stderr and "'42.8'" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, str(tmp_path / "docs" / "build.py")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert page.read_text() == text


def test_every_marked_number_reads_its_file():
    # the build's reader against a hand computation from the lottery summary
    import json

    sys.path.insert(0, str(ROOT / "docs"))
    import build

    with open(ROOT / "docs" / "results" / "lottery_digits" / "summary.json") as f:
        d = json.load(f)
    t = d["time_to_ticket"]
    saving = 1 - t["eb"]["epochs_mean"][6] / t["mag"]["epochs_mean"][6]
    assert build.value("lottery", "1 - v('time_to_ticket/eb/epochs_mean/6') / v('time_to_ticket/mag/epochs_mean/6')",
                       "%.0f") == f"{100 * saving:.0f}"
    assert build.value("lottery", "paired/sf1 - mag/3/mean", "+.1f") == \
        f"{d['paired']['sf1 - mag'][3]['mean']:+.1f}".replace("-", "−")
    assert build.value("lottery", "paired/sf1 - mag/3/behind", "int") == str(d["paired"]["sf1 - mag"][3]["behind"])


def test_a_link_out_of_the_repository_fails_the_check(tmp_path):
    _copy_tree(tmp_path)
    page = tmp_path / "docs" / "theory.md"
    page.write_text(page.read_text() + "\nSee [the notes](../../shared/notes/sparse-training.md).\n")
    other = tmp_path / "docs" / "reproduce.md"  # named without a link: the reader has no such file either
    other.write_text(other.read_text() + "\nThe numbers as `shared/SPEC.md` records them.\n")
    r = _check(tmp_path)
    assert r.returncode == 1 and "docs/theory.md: links outside the repository" in r.stderr, r.stderr
    assert "docs/reproduce.md: links outside the repository: shared/SPEC.md" in r.stderr, r.stderr


def test_a_changed_number_on_the_comparison_and_theory_pages_fails_the_check(tmp_path):
    # one marked number changed by hand on each page: the check names both pages and both numbers
    import re

    _copy_tree(tmp_path)
    changed = {}
    for name in ("comparison.md", "theory.md"):
        page = tmp_path / "docs" / name
        text = page.read_text()
        m = re.search(r"(<!-- v [^>]*-->)(?P<number>[−+]?\d[\d.,]*)(<!-- /v -->)", text)
        assert m, f"{name} has no marked number"
        number = m.group("number")
        wrong = number[:-1] + ("1" if number[-1] != "1" else "2")
        page.write_text(text[:m.start("number")] + wrong + text[m.end("number"):])
        changed[name] = (number, wrong)
    r = _check(tmp_path)
    assert r.returncode == 1
    for name, (number, wrong) in changed.items():
        assert any(f"docs/{name}: the text says {wrong!r}" in line and repr(number) in line
                   for line in r.stderr.splitlines()), (name, r.stderr)


def test_theory_values_read_their_files():
    # the build's reader against the theory results read here by hand
    import json

    sys.path.insert(0, str(ROOT / "docs"))
    import build

    results = ROOT / "docs" / "results" / "theory"
    crisis = json.loads((results / "crisis.json").read_text())
    flips = json.loads((results / "flips.json").read_text())
    slth = json.loads((results / "slth.json").read_text())
    assert build.value("crisis", "test_accuracy", "%.1f") == f"{100 * crisis['test_accuracy']:.1f}"
    cells = [r["measured"][k]["respects_mass_bound"] for L in crisis["layers"].values() for r in L["per_eps"]
             for k in r["measured"]]
    assert build.value("crisis", "sum(1 for L in v('layers') for r in v('layers/' + L + '/per_eps') "
                       "for k in r['measured'] if r['measured'][k]['respects_mass_bound'])", "int") == str(sum(cells))
    conv2 = flips["layers"]["conv2"]["by_group"]["1"]
    assert build.value("flips", "layers/conv2/by_group/1/spearman/sf", ".2f") == f"{conv2['spearman']['sf']:.2f}"
    p = min(q["masks_found_p"] for row in slth["eps"].values() for q in row["points"])
    assert build.value("slth", "min(q['masks_found_p'] for e in v('eps') for q in v('eps/' + e + '/points'))",
                       ".2g") == f"{p:.2g}"
