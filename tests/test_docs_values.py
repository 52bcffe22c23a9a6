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
    r = _check(tmp_path)
    assert r.returncode == 1 and "docs/theory.md: links outside the repository" in r.stderr, r.stderr
