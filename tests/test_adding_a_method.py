"""docs/methods.md's "Adding a method", followed literally: its code block, run as it stands, adds a
method to the registry; the method then has flags, a signature, a config.json record and results like
every other, without a change to jsnn."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from jsnn.runs import registry
from jsnn.runs.outputs import Outputs
from jsnn.runs.workdir import run_signature
from jsnn.sparsity import masks as M
from jsnn.ticket import load_ticket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train"))  # the programs import their shared flags as `flags`

import flags  # noqa: E402


def section_code(title: str) -> list[str]:
    """The ```python blocks of the docs/methods.md section ``title``, in order."""
    text = (ROOT / "docs" / "methods.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def added():
    code = section_code("Adding a method")[0]
    namespace = {"__name__": "docs_methods_adding_a_method"}
    exec(compile(code, "docs/methods.md", "exec"), namespace)  # the block as the reader copies it
    yield namespace
    registry.METHODS.pop("random_mask", None)


def test_the_documented_method_runs_through_the_registry(added, digits_imp, tmp_path):
    _, config, _, trainer = digits_imp  # the session's small setup (digits' dense and IMP presets agree on it)
    entry = registry.get_method("random_mask")
    assert entry.options is added["RandomMaskOptions"] and entry.preset == "dense"
    # its flags come from its options: --density with the field's default and help
    by_dest = {a.dest: a for a in flags.method_parser("random_mask", None)._actions}
    assert by_dest["density"].default == 0.5 and "kept" in by_dest["density"].help
    args = flags.parse_args(flags.method_parser("random_mask", None), ["--density", "0.25", "-T", "2"],
                            method="random_mask")
    assert flags.method_settings(args, "random_mask")[1] == added["RandomMaskOptions"](density=0.25)
    with pytest.raises(ValueError, match="--density must lie in"):
        added["RandomMaskOptions"](density=0.0).resolve(config)

    options = added["RandomMaskOptions"](density=0.5)
    results = registry.run_method("random_mask", config, options, str(tmp_path), trainer=trainer,
                                  outputs=Outputs(plots=False, cost_report=False))
    assert results["method"] == "random_mask" and results["label"] == "random mask"
    [e] = results["runs"]
    assert e["epochs"] == config.epochs and e["test_accuracy"] > 0.1
    # the ticket: kept fraction of each layer near the density (binomial: within 5 standard deviations)
    masks = load_ticket(str(tmp_path / "ticket.npz")).variables.masks
    kept, total = M.count_kept(masks)
    assert abs(kept - 0.5 * total) <= 5 * np.sqrt(0.25 * total) and e["sparsity"] == pytest.approx(1 - kept / total)
    # the one rule for signature and record: the options' field beside the config's
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["signature"] == run_signature("random_mask", config, options)
    assert written["signature"]["density"] == 0.5 and written["random_mask"] == {"density": 0.5}
    assert results["signature"] == written["signature"]
